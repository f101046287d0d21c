"""gankern: fused GPU kernels for GAN building blocks under a thin PyTorch API."""
__version__ = "0.1.0"

from ._backend import BACKENDS, BackendUnavailable, use_backend  # noqa: E402
from ._info import info  # noqa: E402
from . import ops, nn, metrics, steer, compat  # noqa: E402,F401

__all__ = ["BACKENDS", "BackendUnavailable", "use_backend", "info", "ops", "nn", "metrics", "steer", "compat",
           "__version__"]


def __getattr__(name: str):
    """``gankern.train`` (trainers, recipes, CLI), ``models``, ``data`` and ``augment`` are imported on first use, so
    ``import gankern`` stays light."""
    if name in ("train", "models", "data", "augment"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'gankern' has no attribute '{name}'")
