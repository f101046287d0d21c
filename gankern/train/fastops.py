"""The one place where models and trainers reach the fast op families (spectral norm, penalties, minibatch layers).

Each name here is gankern's public op when its family is installed (``gankern.nn.utils.spectral_norm``,
``gankern.ops.gradient_penalty``, ...). While a family has not landed yet, the name is bound to a short plain-PyTorch
implementation with the same meaning (the DESIGN.md definition), and ``SOURCES[name]`` says ``"local"`` so a run
records which one it used (the trainer writes ``SOURCES`` to the run directory and prints it). Nothing switches at
call time: the choice is made once, at import.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

SOURCES: dict[str, str] = {}


def _find(module: str, name: str):
    """``module.name`` if that imports, else None (the family is not there yet)."""
    try:
        obj = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return obj


def _pick(name: str, candidates: list[tuple[str, str]], local):
    for module, attr in candidates:
        obj = _find(module, attr)
        if obj is not None:
            SOURCES[name] = f"{module}.{attr}"
            return obj
    SOURCES[name] = "local"
    return local


# ----------------------------------------------------------------------------------------------- local twins

def _local_spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    return torch.nn.utils.parametrizations.spectral_norm(module, name, n_power_iterations, eps, dim)


def _local_gradient_penalty(D, real, fake, center=1.0, *d_args):
    """WGAN-GP: mean over samples of (||grad_x D(x_hat)||_2 - center)^2, x_hat = a real + (1 - a) fake, a ~ U[0, 1).

    real, fake: (N, ...); differentiable w.r.t. D's parameters.
    """
    a = torch.rand([real.shape[0]] + [1] * (real.ndim - 1), device=real.device, dtype=real.dtype)
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = D(x_hat, *d_args)
    (g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - center) ** 2).mean()


def _local_r1_penalty(d_out, x):
    """Mean over samples of ||grad_x sum(d_out)||^2; d_out (N, ...), x (N, ...) with requires_grad."""
    (g,) = torch.autograd.grad(d_out.sum(), x, create_graph=True)
    return g.pow(2).flatten(1).sum(1).mean()


def _local_minibatch_stddev(x, group_size=4, num_channels=1):
    """PGGAN/StyleGAN2 layer: x (N, C, H, W) -> (N, C + num_channels, H, W); N must divide by min(group_size, N).

    Groups are strided (sample i is in group i % (N // G)), as in StyleGAN2-ADA.
    """
    N, C, H, W = x.shape
    G = min(group_size, N)
    F_ = num_channels
    y = x.reshape(G, -1, F_, C // F_, H, W)            # [G, n, F, c, H, W]
    y = (y - y.mean(0)).square().mean(0)               # [n, F, c, H, W]
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])          # [n, F]
    y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W)     # [N, F, H, W]
    return torch.cat([x, y.to(x.dtype)], 1)


def _local_minibatch_discrimination(f, T, B, C):
    """Salimans 2016: f (N, A), T (A, B*C) -> o (N, B), o[i, b] = sum_{j != i} exp(-||M[i, b] - M[j, b]||_1)."""
    M = (f @ T).view(-1, B, C)                                        # [N, B, C]
    d = (M[:, None] - M[None, :]).abs().sum(-1)                       # [N, N, B]
    return torch.exp(-d).sum(1) - 1.0                                 # drop j == i (exp(0) = 1)


# ------------------------------------------------------------------------------------------------- the names

spectral_norm = _pick("spectral_norm", [("gankern.nn.utils", "spectral_norm")], _local_spectral_norm)
gradient_penalty = _pick("gradient_penalty", [("gankern.ops", "gradient_penalty"),
                                              ("gankern.ops.penalty", "gradient_penalty")], _local_gradient_penalty)
r1_penalty = _pick("r1_penalty", [("gankern.ops", "r1_penalty"), ("gankern.ops.penalty", "r1_penalty")],
                   _local_r1_penalty)
minibatch_stddev = _pick("minibatch_stddev", [("gankern.ops", "minibatch_stddev"),
                                              ("gankern.ops.minibatch", "minibatch_stddev")], _local_minibatch_stddev)
minibatch_discrimination = _pick("minibatch_discrimination",
                                 [("gankern.ops", "minibatch_discrimination"),
                                  ("gankern.ops.minibatch", "minibatch_discrimination")],
                                 _local_minibatch_discrimination)

__all__ = ["SOURCES", "spectral_norm", "gradient_penalty", "r1_penalty", "minibatch_stddev",
           "minibatch_discrimination"]

del F


# ------------------------------------------------------------------------------------------------- metrics

def _local_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) in float64 (pytorch-fid's meaning)."""
    import numpy as np
    import scipy.linalg
    mu1, mu2, s1, s2 = (np.asarray(a, np.float64) for a in (mu1, mu2, sigma1, sigma2))
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _local_kid(feats_real, feats_fake, num_subsets=100, max_subset_size=1000) -> float:
    """StyleGAN2-ADA's KID: unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over random subsets."""
    import numpy as np
    real, fake = np.asarray(feats_real, np.float64), np.asarray(feats_fake, np.float64)
    n = real.shape[1]
    m = min(min(len(real), len(fake)), max_subset_size)
    rs = np.random.RandomState(123)
    t = 0.0
    for _ in range(num_subsets):
        x = fake[rs.choice(len(fake), m, replace=False)]
        y = real[rs.choice(len(real), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


frechet_distance = _pick("frechet_distance", [("gankern.metrics", "frechet_distance")], _local_frechet_distance)
kid = _pick("kid", [("gankern.metrics", "kid")], _local_kid)


def _local_mean_cov(feats):
    """feats (n, d) -> (mean (d,), covariance (d, d)) in float64, numpy.cov's meaning."""
    import numpy as np
    f = np.asarray(feats, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _gankern_mean_cov(feats):
    stats = _FeatureStats()
    stats.update(torch.as_tensor(feats, dtype=torch.float64))
    return stats.mean_cov()


_FeatureStats = _pick("feature_stats", [("gankern.metrics", "FeatureStats")], None)
mean_cov = _gankern_mean_cov if _FeatureStats is not None else _local_mean_cov


def fid_from_features(real, fake) -> float:
    """FID between two feature sets (n, d) and (m, d) (streaming means and covariances in float64)."""
    return float(frechet_distance(*mean_cov(real), *mean_cov(fake)))
