"""Spectral normalization as a parametrization (drop-in for ``torch.nn.utils.parametrizations.spectral_norm``) and
:class:`SpectralNormGroup`, one batched update of every spectral-normalized weight of a model."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm as _TorchSpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as _TorchHookSpectralNorm
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook as _TorchHookLoadStateDict
from torch.nn.utils.spectral_norm import SpectralNormStateDictHook as _TorchHookStateDict

from ..ops import spectral_norm as ops
from .convert import ConvertWarning, register_converter

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


STYLES = ("torch", "biggan")


class SpectralNorm(nn.Module):
    """The parametrization W -> W / sigma(W), in one of two styles.

    ``style="torch"`` (default): the buffers (``_u`` (h,), ``_v`` (w,)), training/eval behaviour and state_dict keys
    of torch's ``_SpectralNorm``: in training mode every access runs ``n_power_iterations`` power iterations
    (u <- normalize(Wm v), then v <- normalize(Wm^T u)); in eval mode the stored u, v give sigma = u^T Wm v.

    ``style="biggan"``: BigGAN-PyTorch's SN layers (what :func:`gankern.nn.convert` makes of its SNConv2d /
    SNLinear / SNEmbedding): each iteration updates v first (v <- normalize(Wm^T u), then u <- normalize(Wm v)),
    eval mode runs one such iteration from the stored u without storing it, and a ``sv0`` buffer (1,) holds the
    latest training sigma (BG's ``utils.get_SVs`` logs buffers named ``sv*``). The gankern kernels iterate u first,
    so this style's power iteration runs per layer in eager torch; W / sigma and its backward use the kernels.
    """

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 *, init_vectors: bool = True, style: str = "torch"):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"dim must be in range [{-ndim}, {ndim - 1}] but got {dim}")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got n_power_iterations={n_power_iterations}")
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        self.style = style
        self._group_cache = None  # (original, its _version, grad mode, normalized) set by SpectralNormGroup.update
        if style == "biggan":
            self.register_buffer("sv0", torch.ones(1, device=weight.device))
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
                     eps: float, style: str = "torch") -> "SpectralNorm":
        """A parametrization that continues from given vectors (used by :func:`gankern.nn.convert`)."""
        sn = cls(weight, n_power_iterations, dim, eps, init_vectors=False, style=style)
        sn.register_buffer("_u", u.detach().clone().to(weight.dtype).contiguous())
        sn.register_buffer("_v", v.detach().clone().to(weight.dtype).contiguous())
        return sn

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        cache = self._group_cache
        if (cache is not None and cache[0] is weight and cache[1] == weight._version
                and cache[2] == torch.is_grad_enabled()):
            return cache[3]
        if self.style == "biggan":
            u, v = _biggan_iteration(self, weight)
            out, sigmas = ops.spectral_normalize_all([weight.contiguous()], [u], [v], 0, self.eps, [self.dim])
            if self.training:
                self.sv0.copy_(sigmas)
            return out[0]
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
        style = f", style={self.style}" if self.style != "torch" else ""
        return f"dim={self.dim}, n_power_iterations={self.n_power_iterations}, eps={self.eps}{style}"


def _biggan_iteration(sn: SpectralNorm, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BigGAN-PyTorch's power iteration (v <- normalize(Wm^T u), then u <- normalize(Wm v)): in training mode
    ``n_power_iterations`` steps on the stored u, v; in eval mode one step from the stored u, on copies. Returns the
    (u, v) that give sigma = u^T Wm v."""
    wm = ops.as_matrix(weight.detach(), sn.dim)
    with torch.no_grad():
        u, v = (sn._u, sn._v) if sn.training else (sn._u.clone(), sn._v.clone())
        for _ in range(sn.n_power_iterations if sn.training else 1):
            v.copy_(_v_from_u(wm, u, sn.eps))
            u.copy_(F.normalize(torch.mv(wm, v), dim=0, eps=sn.eps))
    return u, v


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> nn.Module:
    """Apply spectral normalization to ``module.<name>``: the meaning, state_dict keys
    (``parametrizations.<name>.original``, ``parametrizations.<name>.0._u`` / ``._v``) and RNG use of
    ``torch.nn.utils.parametrizations.spectral_norm``, with gankern's kernels. ``dim`` defaults to 1 for
    transposed convolutions, else 0. ``load_state_dict`` also takes the keys of torch's older hook
    (``<name>_orig``, ``<name>_u``, ``<name>_v``) and of BigGAN-PyTorch's SN layers (``weight``, ``u0``, ``sv0``),
    so checkpoints of those load strictly (see :class:`_OtherKeys`)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, _TRANSPOSED) else 0
    parametrize.register_parametrization(module, name, SpectralNorm(weight, n_power_iterations, dim, eps))
    _map_other_keys(module, name)
    return module


# ---------------------------------------------------------------------------------------------------------------
# checkpoints of torch's older hook and of BigGAN-PyTorch


def _v_from_u(wm: torch.Tensor, u: torch.Tensor, eps: float) -> torch.Tensor:
    return F.normalize(torch.mv(wm.t(), u), dim=0, eps=eps)


def biggan_pytorch_vectors(weight: torch.Tensor, u0: torch.Tensor, eps: float, style: str = "torch"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (u, v) of a gankern spectral norm that continues BigGAN-PyTorch's SN state ``u0`` ((1, h) or (h,)) of
    ``weight`` (read along dim 0, as BG does). BG's eval mode runs one v-first iteration from u0 without storing
    it: v' = normalize(Wm^T u0), u' = normalize(Wm v'), sigma = u'^T Wm v'. ``style="biggan"`` keeps u0 and
    derives v' (that style repeats BG's iteration); ``style="torch"`` stores (u', v'), whose eval-mode sigma is
    BG's eval-mode sigma (so eval outputs are BG's; training then iterates torch's way, u first)."""
    wm = ops.as_matrix(weight.detach(), 0).float()
    u0 = u0.detach().reshape(-1).float()
    with torch.no_grad():
        v = _v_from_u(wm, u0, eps)
        u = u0 if style == "biggan" else F.normalize(torch.mv(wm, v), dim=0, eps=eps)
    return u.to(weight.dtype), v.to(weight.dtype)


class _OtherKeys:
    """``load_state_dict`` pre-hook of a module whose ``name`` has gankern's spectral norm: renames the keys of
    torch's older hook (``<name>_orig``, ``<name>_u``, ``<name>_v``) and of BigGAN-PyTorch's SN layers
    (``weight``, ``u0``, ``sv0``; ``u1``, ``sv1``, ... are dropped, see :func:`gankern.nn.convert`) to the
    parametrization's, so that those checkpoints load, strictly, into gankern's layers. A missing v (torch < 1.1
    checkpoints) is derived from u: normalize(Wm^T u)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                 error_msgs) -> None:
        if not parametrize.is_parametrized(module, self.name):
            return
        sn = module.parametrizations[self.name][0]
        if not isinstance(sn, SpectralNorm):
            return
        old, new = prefix + self.name, f"{prefix}parametrizations.{self.name}."
        if new + "original" in state_dict:
            return
        if old + "_orig" in state_dict:  # torch.nn.utils.spectral_norm (the hook)
            weight = state_dict.pop(old + "_orig")
            state_dict.pop(old, None)  # torch < 1.1 also saved W / sigma
            u, v = state_dict.pop(old + "_u", None), state_dict.pop(old + "_v", None)
            state_dict[new + "original"] = weight
            if u is not None:
                if v is None:
                    v = _v_from_u(ops.as_matrix(weight, sn.dim).float(), u.float(), sn.eps).to(u.dtype)
                state_dict[new + "0._u"], state_dict[new + "0._v"] = u, v
        elif prefix + "u0" in state_dict and old in state_dict and self.name == "weight" and sn.dim == 0:
            weight = state_dict.pop(old)  # BigGAN-PyTorch's SN layers
            u0, sv0 = state_dict.pop(prefix + "u0"), state_dict.pop(prefix + "sv0", None)
            i = 1
            while prefix + f"u{i}" in state_dict:
                state_dict.pop(prefix + f"u{i}")
                state_dict.pop(prefix + f"sv{i}", None)
                i += 1
            state_dict[new + "original"] = weight
            state_dict[new + "0._u"], state_dict[new + "0._v"] = biggan_pytorch_vectors(weight, u0, sn.eps, sn.style)
            if sn.style == "biggan" and sv0 is not None:
                state_dict[new + "0.sv0"] = sv0


def _map_other_keys(module: nn.Module, name: str) -> None:
    if not any(isinstance(h, _OtherKeys) and h.name == name for h in map(_unwrap, _load_pre_hooks(module))):
        module.register_load_state_dict_pre_hook(_OtherKeys(name))


def _unwrap(hook):
    """torch stores load_state_dict pre-hooks wrapped (``_WrappedHook``, the callable in ``.hook``) in the torch
    versions seen so far (2.6 .. 2.13), and may store them bare; look through the wrapper either way."""
    return getattr(hook, "hook", hook)


def _load_pre_hooks(module: nn.Module):
    return module._load_state_dict_pre_hooks.values()


# ---------------------------------------------------------------------------------------------------------------
# the batched group


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
    Layers of ``style="biggan"`` (converted BigGAN-PyTorch layers) run their power iteration per layer (eager torch)
    and join the batched W / sigma.
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
            if sn.style == "biggan":
                (u, v), n = _biggan_iteration(sn, w), 0
            else:
                u, v, n = sn._u, sn._v, (sn.n_power_iterations if sn.training else 0)
            groups.setdefault((w.device, w.dtype, n, sn.eps), []).append((entry, w, u, v))
        grad_mode = torch.is_grad_enabled()
        for (_, _, n, eps), members in groups.items():
            outs, sigmas = ops.spectral_normalize_all([w.contiguous() for _, w, _, _ in members],
                                                      [u for _, _, u, _ in members], [v for _, _, _, v in members],
                                                      n, eps, [e[3].dim for e, _, _, _ in members])
            for ((name, _, _, sn), w, _, _), out, sig in zip(members, outs, sigmas.unbind(0)):
                sn._group_cache = (w, w._version, grad_mode, out)
                self.sigmas[name] = sig.detach()
                if sn.style == "biggan" and sn.training:
                    sn.sv0.copy_(sig)
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
# conversion: torch's parametrization, torch's older hook, BigGAN-PyTorch's SN layers


def _from_torch_parametrization(module: nn.Module) -> bool:
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
                    _map_other_keys(module, tname)
                    changed = True
    return changed


def _remove_hooks_of(module: nn.Module, fn: _TorchHookSpectralNorm) -> None:
    """Remove every hook ``torch.nn.utils.spectral_norm`` installed for ``fn``, found by type (torch's own
    ``remove_spectral_norm`` misses the load_state_dict pre-hook, which torch stores wrapped)."""
    for hooks, kind in ((module._forward_pre_hooks, _TorchHookSpectralNorm),
                        (module._state_dict_hooks, _TorchHookStateDict),
                        (module._load_state_dict_pre_hooks, _TorchHookLoadStateDict)):
        for key, hook in list(hooks.items()):
            hook = _unwrap(hook)
            if isinstance(hook, kind) and (hook is fn or getattr(hook, "fn", None) is fn):
                del hooks[key]


def _from_torch_hook(module: nn.Module) -> bool:
    """torch.nn.utils.spectral_norm (the forward pre-hook): same weight Parameter, u and v; its keys become the
    parametrization's; training iterates u first from now on (see :func:`gankern.nn.convert`)."""
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, _TorchHookSpectralNorm)]
    for fn in hooks:
        name = fn.name
        original = module._parameters[name + "_orig"]
        u, v = getattr(module, name + "_u"), getattr(module, name + "_v")
        _remove_hooks_of(module, fn)
        for suffix in ("", "_u", "_v", "_orig"):
            delattr(module, name + suffix)
        module.register_parameter(name, original)
        parametrize.register_parametrization(
            module, name, SpectralNorm.from_vectors(u, v, original, fn.n_power_iterations, fn.dim, fn.eps),
            unsafe=True)
        _map_other_keys(module, name)
    return bool(hooks)


# BigGAN-PyTorch's SN mixin, recognized by structure (no import of BG): buffers u0.., sv0.. and attributes num_svs,
# num_itrs, eps on a torch layer; the plain torch layer that replaces it, on the meta device (no RNG, no memory).
_BIGGAN_BASES = {
    nn.Conv2d: lambda m: nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                                   m.groups, False, m.padding_mode, device="meta"),
    nn.Linear: lambda m: nn.Linear(m.in_features, m.out_features, False, device="meta"),
    nn.Embedding: lambda m: nn.Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx, m.max_norm, m.norm_type,
                                         m.scale_grad_by_freq, m.sparse, device="meta"),
}


def _is_biggan_pytorch_sn(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "num_svs", None), int) and isinstance(getattr(module, "num_itrs", None), int)
            and isinstance(getattr(module, "eps", None), float) and "u0" in module._buffers
            and "sv0" in module._buffers)


def _from_biggan_pytorch(module: nn.Module) -> nn.Module | None:
    """BigGAN-PyTorch's SNConv2d / SNLinear / SNEmbedding -> the torch layer with gankern's spectral norm of style
    "biggan" (BG's iteration order and eval behaviour): same weight and bias Parameters, u0 kept, v derived, eps,
    num_itrs and sv0 kept. num_svs > 1: BG's W / sigma uses only the first singular pair (u0's iteration does not
    depend on the others), which is kept exactly; u1.., sv1.. (estimated only for logging) are dropped, with a
    warning naming the layers."""
    if not _is_biggan_pytorch_sn(module):
        return None
    base = next((b for b in type(module).__mro__ if b in _BIGGAN_BASES), None)
    if base is None:
        raise TypeError(f"{type(module).__name__} has BigGAN-PyTorch's spectral-norm buffers (u0, sv0) on a "
                        f"{type(module).__mro__[1].__name__}; gankern converts them on Conv2d, Linear and Embedding")
    if getattr(module, "transpose", False):
        raise ValueError(f"{type(module).__name__} uses BigGAN-PyTorch's transposed spectral norm (transpose=True), "
                         f"which gankern.nn.convert does not convert")
    new = _BIGGAN_BASES[base](module)
    new.weight = module.weight
    if getattr(module, "bias", None) is not None:
        new.bias = module.bias
    new.train(module.training)
    weight = module.weight
    u, v = biggan_pytorch_vectors(weight, module.u0, module.eps, "biggan")
    sn = SpectralNorm.from_vectors(u, v, weight, module.num_itrs, 0, module.eps, style="biggan")
    sn.sv0.copy_(module.sv0.reshape(1))
    sn.train(module.training)
    parametrize.register_parametrization(new, "weight", sn, unsafe=True)
    _map_other_keys(new, "weight")
    if module.num_svs > 1:
        warnings.warn("BigGAN-PyTorch SN layers with num_svs > 1: kept u0 and sv0 (the first singular pair, which "
                      "alone sets W / sigma, so training is unchanged); dropped u1.., sv1.. (BG estimates the other "
                      "singular values only to log them)", ConvertWarning, stacklevel=2)
    return new


def _convert(module: nn.Module) -> nn.Module | None:
    bg = _from_biggan_pytorch(module)
    if bg is not None:
        return bg
    changed = _from_torch_parametrization(module)
    changed = _from_torch_hook(module) or changed
    return module if changed else None


register_converter(_convert)
