"""GAN metrics: FID (streaming feature statistics + Frechet distance), KID, Inception Score, the FID Inception-v3.

The linear algebra lives in gankern.ops.fid (trace of the matrix square root); this package adds the statistics,
the scores, the feature extractor (gankern.metrics.inception), feature statistics of image sets through any
extractor (gankern.metrics.extract) and `gankern fid` (gankern.metrics.cli).
"""
from .stats import FeatureStats, FIDReference, frechet_distance, load_stats, save_stats  # noqa: F401
from .scores import inception_score, kid  # noqa: F401
from .extract import compute_stats  # noqa: F401
from .inception import FIDInceptionV3, load_fid_inception  # noqa: F401

__all__ = ["FeatureStats", "FIDReference", "frechet_distance", "kid", "inception_score", "compute_stats",
           "load_stats", "save_stats", "FIDInceptionV3", "load_fid_inception"]
