"""GAN metrics: FID (streaming feature statistics + Frechet distance), KID, Inception Score, the FID Inception-v3.

The linear algebra lives in gankern.ops.fid (trace of the matrix square root); this package adds the statistics,
the scores, the feature extractor (gankern.metrics.inception) and `gankern fid` (gankern.metrics.cli).
"""
from .stats import FeatureStats, frechet_distance, load_stats, save_stats  # noqa: F401
from .scores import inception_score, kid  # noqa: F401

__all__ = ["FeatureStats", "frechet_distance", "kid", "inception_score", "load_stats", "save_stats"]
from .extract import compute_stats  # noqa: F401,E402

__all__ += ["compute_stats"]
