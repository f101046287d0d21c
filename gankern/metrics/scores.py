"""KID (StyleGAN2-ADA's and torch-fidelity's unbiased MMD^2, cubic polynomial kernel) and the Inception Score.

KID backends: ``ref`` (eager float64: three m x m kernel matrices per subset) and ``triton`` (gankern/kernels/fid.py:
rows gathered in the kernel, the kernel matrices never stored, float64 sums). Both draw the same subsets for a
seed, so they agree to rounding. Default on CUDA: triton (fewer bytes: no m x m matrices; not measured on a GPU
yet, bench/bench_fid.py measures it); CPU: ref.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _backend, _validate

__all__ = ["kid", "kid_ref", "inception_score"]

_KID_PREFERENCE = ("triton",)
_KID_DTYPES = {"triton": (torch.float32, torch.float64)}


def _features(name: str, x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    _validate.tensor(name, x, ndim=2, dtypes=(torch.float32, torch.float64))
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    return x


def _subsets(n_real: int, n_fake: int, m: int, num_subsets: int, seed: int | None, device) -> tuple:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    ix = torch.stack([torch.randperm(n_fake, generator=g)[:m] for _ in range(num_subsets)])  # [S, m] fake rows
    iy = torch.stack([torch.randperm(n_real, generator=g)[:m] for _ in range(num_subsets)])  # [S, m] real rows
    return ix.to(device), iy.to(device)


def _kid_from_sums(sxx, syy, sxy, m: int) -> float:
    t = (sxx + syy) / (m - 1) - sxy * (2.0 / m)  # [S]
    return float(t.mean() / m)


def _sums_ref(x, y, ix, iy):
    d = x.shape[1]
    sxx, syy, sxy = [], [], []
    for s in range(ix.shape[0]):
        a = x[ix[s]].to(torch.float64)                    # [m, d]
        b = y[iy[s]].to(torch.float64)
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        sxx.append(kxx.sum() - kxx.diagonal().sum())
        syy.append(kyy.sum() - kyy.diagonal().sum())
        sxy.append(((a @ b.T / d + 1) ** 3).sum())
    return torch.stack(sxx), torch.stack(syy), torch.stack(sxy)


def _sums_triton(x, y, ix, iy):
    from ..kernels import fid as K
    return (K.kid_kernel_sums(x, x, ix, ix, True), K.kid_kernel_sums(y, y, iy, iy, True),
            K.kid_kernel_sums(x, y, ix, iy, False))


_KID_SUMS = {"ref": _sums_ref, "triton": _sums_triton}


def kid(feats_real, feats_fake, num_subsets: int = 100, max_subset_size: int = 1000, *,
        seed: int | None = 0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 with k(x, y) = (x . y / d + 1)^3, averaged over subsets.

    Same estimator as StyleGAN2-ADA's ``compute_kid`` (m = min(n_real, n_fake, max_subset_size) rows of each set per
    subset, drawn without replacement), in float64.

    Args:
        feats_real: (n_real, d), feats_fake: (n_fake, d) float32/float64 (tensors or numpy arrays), one device.
        num_subsets, max_subset_size: positive ints.
        seed: seeds the subset draws (None: fresh randomness).
    Cost: 3 * num_subsets * 2 m^2 d FLOPs.
    """
    y = _features("feats_real", feats_real)
    x = _features("feats_fake", feats_fake)
    _validate.same_device(feats_real=y, feats_fake=x)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feats_real has {y.shape[1]} features per row but feats_fake has {x.shape[1]}")
    _validate.positive_int("num_subsets", num_subsets)
    _validate.positive_int("max_subset_size", max_subset_size)
    m = min(x.shape[0], y.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"max_subset_size must be at least 2, got {max_subset_size}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    backend = _backend.select(x.device, dtype, _KID_PREFERENCE, _KID_DTYPES)
    if backend not in _KID_SUMS:
        raise _backend.BackendUnavailable(f"gankern backend {backend!r} was asked for but kid has no {backend} "
                                          f"kernels (it has {', '.join(_KID_SUMS)})")
    ix, iy = _subsets(y.shape[0], x.shape[0], m, num_subsets, seed, x.device)
    return _kid_from_sums(*_KID_SUMS[backend](x, y, ix, iy), m)


def kid_ref(feats_real, feats_fake, num_subsets: int = 100, max_subset_size: int = 1000, *,
            seed: int | None = 0) -> float:
    """Eager float64 twin of :func:`kid` (same subsets for the same seed)."""
    with _backend.use_backend("ref"):
        return kid(feats_real, feats_fake, num_subsets, max_subset_size, seed=seed)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score from classifier logits: exp(E_x KL(p(y|x) || p(y))) per split; (mean, std) over splits.

    Args:
        logits: (n, num_classes) float (tensor or numpy); softmax is taken here, in float64.
        splits: positive int <= n; the rows are cut into ``splits`` contiguous parts (as in the original IS code
            and torch-fidelity); std is the population std (numpy's default) over the parts.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    _validate.tensor("logits", logits, ndim=2)
    _validate.positive_int("splits", splits)
    n = logits.shape[0]
    if splits > n:
        raise ValueError(f"splits ({splits}) must not exceed the number of rows ({n})")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits has non-finite values (NaN or inf)")
    logp = torch.log_softmax(logits.to(torch.float64), dim=1)       # [n, C]
    scores = []
    for part in torch.tensor_split(logp, splits):
        p = part.exp()
        logpy = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # log of the mean of p over the part
        kl = (p * (part - logpy)).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))
