"""gankern: fused GPU kernels for GAN building blocks under a thin PyTorch API."""
__version__ = "0.1.0"

from ._backend import BACKENDS, BackendUnavailable, use_backend  # noqa: E402
from ._info import info  # noqa: E402
from . import ops, nn, metrics, compat  # noqa: E402,F401

__all__ = ["BACKENDS", "BackendUnavailable", "use_backend", "info", "ops", "nn", "metrics", "compat", "__version__"]
