"""Feature statistics of a set of images through an extractor (the FID Inception-v3 or any nn.Module)."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .images import ImageFiles
from .inception import as_unit_float
from .stats import FeatureStats, load_stats

__all__ = ["compute_stats", "stats_of_path"]


def _features(extractor: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = extractor(x)
    if isinstance(out, (tuple, list)):
        out = out[0]                      # FIDInceptionV3 returns (pool, logits)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the extractor must return a tensor (or a tuple whose first item is one), got "
                        f"{type(out).__name__}")
    return out.reshape(out.shape[0], -1)  # [N, d]


@torch.no_grad()
def compute_stats(images, extractor: nn.Module, *, batch_size: int = 50, device: torch.device | str | None = None,
                  num_workers: int = 0, progress: bool = False) -> FeatureStats:
    """FeatureStats of ``extractor(images)``.

    Args:
        images: a path (folder or zip, read by :class:`gankern.metrics.images.ImageFiles`), a Dataset of image
            tensors, or a tensor (N, 3, H, W): float in [0, 1] or uint8 in [0, 255] (divided by 255 here).
        extractor: any nn.Module mapping (B, 3, H, W) to (B, d) (or a tuple starting with it).
        device: where the extractor and the statistics run (default: the extractor's device).
    """
    if device is None:
        p = next(extractor.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    if isinstance(images, (str, os.PathLike)):
        images = ImageFiles(images)
    stats = FeatureStats(device=device)
    if isinstance(images, torch.Tensor):
        batches = images.split(batch_size)
        total = len(images)
    else:
        batches = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        total = len(images)
    with tqdm(total=total, desc="features", unit="img", disable=not progress) as bar:
        for x in batches:
            if isinstance(x, (tuple, list)):
                x = x[0]
            if x.dtype == torch.uint8:
                x = as_unit_float(x)
            stats.update(_features(extractor, x.to(device)))
            bar.update(len(x))
    return stats


def stats_of_path(path, extractor_factory, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) numpy float64 of an .npz stats file, or of a folder/zip of images through the extractor that
    ``extractor_factory()`` builds (only built when needed)."""
    if str(path).lower().endswith(".npz"):
        return load_stats(path)
    mu, sigma = compute_stats(path, extractor_factory(), **kw).mean_cov()
    return mu.cpu().numpy(), sigma.cpu().numpy()
