"""gankern's ops inside NVlabs' stylegan2-ada-pytorch (S2A), in one line, with S2A's repository on sys.path:

    import gankern.compat.stylegan2_ada; gankern.compat.stylegan2_ada.patch()

:func:`patch` swaps, in this process, the functions of S2A's ``torch_utils.ops`` modules (``bias_act.bias_act``,
``upfirdn2d.upfirdn2d / filter2d / upsample2d / downsample2d``, ``conv2d_resample.conv2d_resample``) and, when
``training.networks`` imports, its ``modulated_conv2d`` for gankern's, which take S2A's signatures and defaults
(``impl=`` is accepted: "ref" runs gankern's reference twin, "cuda" its default backend). S2A's networks look these
names up on the modules at each call, so models built before the patch use gankern's ops too. :func:`unpatch` puts
S2A's functions back. ``setup_filter`` stays S2A's (it builds the same filter tensors).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..ops import modulation, resample

# S2A module -> {function name: gankern's function}. Adding a swap is one entry.
SWAPS: dict[str, dict[str, object]] = {
    "torch_utils.ops.bias_act": {"bias_act": modulation.bias_act},
    "torch_utils.ops.upfirdn2d": {"upfirdn2d": resample.upfirdn2d, "filter2d": resample.filter2d,
                                  "upsample2d": resample.upsample2d, "downsample2d": resample.downsample2d},
    "torch_utils.ops.conv2d_resample": {"conv2d_resample": resample.conv2d_resample},
    "training.networks": {"modulated_conv2d": modulation.modulated_conv2d},
}
OPTIONAL = ("training.networks",)  # swapped when importable (torch_utils alone is enough to patch the ops)

_originals: dict[tuple[str, str], object] = {}  # (module, name) -> S2A's function, while patched


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if name in OPTIONAL:
            return None
        raise ImportError(f"gankern.compat.stylegan2_ada.patch() needs StyleGAN2-ADA's {name} (put the root of "
                          f"the stylegan2-ada-pytorch repository on sys.path first): {e}") from e


def patch() -> list[str]:
    """Swap S2A's op functions for gankern's in this process (idempotent). Returns the names swapped,
    e.g. ``["torch_utils.ops.bias_act.bias_act", ...]``."""
    done = []
    for mod_name, funcs in SWAPS.items():
        mod = _import(mod_name)
        if mod is None:
            continue
        for fn_name, fn in funcs.items():
            if not hasattr(mod, fn_name):
                raise AttributeError(f"{mod_name} has no {fn_name}: not StyleGAN2-ADA's module?")
            _originals.setdefault((mod_name, fn_name), getattr(mod, fn_name))
            setattr(mod, fn_name, fn)
            done.append(f"{mod_name}.{fn_name}")
    return done


def unpatch() -> list[str]:
    """Put S2A's functions back. Returns the names restored."""
    done = []
    for (mod_name, fn_name), fn in list(_originals.items()):
        setattr(importlib.import_module(mod_name), fn_name, fn)
        del _originals[(mod_name, fn_name)]
        done.append(f"{mod_name}.{fn_name}")
    return done


def patched() -> bool:
    """True between :func:`patch` and :func:`unpatch`."""
    return bool(_originals)
