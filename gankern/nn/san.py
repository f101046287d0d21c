"""Sparsity-aware normalization (Kligvasser & Michaeli, AAAI 2021) as a parametrization, like spectral_norm's:
W -> W / s, with s = momentum * s + (1 - momentum) * (gain * san_constant(W) + eps) refreshed in training mode
every ``update_interval`` forward passes (the authors' schedule), s a buffer without gradient."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..ops.san import san_constant, san_constants


class SparsityAwareNorm(nn.Module):
    """The parametrization W -> W / s of a Conv2d (O, I, kh, kw) or Linear (O, I) weight.

    Buffers (state_dict keys under ``parametrizations.<name>.0``): ``s`` (1,) float32, the current constant;
    ``steps`` () int64, training forward passes so far; ``input_size`` (2,) int64, the (H, W) of the convolution's
    input that the constant is computed at (0, 0 until known).
    """

    def __init__(self, weight: torch.Tensor, input_size=None, gain: float = 1.0, update_interval: int = 2,
                 momentum: float = 0.0, eps: float = 1e-8):
        super().__init__()
        if weight.ndim not in (2, 4):
            raise ValueError(f"sparsity_aware_norm takes a Linear (O, I) or Conv2d (O, I, kh, kw) weight, got shape "
                             f"{tuple(weight.shape)}")
        if isinstance(update_interval, bool) or not isinstance(update_interval, int) or update_interval < 1:
            raise ValueError(f"update_interval must be a positive int, got {update_interval!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not gain > 0 or not eps >= 0:
            raise ValueError(f"gain must be > 0 and eps >= 0, got gain={gain!r}, eps={eps!r}")
        self.gain, self.update_interval, self.momentum, self.eps = float(gain), update_interval, float(momentum), eps
        self.conv = weight.ndim == 4
        size = (1, 1) if not self.conv else (0, 0) if input_size is None else tuple(int(s) for s in input_size)
        if len(size) != 2 or (self.conv and input_size is not None and min(size) < 1):
            raise ValueError(f"input_size must be a pair (H, W) of positive ints, got {input_size!r}")
        self.register_buffer("s", torch.ones(1, device=weight.device))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64, device=weight.device))
        self.register_buffer("input_size", torch.tensor(size, dtype=torch.int64, device=weight.device))
        self._steps, self._size = 0, size  # host copies of the buffers: no device sync per forward
        self._fresh = False  # s already updated for the next due forward (by SANGroup.update)

    def set_input_size(self, size) -> None:
        """Compute the constant at input size (H, W) from the next update on."""
        size = tuple(int(s) for s in size)
        if self.conv and size != self._size:
            self._size = size
            self.input_size.copy_(torch.tensor(size))

    def _check_size(self) -> None:
        if self._size == (0, 0):
            raise RuntimeError("sparsity_aware_norm does not know the convolution's input size yet: pass "
                               "input_size=(H, W), or run the module on an input before reading its weight")

    def _due(self) -> bool:
        return self._steps == 0 or (self.training and self._steps % self.update_interval == 0)

    def update(self, weight: torch.Tensor, constant: torch.Tensor | None = None) -> None:
        """Refresh s from ``weight`` (no gradient), or from its ``constant`` computed already (by
        :class:`SANGroup`); the first update takes the constant as it is."""
        self._check_size()
        with torch.no_grad():
            c = san_constant(weight.detach(), self._size) if constant is None else constant
            new = c.float() * self.gain + self.eps
            # a new tensor, not an in-place update: an earlier forward's graph may hold the old s for its backward
            self.s = (new if self._steps == 0 else self.s * self.momentum + (1 - self.momentum) * new).reshape(1)

    @torch.compiler.disable  # host-side schedule (no device sync): run eagerly rather than recompile per step
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self._due():
            if self._fresh:
                self._fresh = False   # SANGroup.update did this step's update
            else:
                self.update(weight)
        if self.training:
            self._steps += 1
            self.steps.add_(1)
        return weight / self.s.to(weight.dtype)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._steps, self._size = int(self.steps), tuple(int(s) for s in self.input_size.tolist())

    def extra_repr(self) -> str:
        size = f"input_size={self._size}, " if self.conv else ""
        return f"{size}gain={self.gain}, update_interval={self.update_interval}, momentum={self.momentum}, " \
               f"eps={self.eps}"


class SANGroup:
    """Every SAN layer of ``model`` refreshed together: ``group.update()`` (call it before a training step's
    forwards) computes the constants of all layers due at their next forward in one launch
    (:func:`gankern.ops.san.san_constants`), so their forwards do not compute them one by one. Schedules, values and
    state_dicts are those of the layers alone."""

    def __init__(self, model: nn.Module):
        self.entries = [(m, p) for m in model.modules() if parametrize.is_parametrized(m, "weight")
                        for p in m.parametrizations.weight if isinstance(p, SparsityAwareNorm)]

    def update(self) -> int:
        """Refresh the layers whose next forward would update s; returns how many."""
        due = [(m, p) for m, p in self.entries if p._due() and not p._fresh]
        if not due:
            return 0
        for _, p in due:
            p._check_size()
        weights = [m.parametrizations.weight.original.detach() for m, _ in due]
        groups: dict = {}   # one launch per (device, dtype)
        for i, w in enumerate(weights):
            groups.setdefault((w.device, w.dtype), []).append(i)
        for idx in groups.values():
            with torch.no_grad():
                cs = san_constants([weights[i] for i in idx], [due[i][1]._size for i in idx])
            for i, c in zip(idx, cs):
                due[i][1].update(weights[i], c)
                due[i][1]._fresh = True
        return len(due)


def _record_input_size(module: nn.Module, args) -> None:
    for p in module.parametrizations.weight:
        if isinstance(p, SparsityAwareNorm):
            p.set_input_size(args[0].shape[-2:])


def sparsity_aware_norm(module: nn.Module, input_size=None, gain: float = 1.0, update_interval: int = 2,
                        momentum: float = 0.0, eps: float = 1e-8, circular: bool = True) -> nn.Module:
    """Apply sparsity-aware normalization (SAN) to ``module.weight`` of a Conv2d or Linear (in place; returns it).

    Args:
        input_size: (H, W) of the convolution's input; None: the size of each input the module sees (recorded by a
            forward pre-hook; the constant is recomputed at the next update). Ignored for a Linear.
        gain, update_interval, momentum, eps: the paper's: W / s, s <- momentum * s + (1 - momentum) *
            (gain * c + eps) every ``update_interval`` training forward passes (and at the first one), c =
            :func:`gankern.ops.san.san_constant`.
        circular: a Conv2d with zero padding switches to circular padding, as in the paper (whose constant is exact
            for circular convolution). False keeps the padding mode.
    """
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"sparsity_aware_norm applies to nn.Conv2d and nn.Linear, got {type(module).__name__}")
    conv = isinstance(module, nn.Conv2d)
    norm = SparsityAwareNorm(module.weight, input_size if conv else None, gain, update_interval, momentum, eps)
    if conv and circular and module.padding_mode == "zeros" and module.padding not in ("valid", (0, 0)):
        module.padding_mode = "circular"
    norm.train(module.training)
    parametrize.register_parametrization(module, "weight", norm, unsafe=True)  # no evaluation: size may be unknown
    if conv and input_size is None:
        module.register_forward_pre_hook(_record_input_size)
    return module


def spectral_to_san(model: nn.Module, linear: bool = False, **san_kwargs) -> nn.Module:
    """Replace every gankern spectral-norm parametrization of ``model``'s Conv2d weights (and Linear ones with
    ``linear=True``) by SAN, the original weights kept; for ``gankern.nn.convert(model, to="san")``. Linear layers
    keep spectral norm by default, as in the authors' discriminators (SAN's constant of a Linear, max |W|, is far
    below its spectral norm, about 1/17 of it for a random 4096 -> 1 head); embeddings and transposed convolutions
    keep spectral norm."""
    from .spectral_norm import SpectralNorm
    kinds = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    for module in model.modules():
        if not isinstance(module, kinds) or not parametrize.is_parametrized(module, "weight"):
            continue
        if not any(isinstance(p, SpectralNorm) for p in module.parametrizations.weight):
            continue
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        sparsity_aware_norm(module, **san_kwargs)
    return model
