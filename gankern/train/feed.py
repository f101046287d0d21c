"""The data and latents of each training step, fixed by (seed, step, tag): the same on every rank count and after a
resume. Drawn for the *global* batch, then sliced to this rank's rows (the trainer slices per accumulation round)."""
from __future__ import annotations

import torch

from ..data import InfiniteLoader
from .dist import Dist, derive_seed


class Feed:
    """``next_step(batch)``: a step of ``batch`` images (global; a recipe may change it between steps, as PGGAN does
    per resolution: the image stream goes on where it was); ``real(i)``: the step's i-th real batch (images, labels or
    None), read on first use, so a step reads max(phase repeats) batches; ``latents(step, tag)``: (z, labels or None)
    of this rank; ``position``: images of the stream read so far (for resume)."""

    def __init__(self, dataset, train, dist: Dist, z_dim: int, num_classes: int, start: int = 0):
        self.ds, self.t, self.dist, self.z_dim, self.num_classes = dataset, train, dist, z_dim, num_classes
        self.reals: list = []
        self._open(train.batch, start)

    def _open(self, batch: int, position: int) -> None:
        """A loader of ``batch`` images from stream position ``position`` (one split of it: the same after resume)."""
        t, d = self.t, self.dist
        self.batch = batch
        self.loader = InfiniteLoader(self.ds, batch, d.rank, d.world, t.seed, position // batch, d.device, t.workers,
                                     t.mirror, offset=position % batch)

    @property
    def position(self) -> int:
        return self.loader.offset + self.loader.position * self.batch

    def next_step(self, batch: int) -> None:
        if batch != self.batch:
            self._open(batch, self.position)
        self.reals = []

    def real(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        while len(self.reals) <= i:
            real, c = next(self.loader)
            self.reals.append((real, c if self.num_classes else None))
        return self.reals[i]

    def latents(self, step: int, tag: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (B / world, z_dim) and labels (B / world,) or None (unconditional), B the step's batch."""
        t, B, r = self.t, self.batch, self.dist.rank
        b = B // self.dist.world
        g = torch.Generator().manual_seed(derive_seed(t.seed, step, tag))
        z = torch.randn(B, self.z_dim, generator=g)
        y = torch.randint(0, self.num_classes, (B,), generator=g) if self.num_classes else None
        return tuple(None if v is None else v[r * b:(r + 1) * b].to(self.dist.device) for v in (z, y))
