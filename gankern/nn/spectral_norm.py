"""Spectral normalization as a parametrization (drop-in for ``torch.nn.utils.parametrizations.spectral_norm``) and
:class:`SpectralNormGroup`, one batched update of every spectral-normalized weight of a model."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm as _TorchSpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as _TorchHookSpectralNorm

from ..ops import spectral_norm as ops
from .convert import register_converter

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class SpectralNorm(nn.Module):
    """The parametrization W -> W / sigma(W). Same buffers (``_u`` (h,), ``_v`` (w,)), training/eval behaviour
    and state_dict keys as torch's ``_SpectralNorm``: in training mode every access runs ``n_power_iterations``
    power iterations; in eval mode the stored u, v give sigma."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 *, init_vectors: bool = True):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"dim must be in range [{-ndim}, {ndim - 1}] but got {dim}")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        self._group_cache = None  # (original, its _version, grad mode, normalized) set by SpectralNormGroup.update
        if ndim > 1 and init_vectors:
            wm = ops.as_matrix(weight, self.dim)
            h, w = wm.shape
            u = wm.new_empty(h).normal_(0, 1)
            v = wm.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            ops.power_iteration_all([weight.detach().contiguous()], [self._u], [self._v], 15, self.eps, [self.dim])

    @classmethod
    def from_vectors(cls, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, n_power_iterations: int, dim: int,
                     eps: float) -> "SpectralNorm":
        """A parametrization that continues from given vectors (used by :func:`gankern.nn.convert`)."""
        sn = cls(weight, n_power_iterations, dim, eps, init_vectors=False)
        sn.register_buffer("_u", u.detach().clone().contiguous())
        sn.register_buffer("_v", v.detach().clone().contiguous())
        return sn

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        cache = self._group_cache
        if (cache is not None and cache[0] is weight and cache[1] == weight._version
                and cache[2] == torch.is_grad_enabled()):
            return cache[3]
        n = self.n_power_iterations if self.training else 0
        out, _ = ops.spectral_normalize_all([weight.contiguous()], [self._u], [self._v], n, self.eps, [self.dim])
        return out[0]

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def __getstate__(self):
        """Copies (deepcopy for an EMA generator, pickling) leave the group's batched result behind."""
        state = super().__getstate__()
        state["_group_cache"] = None
        return state

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_power_iterations={self.n_power_iterations}, eps={self.eps}"


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> nn.Module:
    """Apply spectral normalization to ``module.<name>``: the meaning, state_dict keys
    (``parametrizations.<name>.original``, ``parametrizations.<name>.0._u`` / ``._v``) and RNG use of
    ``torch.nn.utils.parametrizations.spectral_norm``, with gankern's kernels. ``dim`` defaults to 1 for
    transposed convolutions, else 0."""
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, _TRANSPOSED) else 0
    parametrize.register_parametrization(module, name, SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


def _spectral_norms(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, SpectralNorm]]:
    for mod_name, mod in model.named_modules():
        if not parametrize.is_parametrized(mod):
            continue
        for tname, plist in mod.parametrizations.items():
            if len(plist) == 1 and isinstance(plist[0], SpectralNorm) and plist.original.ndim > 1:
                yield f"{mod_name}.{tname}" if mod_name else tname, mod, tname, plist[0]


class SpectralNormGroup:
    """Every gankern spectral norm of ``model``, updated together: :meth:`update` runs the power iteration and
    W / sigma of all layers in a few kernel launches (per dtype and device), instead of one chain per layer.

    After ``update()``, accesses to each weight return the batched result until that weight changes (its version
    counter moves, e.g. at the optimizer step) or the grad mode differs from the update's. That result is one
    autograd node: run ONE backward per update (sum the losses of the real and fake passes; with gradient
    accumulation, update before each round) as with ``torch.nn.utils.parametrize.cached()``. Weights that are not
    contiguous (channels_last) are copied once per update.
    ``sigmas`` holds the latest sigma of each weight (BigGAN logs them). Layers in eval mode use 0 iterations.
    """

    def __init__(self, model: nn.Module):
        self.entries = list(_spectral_norms(model))
        if not self.entries:
            raise ValueError("the model has no gankern spectral norm (apply gankern.nn.utils.spectral_norm or "
                             "gankern.nn.convert first)")
        self.sigmas: dict[str, torch.Tensor] = {}

    def update(self) -> dict[str, torch.Tensor]:
        """One batched step for every layer; returns {name: sigma (0-dim float32)}."""
        groups: dict[tuple, list] = {}
        for entry in self.entries:
            _, mod, tname, sn = entry
            w = mod.parametrizations[tname].original
            n = sn.n_power_iterations if sn.training else 0
            groups.setdefault((w.device, w.dtype, n, sn.eps), []).append(entry)
        grad_mode = torch.is_grad_enabled()
        for (_, _, n, eps), entries in groups.items():
            originals = [mod.parametrizations[t].original for _, mod, t, _ in entries]
            sns = [e[3] for e in entries]
            outs, sigmas = ops.spectral_normalize_all([w.contiguous() for w in originals], [s._u for s in sns],
                                                      [s._v for s in sns], n, eps, [s.dim for s in sns])
            for (name, _, _, sn), w, out, sig in zip(entries, originals, outs, sigmas.unbind(0)):
                sn._group_cache = (w, w._version, grad_mode, out)
                self.sigmas[name] = sig.detach()
        return self.sigmas

    def clear(self) -> None:
        """Forget the batched results (accesses run per layer again)."""
        for _, _, _, sn in self.entries:
            sn._group_cache = None

    @contextlib.contextmanager
    def cached(self):
        """``with group.cached(): ...``: one batched update on entry, its results used inside, cleared on exit."""
        self.update()
        try:
            yield self
        finally:
            self.clear()


# ---------------------------------------------------------------------------------------------------------------
# conversion of torch's spectral norms (both the parametrization and the older hook-based one)

def _convert(module: nn.Module) -> nn.Module | None:
    changed = False
    if parametrize.is_parametrized(module):
        for tname, plist in module.parametrizations.items():
            for i, p in enumerate(plist):
                if isinstance(p, _TorchSpectralNorm):
                    if plist.original.ndim > 1:
                        new = SpectralNorm.from_vectors(p._u, p._v, plist.original, p.n_power_iterations, p.dim, p.eps)
                    else:
                        new = SpectralNorm(plist.original, 1, p.dim, p.eps, init_vectors=False)
                    new.train(p.training)
                    plist[i] = new
                    changed = True
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, _TorchHookSpectralNorm):
            name = hook.name
            original = getattr(module, name + "_orig").detach().clone()
            u, v = getattr(module, name + "_u"), getattr(module, name + "_v")
            torch.nn.utils.remove_spectral_norm(module, name)
            with torch.no_grad():
                getattr(module, name).copy_(original)
            parametrize.register_parametrization(
                module, name, SpectralNorm.from_vectors(u, v, original, hook.n_power_iterations, hook.dim, hook.eps),
                unsafe=True)
            changed = True
    return module if changed else None


register_converter(_convert)
