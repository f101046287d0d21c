"""Streaming feature statistics and the Frechet distance.

``FeatureStats`` keeps, in float64 on the features' device, the count n, the mean and the centered second moment
M2 = sum_i (x_i - mean)(x_i - mean)^T of every row seen. Each ``update`` centers its chunk on the chunk's own mean
(one float64 Gram matrix of the centered chunk, upper blocks only: ``_add_gram_``) and merges (Chan, Golub & LeVeque):

    M2 = M2_a + M2_b + delta delta^T * n_a n_b / n,   delta = mean_b - mean_a.

Nothing is a one-pass sum of outer products, so a mean that is large next to the spread costs no digits (the
one-pass formula sum(x x^T) - n mean mean^T of torchmetrics does). Cost per chunk of n_b rows: about (5/8) n_b d^2
multiply-adds for d = 2048 (the upper blocks; a full GEMM is n_b d^2) + O(n_b d) for the cast and centering + O(d^2)
for the merge. The bar of issue 7 is one float64 GEMM of all the features (GPU.md: 9.9 ms for 50k x 2048 on the
H100); the floor is the syrk's n d^2 FLOPs at the FP64 rate. Not measured on a GPU yet (bench/bench_fid.py).
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch

from .. import _validate
from ..ops import fid as _fid

__all__ = ["FeatureStats", "FIDReference", "frechet_distance", "load_stats", "save_stats"]


class FeatureStats:
    """Streaming mean and covariance of feature rows, float64 on the device, mergeable across chunks and ranks.

    Example::

        stats = FeatureStats()
        for x in loader:
            stats.update(extractor(x))          # (n, d) features, any float dtype
        mu, sigma = stats.mean_cov()           # (d,), (d, d) float64: feats.mean(0), numpy.cov(feats, rowvar=False)
    """

    def __init__(self, dim: int | None = None, device: torch.device | str | None = None):
        self.n = 0
        self.mean: torch.Tensor | None = None  # [d] float64
        self.m2: torch.Tensor | None = None    # [d, d] float64, centered second moment
        self.dim = dim
        self.device = None if device is None else torch.device(device)

    def __repr__(self) -> str:
        return f"FeatureStats(n={self.n}, dim={self.dim}, device={self.device})"

    def _init(self, d: int, device: torch.device) -> None:
        self.dim, self.device = d, device
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(d, d, dtype=torch.float64, device=device)

    def _merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta, alpha=n_b / n)
        self.m2.add_(m2_b)
        self.m2.addr_(delta, delta, alpha=n_a * n_b / n)
        self.n = n

    @torch.no_grad()
    def update(self, feats: torch.Tensor) -> "FeatureStats":
        """Add the rows of ``feats`` (n, d), any float dtype; no host sync."""
        _validate.tensor("feats", feats, ndim=2)
        if self.dim is not None and feats.shape[1] != self.dim:
            raise ValueError(f"feats has {feats.shape[1]} features per row but this FeatureStats holds {self.dim}")
        if self.device is not None and self.mean is not None and feats.device != self.device:
            raise ValueError(f"feats is on {feats.device} but this FeatureStats accumulates on {self.device}")
        if self.mean is None:
            self._init(feats.shape[1], self.device if self.device is not None else feats.device)
        n_b = feats.shape[0]
        if n_b == 0:
            return self
        x = feats.to(device=self.device, dtype=torch.float64)
        mean_b = x.mean(0)
        xc = x - mean_b                                   # [n_b, d]
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta, alpha=n_b / n)
        _add_gram_(self.m2, xc)                           # M2 += xc^T xc (upper blocks + mirror)
        self.m2.addr_(delta, delta, alpha=n_a * n_b / n)
        self.n = n
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another FeatureStats' rows (same dim) into this one."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"other must be a FeatureStats, got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.mean is None:
            self._init(other.dim, self.device if self.device is not None else other.device)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-dimensional stats into {self.dim}-dimensional stats")
        self._merge(other.n, other.mean.to(self.device), other.m2.to(self.device))
        return self

    def all_reduce(self, group=None) -> "FeatureStats":
        """Merge the stats of every rank of ``torch.distributed`` (all ranks call it; all end with the total).

        Exact: with the global mean m, M2 = sum_r [M2_r + n_r (mean_r - m)(mean_r - m)^T]. Three all_reduces
        (counts, n_r mean_r, then the d x d corrected moments); a rank that saw no rows takes part with zeros.
        """
        import torch.distributed as dist
        if self.dim is None:
            raise ValueError("all_reduce needs the feature dimension: build FeatureStats(dim=d, device=...) on "
                             "ranks that may see no rows")
        if self.mean is None:
            self._init(self.dim, self.device if self.device is not None else torch.device("cpu"))
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.device)
        dist.all_reduce(n, group=group)
        total = int(n.item())
        if total == 0:
            return self
        mean = self.mean * self.n
        dist.all_reduce(mean, group=group)
        mean /= total
        delta = self.mean - mean
        m2 = self.m2 + torch.outer(delta, delta) * self.n
        dist.all_reduce(m2, group=group)
        self.n, self.mean, self.m2 = total, mean, m2
        return self

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu (d,), sigma (d, d)) in float64: the mean and numpy.cov(ddof=1) of every row seen (needs n >= 2)."""
        if self.n < 2:
            raise ValueError(f"the covariance needs at least 2 feature rows, got {self.n}")
        return self.mean.clone(), self.m2 / (self.n - 1)

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: Mapping) -> "FeatureStats":
        self.n = int(state["n"])
        self.mean, self.m2 = state["mean"].to(torch.float64), state["m2"].to(torch.float64)
        self.dim, self.device = self.mean.shape[0], self.mean.device
        return self


SYRK_BLOCK = 512


def _add_gram_(m2: torch.Tensor, xc: torch.Tensor) -> None:
    """m2 (d, d) += xc^T xc (xc (n, d)) computing only the diagonal and upper blocks of SYRK_BLOCK columns (torch
    has no syrk): for d = 2048, 10 GEMMs of 512 columns instead of the 16 of a full GEMM, 5/8 of the FLOPs; the
    lower blocks are copied from the upper ones."""
    d = xc.shape[1]
    if d <= SYRK_BLOCK:
        m2.addmm_(xc.T, xc)
        return
    edges = list(range(0, d, SYRK_BLOCK)) + [d]
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    for i, bi in enumerate(blocks):
        for bj in blocks[i:]:
            m2[bi, bj].addmm_(xc[:, bi].T, xc[:, bj])
    for i, bi in enumerate(blocks):
        for bj in blocks[i + 1:]:
            m2[bj, bi] = m2[bi, bj].T


def _as_tensor(name: str, x, ndim: int) -> torch.Tensor:
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        x = torch.as_tensor(np.asarray(x))
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = x.to(torch.float64)
    return _validate.tensor(name, x, ndim=ndim, dtypes=(torch.float64,))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, factor1: torch.Tensor | None = None,
                     method: str | None = None) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr sqrtm(sigma1 sigma2): pytorch-fid's
    ``calculate_frechet_distance``, computed in float64 by :func:`gankern.ops.fid.trace_sqrt_product`.

    Args:
        mu1, mu2: (d,) means; sigma1, sigma2: (d, d) covariances (torch tensors or numpy arrays, any float dtype).
        factor1: optional cached ``gankern.ops.fid.psd_factor(sigma1)`` (fixed reference stats).
        method: see :mod:`gankern.ops.fid`.
    """
    mu1, mu2 = _as_tensor("mu1", mu1, 1), _as_tensor("mu2", mu2, 1)
    sigma1, sigma2 = _as_tensor("sigma1", sigma1, 2), _as_tensor("sigma2", sigma2, 2)
    _validate.same_device(mu1=mu1, sigma1=sigma1, mu2=mu2, sigma2=sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 have different lengths: {tuple(mu1.shape)} vs {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if tuple(s.shape) != (d, d):
            raise ValueError(f"{name} has shape {tuple(s.shape)} but the means are {d}-dimensional: expected ({d}, {d})")
    for name, m in (("mu1", mu1), ("mu2", mu2)):
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"{name} has non-finite values (NaN or inf)")
    tr = _fid.trace_sqrt_product(sigma1, sigma2, factor1=factor1, method=method)
    diff = mu1 - mu2
    return float(diff.dot(diff) + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr)


class FIDReference:
    """Reference statistics with their PSD factor computed once, for FID evaluations during training.

    ``ref = FIDReference(mu, sigma, device="cuda")`` (or ``FIDReference.from_npz(path)``); ``ref(mu2, sigma2)`` ->
    float, the same value as ``frechet_distance(mu, sigma, mu2, sigma2)`` with one eigh fewer per call (with the
    ``eigh`` method: 2 GEMMs + 1 eigvalsh per call).
    """

    def __init__(self, mu, sigma, *, method: str | None = None, device: torch.device | str | None = None):
        mu, sigma = _as_tensor("mu", mu, 1), _as_tensor("sigma", sigma, 2)
        if device is not None:
            mu, sigma = mu.to(device), sigma.to(device)
        if tuple(sigma.shape) != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"sigma has shape {tuple(sigma.shape)} but mu is {mu.shape[0]}-dimensional")
        self.mu, self.sigma, self.method = mu, sigma, method
        self.factor = _fid.psd_factor(sigma, name="sigma")

    @classmethod
    def from_npz(cls, path, **kw) -> "FIDReference":
        return cls(*load_stats(path), **kw)

    def __call__(self, mu2, sigma2) -> float:
        mu2, sigma2 = _as_tensor("mu2", mu2, 1), _as_tensor("sigma2", sigma2, 2)
        return frechet_distance(self.mu, self.sigma, mu2.to(self.mu.device), sigma2.to(self.mu.device),
                                factor1=self.factor, method=self.method)


def save_stats(path: str | os.PathLike, mu, sigma) -> None:
    """Write pytorch-fid's .npz format: arrays ``mu`` (d,) and ``sigma`` (d, d), float64."""
    mu = mu.detach().cpu().numpy() if isinstance(mu, torch.Tensor) else np.asarray(mu)
    sigma = sigma.detach().cpu().numpy() if isinstance(sigma, torch.Tensor) else np.asarray(sigma)
    np.savez(path, mu=mu.astype(np.float64), sigma=sigma.astype(np.float64))


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read pytorch-fid's .npz stats (``mu``, ``sigma``); a clear error names a missing array or a bad shape."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("mu", "sigma") if k not in f.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing} (found {f.files}); FID stats files hold "
                                 "'mu' (d,) and 'sigma' (d, d)")
            mu, sigma = f["mu"], f["sigma"]
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read FID stats ({e})") from e
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu has shape {mu.shape} and sigma {sigma.shape}; expected (d,) and (d, d)")
    return mu, sigma
