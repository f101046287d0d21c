"""An infinite, resumable, DDP-sharded batch loader.

The index stream is the concatenation of permutations perm(seed + epoch); global batch k is stream positions
offset + [k B, (k + 1) B) and rank r takes its contiguous slice of B / world. Everything (order, flips) is a function
of (seed, offset, k), so restarting at batch k (resume) or splitting over ranks (DDP) sees the same images.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils.data import DataLoader


def flip(x: torch.Tensor, coins: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the images x (N, C, H, W) where coins (N,) bool is True."""
    return torch.where(coins[:, None, None, None].to(x.device), x.flip(-1), x)


class _Batches:
    """Iterable of rank-local index lists for global batches start, start + 1, ... (a DataLoader batch_sampler).

    Holds its loader weakly: a cycle loader -> DataLoader iterator -> sampler -> loader would leave the worker
    shutdown to the garbage collector, which tears the queues down first (10 s of join timeouts per loader)."""

    def __init__(self, owner: "InfiniteLoader", start: int):
        self.owner, self.start = weakref.ref(owner), start

    def __iter__(self):
        k = self.start
        while (owner := self.owner()) is not None:
            idx = owner.indices(k).tolist()
            del owner                              # no strong reference while suspended
            yield idx
            k += 1


class InfiniteLoader:
    """``next(loader)`` -> (images (B / world, C, R, R) on ``device``, labels (B / world,)), batch after batch.

    Args:
        dataset: an ArrayDataset (sliced in memory) or any map-style Dataset of (image, label) (DataLoader workers).
        global_batch: B, summed over all ranks; must divide by world.
        start: the global batch index to begin at (``.position`` of a previous loader, for resume).
        offset: stream positions skipped before batch 0 (a loader continuing a stream read at another batch size).
        mirror: random horizontal flips (coins drawn from (seed, k) too).
    """

    def __init__(self, dataset, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0, start: int = 0,
                 device: str | torch.device = "cpu", num_workers: int = 2, mirror: bool = False, offset: int = 0):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} does not divide over {world} ranks")
        self.ds, self.B, self.rank, self.world, self.seed = dataset, global_batch, rank, world, seed
        self.device, self.mirror, self.position, self.offset = torch.device(device), mirror, start, offset
        self._perms: dict[int, torch.Tensor] = {}
        self._iter = None
        if not hasattr(dataset, "batch"):
            pin = self.device.type == "cuda"
            dl = DataLoader(dataset, batch_sampler=_Batches(self, start), num_workers=num_workers, pin_memory=pin,
                            persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)
            self._iter = iter(dl)

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(len(self.ds), generator=g)
        return self._perms[epoch]

    def indices(self, k: int) -> torch.Tensor:
        """Data set indices (B / world,) of this rank's part of global batch k."""
        b = self.B // self.world
        n = len(self.ds)
        pos = self.offset + torch.arange(k * self.B + self.rank * b, k * self.B + (self.rank + 1) * b)
        epochs, offs = pos // n, pos % n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self._perm(e)[offs[m]]
        return out

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.position
        if self._iter is None:
            x, y = self.ds.batch(self.indices(k))
        else:
            x, y = next(self._iter)
        if self.mirror:
            g = torch.Generator().manual_seed(self.seed * 7919 + k)
            b = self.B // self.world
            coins = (torch.rand(self.B, generator=g) < 0.5)[self.rank * b:(self.rank + 1) * b]
            x = flip(x, coins)
        self.position = k + 1
        nb = self.device.type == "cuda"
        return x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)
