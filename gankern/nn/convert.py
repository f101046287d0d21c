"""``gankern.nn.convert(model)``: swap torch's implementations of GAN building blocks for gankern's in a whole model,
keeping every value (parameters, buffers, training/eval mode). Each op family registers one converter."""
from __future__ import annotations

from typing import Callable

from torch import nn

# Each converter takes a module and returns the module to use in its place (itself when changed in place), or
# None when it does not apply.
_CONVERTERS: list[Callable[[nn.Module], nn.Module | None]] = []


def register_converter(fn: Callable[[nn.Module], nn.Module | None]) -> Callable:
    _CONVERTERS.append(fn)
    return fn


def _convert_one(module: nn.Module) -> nn.Module:
    for fn in _CONVERTERS:
        new = fn(module)
        if new is not None:
            module = new
    return module


def convert(model: nn.Module) -> nn.Module:
    """Convert ``model`` in place (and return it; a converted root module is returned instead of ``model``).
    Convert before creating optimizers: parameters that gankern re-registers are new objects.

    Swaps: torch's spectral norm (``torch.nn.utils.parametrizations.spectral_norm`` and the older
    ``torch.nn.utils.spectral_norm``) for :func:`gankern.nn.utils.spectral_norm`. The parametrization converts
    exactly (same values, keys and training steps). The older hook keeps its values (weight_orig, u, v; outputs in
    eval mode are equal) but its keys become the parametrization's, and its training steps differ slightly: it
    updates v from u first, the parametrization u from v first (both converge to the same singular vectors).
    """
    for name, child in list(model.named_children()):
        new = convert(child)
        if new is not child:
            setattr(model, name, new)
    return _convert_one(model)
