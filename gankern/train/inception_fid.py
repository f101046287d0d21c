"""Inception FID at snapshots (``--metrics fid``, S2A's fid50k_full with ``train.metric_samples`` generated images):
pytorch-fid's Inception-v3 (gankern.metrics, weights found locally, never downloaded) on every real image of the
data set and on G_ema's samples. The real statistics are computed once per run and kept in the run directory
(``fid-reals.npz``, pytorch-fid's format), so a resumed run reads them back."""
from __future__ import annotations

import os

import torch

from ..metrics.extract import compute_stats
from ..metrics.inception import load_fid_inception
from ..metrics.stats import FIDReference, load_stats, save_stats

REALS = "fid-reals.npz"
CHUNK = 256                      # generated images per pass (the Inception sees them in batches of 64)


def image_data(spec: str) -> bool:
    """Whether the data set ``spec`` is a set of images that G's samples imitate (not 2-D points, pairs or one
    image): what Inception FID compares against."""
    from ..data.paired import is_pair_spec
    from ..data.single import is_single_spec
    return spec != "ring" and not is_pair_spec(spec) and not is_single_spec(spec)


def _unit_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images (..., C, H, W) in [-1, 1] with C 1 or 3 -> float in [0, 1] with 3 channels (gray repeated)."""
    x = ((x.float() + 1) / 2).clamp(0, 1)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if x.shape[-3] == 1 else x


class _UnitImages(torch.utils.data.Dataset):
    """The images of a training data set (items (image in [-1, 1], label)) as the Inception takes them."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _unit_rgb(self.dataset[i][0])


class InceptionFID:
    """``fid(sample)`` -> FID of ``n`` images of ``sample(n, chunk_index)`` ((n, C, R, R) in [-1, 1]) against the
    data set's statistics, computed on first use and cached in ``run_dir`` (written atomically)."""

    def __init__(self, run_dir: str, dataset, device: torch.device):
        if dataset.channels not in (1, 3):
            raise ValueError(f"--metrics fid: the Inception takes 1- or 3-channel images, the data has "
                             f"{dataset.channels}")
        self.model, self.device = load_fid_inception(device=device), device
        path = os.path.join(run_dir, REALS)
        if not os.path.exists(path):
            mu, sigma = compute_stats(_UnitImages(dataset), self.model, batch_size=64, device=device).mean_cov()
            tmp = f"{path}.tmp{os.getpid()}.npz"
            save_stats(tmp, mu, sigma)
            os.replace(tmp, path)
        self.reference = FIDReference(*load_stats(path), device=device)

    def __call__(self, sample, n: int) -> float:
        stats = None
        for i in range(0, n, CHUNK):
            s = compute_stats(_unit_rgb(sample(min(CHUNK, n - i), i // CHUNK)), self.model, batch_size=64,
                              device=self.device)
            stats = s if stats is None else stats.merge(s)
        return self.reference(*stats.mean_cov())
