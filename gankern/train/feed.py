"""The data and latents of each training step, fixed by (seed, step, tag): the same on every rank count and after a
resume. Drawn for the *global* batch, then sliced to this rank's rows (the trainer slices per accumulation round)."""
from __future__ import annotations

import torch

from ..data import InfiniteLoader
from .dist import Dist, derive_seed


class Feed:
    """``real(i)``: the step's i-th real batch (images, labels or None), read on first use, so a step reads
    max(phase repeats) batches; ``latents(step, tag)``: (z, labels or None) of this rank; ``position``: for resume."""

    def __init__(self, dataset, train, dist: Dist, z_dim: int, num_classes: int, start: int = 0):
        self.t, self.dist, self.z_dim, self.num_classes = train, dist, z_dim, num_classes
        self.loader = InfiniteLoader(dataset, train.batch, dist.rank, dist.world, train.seed, start, dist.device,
                                     train.workers, train.mirror)
        self.reals: list = []

    @property
    def position(self) -> int:
        return self.loader.position

    def next_step(self) -> None:
        self.reals = []

    def real(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        while len(self.reals) <= i:
            real, c = next(self.loader)
            self.reals.append((real, c if self.num_classes else None))
        return self.reals[i]

    def latents(self, step: int, tag: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (B / world, z_dim) and labels (B / world,) or None (unconditional)."""
        t, b, r = self.t, self.t.batch // self.dist.world, self.dist.rank
        g = torch.Generator().manual_seed(derive_seed(t.seed, step, tag))
        z = torch.randn(t.batch, self.z_dim, generator=g)
        y = torch.randint(0, self.num_classes, (t.batch,), generator=g) if self.num_classes else None
        return tuple(None if v is None else v[r * b:(r + 1) * b].to(self.dist.device) for v in (z, y))
