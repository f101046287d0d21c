"""The one place where models and trainers reach the fast op families (spectral norm, penalties, minibatch layers,
FID/KID statistics), through gankern's public API only:

| name                     | from                                  |
|--------------------------|---------------------------------------|
| spectral_norm            | gankern.nn.utils.spectral_norm        |
| gradient_penalty         | gankern.ops.gradient_penalty (WGAN-GP) |
| r1_penalty               | gankern.ops.r1_penalty                |
| minibatch_stddev         | gankern.ops.minibatch_stddev          |
| minibatch_discrimination | gankern.ops.minibatch_discrimination  |
| frechet_distance, kid, FeatureStats | gankern.metrics            |

Each op picks its backend itself (ref on the CPU, Triton/CUDA on GPUs; ``GANKERN_BACKEND`` forces one), so the
trainers get faster as the kernels land, with no change here. ``SOURCES`` records where each name came from (the
trainer writes it to ``run.json``).
"""
from __future__ import annotations

import torch

from ..metrics import FeatureStats, frechet_distance, kid
from ..nn.utils import spectral_norm
from ..ops import gradient_penalty, minibatch_discrimination, minibatch_stddev, r1_penalty

SOURCES: dict[str, str] = {
    "spectral_norm": "gankern.nn.utils.spectral_norm",
    "gradient_penalty": "gankern.ops.gradient_penalty",
    "r1_penalty": "gankern.ops.r1_penalty",
    "minibatch_stddev": "gankern.ops.minibatch_stddev",
    "minibatch_discrimination": "gankern.ops.minibatch_discrimination",
    "frechet_distance": "gankern.metrics.frechet_distance",
    "kid": "gankern.metrics.kid",
    "feature_stats": "gankern.metrics.FeatureStats",
}


def mean_cov(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (n, d) -> (mean (d,), covariance (d, d)) in float64 through gankern.metrics.FeatureStats."""
    stats = FeatureStats()
    stats.update(torch.as_tensor(feats, dtype=torch.float64))
    return stats.mean_cov()


def fid_from_features(real, fake) -> float:
    """FID between two feature sets (n, d) and (m, d) (streaming means and covariances in float64)."""
    return float(frechet_distance(*mean_cov(real), *mean_cov(fake)))


__all__ = ["SOURCES", "spectral_norm", "gradient_penalty", "r1_penalty", "minibatch_stddev",
           "minibatch_discrimination", "frechet_distance", "kid", "mean_cov", "fid_from_features"]
