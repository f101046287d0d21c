"""``gankern.nn.convert(model)``: swap torch's implementations of GAN building blocks for gankern's in a whole model,
keeping every value (parameters, buffers, training/eval mode). Each op family registers one converter."""
from __future__ import annotations

import warnings
from typing import Callable

from torch import nn

# Each converter takes a module and returns the module to use in its place (itself when changed in place), or
# None when it does not apply. What it cannot keep it reports with warnings.warn(..., ConvertWarning).
_CONVERTERS: list[Callable[[nn.Module], nn.Module | None]] = []


class ConvertWarning(UserWarning):
    """Something :func:`convert` did not keep; one warning per kind, naming the layers."""


def register_converter(fn: Callable[[nn.Module], nn.Module | None]) -> Callable:
    _CONVERTERS.append(fn)
    return fn


def _convert_one(module: nn.Module) -> nn.Module:
    for fn in _CONVERTERS:
        new = fn(module)
        if new is not None:
            module = new
    return module


def _convert_tree(model: nn.Module, path: str, notes: dict[str, list[str]]) -> nn.Module:
    for name, child in list(model.named_children()):
        new = _convert_tree(child, f"{path}.{name}" if path else name, notes)
        if new is not child:
            setattr(model, name, new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvertWarning)
        new = _convert_one(model)
    for w in caught:
        if issubclass(w.category, ConvertWarning):
            notes.setdefault(str(w.message), []).append(path or "(the model itself)")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return new


TARGETS = ("gankern", "san")


def convert(model: nn.Module, to: str = "gankern", **san_kwargs) -> nn.Module:
    """Convert ``model`` in place (and return it; a converted root module is returned instead of ``model``).
    Convert before creating optimizers: modules that gankern replaces are new objects (their Parameters are kept).

    ``to="san"``: after the conversion below, every spectral-normalized Conv2d weight (and Linear weight with
    ``linear=True``) gets sparsity-aware normalization instead (:func:`gankern.nn.utils.sparsity_aware_norm`,
    keyword arguments ``san_kwargs``; the original weights are kept, the spectral-norm vectors dropped).

    ``torch.nn.InstanceNorm2d`` becomes :class:`gankern.nn.InstanceNorm2d` (the same object, its class swapped:
    values, keys and mode kept; the fused op, or torch's with running statistics).

    Swaps for :func:`gankern.nn.utils.spectral_norm`'s parametrization:

    - torch's ``torch.nn.utils.parametrizations.spectral_norm``: exactly (same values, keys and training steps).
    - torch's older ``torch.nn.utils.spectral_norm`` (the hook; StudioGAN uses it): every hook it installed is
      removed, the values (weight_orig, u, v) are kept (outputs in eval mode are equal), its keys become the
      parametrization's and its training steps differ slightly: it updates v from u first, the parametrization u
      from v first (both converge to the same singular vectors). Its old checkpoints still load (the layer maps
      ``weight_orig`` / ``weight_u`` / ``weight_v``).
    - BigGAN-PyTorch's SNConv2d / SNLinear / SNEmbedding (recognized by their buffers ``u0``, ``sv0`` and
      attributes ``num_svs``, ``num_itrs``, ``eps``): replaced by the torch layer with a spectral norm of style
      "biggan" (BG's iteration order and eval behaviour, so training continues as BG's to float tolerance): u0,
      eps, num_itrs and sv0 kept (``sv0`` under ``parametrizations.weight.0``, found by BG's ``get_SVs``), v
      derived. With num_svs > 1 the first singular pair (the only one in W / sigma) is kept and u1.., sv1.. are
      dropped, with a :class:`ConvertWarning` naming the layers.
    """
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    if san_kwargs and to != "san":
        raise TypeError(f"keyword arguments {sorted(san_kwargs)} are for to='san' only")
    notes: dict[str, list[str]] = {}
    new = _convert_tree(model, "", notes)
    for message, layers in notes.items():
        warnings.warn(f"gankern.nn.convert: {message}: {', '.join(layers)}", ConvertWarning, stacklevel=2)
    if to == "san":
        from .san import spectral_to_san
        new = spectral_to_san(new, **san_kwargs)
    return new
