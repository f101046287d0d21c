"""The 2-D toy data set of the unrolled GAN paper (Metz et al. 2017): a mixture of 8 Gaussians (std 0.02) evenly
spaced on a circle of radius 2, where mode collapse is visible and measurable (:func:`ring_metrics`)."""
from __future__ import annotations

import math

import torch

from .datasets import ArrayDataset

MODES, RADIUS, STD = 8, 2.0, 0.02


def ring_centers(modes: int = MODES, radius: float = RADIUS) -> torch.Tensor:
    """(modes, 2) centres of the mixture."""
    a = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([a.cos(), a.sin()], 1)).float()


def ring(n: int = 100_000, seed: int = 0) -> ArrayDataset:
    """n points of the ring as 'images' (n, 1, 1, 2) (x, y; unlabelled), drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(MODES, (n,), generator=g)
    x = ring_centers()[idx] + STD * torch.randn(n, 2, generator=g)
    ds = ArrayDataset(x.view(n, 1, 1, 2), None, "ring")
    ds.summary = f"data: ring: {n} 2-D points, {MODES} Gaussians (std {STD}) on a circle of radius {RADIUS}"
    return ds


def ring_metrics(points: torch.Tensor, min_count: int = 0) -> dict[str, float]:
    """Points (N, 2) (or (N, 1, 1, 2)) -> ``hq``: fraction within 3 std of a mode (high quality), ``modes``: modes
    with at least ``min_count`` (default 1% of N) high-quality points (VEEGAN's and the unrolled paper's measures),
    and ``dist``: the mean distance to the nearest mode (moves long before the first points reach 3 std)."""
    p = points.detach().float().reshape(-1, 2).cpu()
    d, nearest = torch.cdist(p, ring_centers()).min(1)
    good = d < 3 * STD
    counts = torch.bincount(nearest[good], minlength=MODES)
    need = min_count or max(1, len(p) // 100)
    return {"hq": good.float().mean().item(), "modes": int((counts >= need).sum()), "dist": d.mean().item()}
