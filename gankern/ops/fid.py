"""FID family: Tr sqrtm(S1 S2) of two covariances, accurately and without a general (non-symmetric) sqrtm.

For symmetric PSD S1, S2 with any factors S_i = L_i L_i^T, the eigenvalues of S1 S2 are those of the symmetric PSD
M = L1^T S2 L1 = A A^T with A = L1^T L2, so

    Tr sqrtm(S1 S2) = Tr sqrtm(M) = ||A||_* (sum of the singular values of A).

Methods (one row each in ``METHODS``; all in float64 whatever the input dtype). The factor of a covariance is
L = V diag(sqrt(w)) from ``eigh``, with eigenvalues below d * eps * max(w) (rounding noise of zero eigenvalues) set
to zero, so singular covariances (fewer samples than dimensions) are exact too.

- ``"svd"``: ``svdvals(L1^T L2).sum()``. Singular values carry an absolute error of about eps * ||A||: nothing is
  amplified by a square root. Cost: 2 eigh + 1 GEMM + 1 SVD (values only) of d x d; with the reference factor
  cached (``factor1=psd_factor(S1)``): 1 eigh + 1 GEMM + 1 SVD. The default on the CPU.
- ``"eigh"``: ``eigvalsh(L1^T S2 L1)``, then the sum of the square roots of the non-negative eigenvalues. Cost with
  the cached reference factor: 2 GEMMs + 1 eigvalsh (values only: no back-transformation), the cheapest exact route.
  A near-zero eigenvalue of M can add up to sqrt(eps * ||M||) ~ 1e-8 * ||A||; measured: 2.6e-12 relative to scipy
  on GPU.md's 2048-d covariances, a few 1e-8 absolute on FID = 0 at 128..512-d. The default on CUDA (cuSOLVER's SVD
  is far slower than its eigh).
- ``"newton_schulz"``: scaled coupled Newton-Schulz for sqrtm(M) on the symmetric PSD M = L1^T S2 L1 (stable, unlike
  Newton-Schulz on the non-symmetric S1 S2), float64, GEMMs only: 24 steps of 3 GEMMs (:func:`ns_schedule`: minimax
  cubic steps, then plain ones), converged for eigenvalues of M down to 1e-16 ||M||_F (1e-14 relative error measured
  on GPU.md's spectrum at 256/512-d). With the cached factor: 2 + 72 GEMMs of d^3, no solver. Opt-in until timed.

Cost and floor at d = 2048 on the H100: one float64 GEMM of 2048^3 is 17 GFLOP, about 0.26 ms at the 67 TFLOP/s FP64
tensor-core peak, so the Newton-Schulz route is about 74 GEMMs ~ 19 ms at peak (its floor), the eigh route is bound
by cuSOLVER's tridiagonalization (GPU.md: 54 ms for two eigh, uncached). Neither has been timed on a GPU yet:
bench/bench_fid.py times every method with its error against scipy. CPU, float64, 2048-d, 2 cores shared with
other jobs (``python bench/bench_fid.py --vs-scipy``): scipy.linalg.sqrtm 197 s; ``svd`` 13.9 s, ``eigh`` 9.5 s,
with the cached factor 3.1 s / 3.0 s (quieter, separate timings: scipy 20.7 s, svd 3.8 s, eigh 2.9 s, cached eigh
0.86 s); relative difference to scipy's trace 2.6e-13 (svd), 2.6e-12 (eigh).

``trace_sqrt_product_ref`` is the eager oracle (R = sqrtm(S1) by eigh, then eigvalsh(R S2 R)); tests also check
against scipy.linalg.sqrtm and against exact low-rank constructions.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from .. import _validate

__all__ = ["trace_sqrt_product", "trace_sqrt_product_ref", "psd_factor", "check_covariance", "METHODS",
           "default_method", "newton_schulz_trace_sqrt", "ns_schedule"]

_SYM_RTOL = 1e-5      # |S - S^T| <= _SYM_RTOL * max|S|: float32-saved statistics pass, a non-symmetric matrix fails
_NEG_RTOL = 1e-6      # eigenvalues below -_NEG_RTOL * max eigenvalue: not a covariance


def check_covariance(name: str, sigma, *, d: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Validate a covariance matrix: a finite, square, symmetric (d, d) floating tensor. Returns it."""
    _validate.tensor(name, sigma, ndim=2, dtypes=(torch.float32, torch.float64), device=device)
    if sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{name} must be square (d, d), got shape {tuple(sigma.shape)}")
    if d is not None and sigma.shape[0] != d:
        raise ValueError(f"{name} has shape {tuple(sigma.shape)} but the other statistics are {d}-dimensional")
    if sigma.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    scale = sigma.abs().max()
    asym = (sigma - sigma.T).abs().max()
    if bool(asym > _SYM_RTOL * scale):
        raise ValueError(f"{name} is not symmetric: max |{name} - {name}^T| = {float(asym):.3g} "
                         f"(max |{name}| = {float(scale):.3g}); a covariance matrix is symmetric")
    return sigma


def _sym64(sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.to(torch.float64)
    return (s + s.T) * 0.5


def _check_psd(name: str, w: torch.Tensor) -> None:
    wmax = w.abs().max()
    if bool(w.min() < -_NEG_RTOL * wmax):
        raise ValueError(f"{name} is not positive semidefinite: smallest eigenvalue {float(w.min()):.3g}, "
                         f"largest {float(w.max()):.3g}")


def psd_factor(sigma: torch.Tensor, *, name: str = "sigma", validate: bool = True) -> torch.Tensor:
    """A factor L (d, d) float64 with L @ L.T == sigma: V diag(sqrt(max(w, 0))) from eigh(sigma).

    Cache it for the reference statistics and pass it as ``factor1=`` to :func:`trace_sqrt_product` or
    ``gankern.metrics.frechet_distance`` to save one eigh per evaluation. Cost: one d x d eigh.
    """
    if validate:
        check_covariance(name, sigma)
    w, v = torch.linalg.eigh(_sym64(sigma))
    _check_psd(name, w)
    # eigenvalues below d * eps * max are rounding noise of zero eigenvalues (eigh's absolute error is about
    # eps * ||sigma||): their square roots (~1e-8 relative) would otherwise enter the factor as noise
    tiny = w.shape[0] * torch.finfo(torch.float64).eps * w[-1].clamp_min(0)
    return v * torch.where(w > tiny, w, 0).sqrt()  # [d, d]: column j = sqrt(w_j) v_j


def _tsp_svd(l1: torch.Tensor, s2: torch.Tensor, iters: int) -> torch.Tensor:
    l2 = psd_factor(s2, name="sigma2", validate=False)
    return torch.linalg.svdvals(l1.T @ l2).sum()


def _tsp_eigh(l1: torch.Tensor, s2: torch.Tensor, iters: int) -> torch.Tensor:
    m = l1.T @ _sym64(s2) @ l1
    w = torch.linalg.eigvalsh((m + m.T) * 0.5)
    return w.clamp_min(0).sqrt().sum()


NS_L0 = 1e-8   # the scaled schedule is built for sqrt(eigenvalue / ||M||_F) >= NS_L0 (eigenvalues down to 1e-16)


@functools.lru_cache(maxsize=8)
def ns_schedule(l0: float = NS_L0, tol: float = 1e-15) -> tuple[tuple[float, float], ...]:
    """Coefficients (a_k, b_k) of the scaled Newton-Schulz steps s <- s (a_k + b_k s^2) (host floats, no sync).

    While the interval [l, 1] of sqrt-eigenvalues is wide, each step is the minimax (equioscillating) odd cubic on
    [l, 1], rescaled so that its maximum is 1: small values grow 2.6x per step instead of plain Newton-Schulz's 1.5x.
    Near 1, plain Newton-Schulz (a, b) = (1.5, -0.5) finishes with cubic convergence. From l0 = 1e-8: 24 steps
    (plain Newton-Schulz needs about 45 for the same range).
    """
    out, lo = [], l0
    while len(out) < 200:
        if 1 - lo < 1e-3:
            out.append((1.5, -0.5))
            lo = lo * (3 - lo * lo) / 2
            if 1 - lo < tol:
                break
            continue
        q = 1 + lo + lo * lo
        a = 2 / ((lo + lo * lo) / q + (2 / 3) * math.sqrt(q / 3))   # p(lo) = p(1) = 1 - E, max p = 1 + E
        b = -a / q
        hi = (2 * a / 3) * math.sqrt(q / 3)
        out.append((a / hi, b / hi))
        lo = (a * lo + b * lo ** 3) / hi
    return tuple(out)


def newton_schulz_trace_sqrt(m: torch.Tensor, iters: int | None = None, l0: float = NS_L0) -> torch.Tensor:
    """Tr sqrtm(m) for symmetric PSD m (d, d) by the scaled coupled Newton-Schulz iteration (3 GEMMs a step).

    Y0 = m / c, Z0 = I (c = ||m||_F); T = a_k I + b_k Z Y; Y <- Y T; Z <- T Z (:func:`ns_schedule`); Y -> sqrtm(m / c).
    Y / Z stays m / c, and Y Z follows s -> s (a + b s^2) on the square roots of the eigenvalues of m / c.
    Args: iters: take only the first ``iters`` steps of the schedule (default: all of it).
    """
    c = torch.linalg.matrix_norm(m)
    sched = ns_schedule(l0)
    if iters is not None:
        sched = sched[:iters]
    d = m.shape[0]
    eye = torch.eye(d, dtype=m.dtype, device=m.device)
    y = m / c.clamp_min(torch.finfo(m.dtype).tiny)
    z = eye.clone()
    for a, b in sched:
        t = torch.addmm(eye, z, y, beta=a, alpha=b)   # a I + b Z Y: one GEMM with its epilogue
        y, z = y @ t, t @ z
    return torch.diagonal(y).sum() * c.sqrt()


def _tsp_ns(l1: torch.Tensor, s2: torch.Tensor, iters: int) -> torch.Tensor:
    m = l1.T @ _sym64(s2) @ l1
    return newton_schulz_trace_sqrt((m + m.T) * 0.5, iters)


# method -> (function(L1, S2, iters), default iters). Adding a method is one row.
METHODS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor], int | None]] = {
    "svd": (_tsp_svd, 0),
    "eigh": (_tsp_eigh, 0),
    "newton_schulz": (_tsp_ns, None),
}


def default_method(device: torch.device) -> str:
    """``svd`` on the CPU (most accurate, cheap there), ``eigh`` on CUDA (see the module docstring)."""
    return "eigh" if device.type == "cuda" else "svd"


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor, *, factor1: torch.Tensor | None = None,
                       method: str | None = None, iters: int | None = None) -> torch.Tensor:
    """Tr sqrtm(sigma1 @ sigma2) for symmetric PSD covariances, in float64.

    Args:
        sigma1, sigma2: (d, d) float32/float64, symmetric, finite, on one device (CPU or CUDA).
        factor1: optional (d, d) ``psd_factor(sigma1)``, cached across evaluations against fixed reference stats.
        method: ``"svd"``, ``"eigh"`` or ``"newton_schulz"`` (module docstring: cost and accuracy of each);
            default :func:`default_method` for the device.
        iters: Newton-Schulz steps (default: the whole scaled schedule, 24 steps; fewer truncates it).
    Returns:
        0-dim float64 tensor on the inputs' device (no host sync besides the input checks).
    Raises:
        TypeError/ValueError naming the argument for a non-tensor, wrong shape, mismatched sizes or devices,
        non-finite, non-symmetric or clearly indefinite input.
    """
    device = _validate.same_device(sigma1=sigma1, sigma2=sigma2) if isinstance(sigma1, torch.Tensor) and \
        isinstance(sigma2, torch.Tensor) else None
    check_covariance("sigma1", sigma1)
    check_covariance("sigma2", sigma2, d=sigma1.shape[0], device=device)
    method = default_method(sigma1.device) if method is None else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    fn, default_iters = METHODS[method]
    if iters is None:
        iters = default_iters
    elif method == "newton_schulz":
        _validate.positive_int("iters", iters)
    if factor1 is None:
        factor1 = psd_factor(sigma1, name="sigma1", validate=False)
    else:
        _validate.tensor("factor1", factor1, ndim=2, dtypes=(torch.float32, torch.float64), device=sigma1.device)
        if factor1.shape[0] != sigma1.shape[0]:
            raise ValueError(f"factor1 has shape {tuple(factor1.shape)}, expected ({sigma1.shape[0]}, k)")
        factor1 = factor1.to(torch.float64)
    return fn(factor1, sigma2, iters)


def trace_sqrt_product_ref(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Eager oracle: R = sqrtm(sigma1) (symmetric, by eigh), then sum sqrt(eigvalsh(R sigma2 R)), float64."""
    s1, s2 = _sym64(sigma1), _sym64(sigma2)
    w, v = torch.linalg.eigh(s1)
    r = (v * w.clamp_min(0).sqrt()) @ v.T
    m = r @ s2 @ r
    return torch.linalg.eigvalsh((m + m.T) * 0.5).clamp_min(0).sqrt().sum()
