"""Style modulation: fused bias + activation (StyleGAN2's bias_act), AdaIN, and StyleGAN2's modulated convolution
with its noise / bias / activation epilogue.

bias_act (StyleGAN2-ADA's meaning): y = clamp(gain * f(x + b), -clamp, clamp) with f, alpha and gain from the
ACTIVATIONS table. Its backward is itself a fused op (dx = dy * gain f'(v)) whose backward is again fused
(d(dy) = the same op, d(x) = ddx * dy * gain f''(v)), so R1 and path-length penalties differentiate through it
twice. Floor: forward 2, backward 3, double backward 4 elements of memory traffic per element.

adain: instance_norm(x) * gamma + beta in one kernel (statistics + normalization + affine), and a fused backward
(dx, dgamma, dbeta). Floor: forward reads x and writes y; backward reads x and dy and writes dx.

modulated_conv2d: x * s (per sample and input channel), one ordinary convolution, then one fused epilogue pass
y * d[n, o] + bias + noise * strength, activation, gain, clamp, where d[n, o] = rsqrt(sum_i s[n, i]^2 q[o, i] + eps)
and q[o, i] = sum_k w[o, i, k]^2 (an (N, I) @ (I, O) product: no (N, O, I, kh, kw) tensor).

Backends: ref (eager torch: the twins, also the oracle of the tests), triton (every op), cuda (bias_act). Speed:
not measured on a GPU yet; default order on CUDA tensors cuda, then triton (not measured).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, DTYPE_CODES, module_and_stream, ptr

__all__ = ["ACTIVATIONS", "bias_act", "bias_act_ref", "adain", "adain_ref", "modulated_conv2d",
           "modulated_conv2d_ref", "demodulation_coefficients"]

BIAS_ACT_PREFERENCE = ("cuda", "triton")
TRITON_ONLY = ("triton",)
KERNEL_DTYPES = {"cuda": CUDA_DTYPES, "triton": CUDA_DTYPES}


def _triton():
    from ..kernels import modulation  # imported late: TRITON_INTERPRET must be set before the kernels are defined
    return modulation


# ----------------------------------------------------------------------------------------------------------------
# the activation table


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]  # reference function f(v, alpha)
    def_alpha: float
    def_gain: float
    code: int               # gk::Act in csrc/include/gankern/modulation.h, ACT in gankern/kernels/modulation.py
    has_2nd_grad: bool      # f'' is not zero almost everywhere


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda v, a: v, 0.0, 1.0, 0, False),
    "relu": Activation(lambda v, a: F.relu(v), 0.0, math.sqrt(2), 1, False),
    "lrelu": Activation(lambda v, a: F.leaky_relu(v, a), 0.2, math.sqrt(2), 2, False),
    "tanh": Activation(lambda v, a: torch.tanh(v), 0.0, 1.0, 3, True),
    "sigmoid": Activation(lambda v, a: torch.sigmoid(v), 0.0, 1.0, 4, True),
    "elu": Activation(lambda v, a: F.elu(v), 0.0, 1.0, 5, True),
    "selu": Activation(lambda v, a: F.selu(v), 0.0, 1.0, 6, True),
    "softplus": Activation(lambda v, a: F.softplus(v), 0.0, 1.0, 7, True),
    "swish": Activation(lambda v, a: torch.sigmoid(v) * v, 0.0, math.sqrt(2), 8, True),
}


def _act_params(act, alpha, gain, clamp) -> tuple[Activation, float, float, float]:
    """Table row and the resolved (alpha, gain, clamp); clamp -1 means none."""
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    for name, v in (("alpha", alpha), ("gain", gain), ("clamp", clamp)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number or None, got {v!r}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp!r}")
    spec = ACTIVATIONS[act]
    return (spec, float(spec.def_alpha if alpha is None else alpha), float(spec.def_gain if gain is None else gain),
            float(-1 if clamp is None else clamp))


# ----------------------------------------------------------------------------------------------------------------
# layouts: the kernels run over memory order, so any dense layout (contiguous, channels_last, ...) works as is


def _dense(t: torch.Tensor) -> torch.Tensor:
    """t itself when its elements fill its memory without gaps or overlaps (any dim order), else a contiguous copy."""
    dims = sorted((d for d in range(t.dim()) if t.shape[d] != 1), key=lambda d: t.stride(d))
    expect = 1
    for d in dims:
        if t.stride(d) != expect:
            return t.contiguous()
        expect *= t.shape[d]
    return t


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t with exactly ref's strides (ref dense)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def _bias_layout(x: torch.Tensor, dim: int) -> tuple[int, int]:
    """(C, stride): the channel of memory offset e of dense x is (e // stride) % C."""
    return (x.shape[dim], x.stride(dim)) if x.shape[dim] > 1 else (1, 1)


# ----------------------------------------------------------------------------------------------------------------
# bias_act: reference twin


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "lrelu",
                 alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Eager twin of :func:`bias_act` (differentiable to any order by torch autograd)."""
    spec, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim % x.dim() else 1 for i in range(x.dim())])
    y = spec.func(x, alpha)
    if gain != 1:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y


# ----------------------------------------------------------------------------------------------------------------
# bias_act: kernels. mode 0: y = f(v); 1: g * f'(v); 2: g * g2 * f''(v) (gain and clamp included, see modulation.h)


def _bias_act_run(backend, mode, x, b, g, g2, dim, act, alpha, gain, clamp):
    x = _dense(x)
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    g = None if g is None else _like(g, x)
    g2 = None if g2 is None else _like(g2, x)
    b = None if b is None else b.contiguous()
    C, stride = _bias_layout(x, dim) if b is not None else (1, 1)
    code = ACTIVATIONS[act].code
    if backend == "triton":
        _triton().bias_act(x, b, g, g2, out, C, stride, mode, code, alpha, gain, clamp)
    else:
        mod, stream = module_and_stream(x.device)
        mod.bias_act(ptr(x), ptr(b), ptr(g), ptr(g2), ptr(out), out.numel(), C, stride, mode, code, alpha, gain,
                     clamp, DTYPE_CODES[x.dtype], stream)
    return out


def _reduce_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    dims = [i for i in range(t.dim()) if i != dim]
    return t.sum(dims) if dims else t  # sum over [] would sum everything


@torch.library.custom_op("gankern::bias_act", mutates_args=())
def _bias_act_op(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                 clamp: float, backend: str) -> torch.Tensor:
    return _bias_act_run(backend, 0, x, b, None, None, dim, act, alpha, gain, clamp)


@torch.library.custom_op("gankern::bias_act_grad", mutates_args=())
def _bias_act_grad_op(dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float,
                      gain: float, clamp: float, backend: str) -> torch.Tensor:
    """dx = dy * gain f'(x + b) (zero where clamped)."""
    return _bias_act_run(backend, 1, x, b, dy, None, dim, act, alpha, gain, clamp)


@torch.library.custom_op("gankern::bias_act_grad2", mutates_args=())
def _bias_act_grad2_op(ddx: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int,
                       act: str, alpha: float, gain: float, clamp: float, backend: str) -> torch.Tensor:
    """d(x) of the backward: ddx * dy * gain f''(x + b) (zero where clamped)."""
    return _bias_act_run(backend, 2, x, b, ddx, dy, dim, act, alpha, gain, clamp)


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


@_bias_act_grad_op.register_fake
def _(dy, x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


@_bias_act_grad2_op.register_fake
def _(ddx, dy, x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


def _bias_act_setup(ctx, inputs, output):
    x, b, *params = inputs[:]
    ctx.save_for_backward(x, b)
    ctx.params = params  # dim, act, alpha, gain, clamp, backend


def _bias_act_backward(ctx, dy):
    x, b = ctx.saved_tensors
    dim = ctx.params[0]
    dx = _bias_act_grad_op(dy, x, b, *ctx.params)
    db = _reduce_to_bias(dx, dim).to(b.dtype) if b is not None and ctx.needs_input_grad[1] else None
    return dx, db, None, None, None, None, None, None


def _bias_act_grad_setup(ctx, inputs, output):
    dy, x, b, *params = inputs
    ctx.save_for_backward(dy, x, b)
    ctx.params = params


def _bias_act_grad_backward(ctx, ddx):
    dy, x, b = ctx.saved_tensors
    dim, act = ctx.params[0], ctx.params[1]
    d_dy = _bias_act_grad_op(ddx, x, b, *ctx.params) if ctx.needs_input_grad[0] else None
    d_x = d_b = None
    if ACTIVATIONS[act].has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        d_x = _bias_act_grad2_op(ddx, dy, x, b, *ctx.params)
        d_b = _reduce_to_bias(d_x, dim).to(b.dtype) if b is not None and ctx.needs_input_grad[2] else None
    return d_dy, d_x, d_b, None, None, None, None, None, None


def _bias_act_grad2_backward(ctx, grad):
    raise NotImplementedError("third-order gradients of gankern.ops.bias_act are not implemented "
                              "(use gankern.use_backend('ref') for them)")


_bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup)
_bias_act_grad_op.register_autograd(_bias_act_grad_backward, setup_context=_bias_act_grad_setup)
_bias_act_grad2_op.register_autograd(_bias_act_grad2_backward, setup_context=lambda ctx, inputs, output: None)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "lrelu",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Fused bias + activation + gain + clamp (StyleGAN2's bias_act), differentiable twice.

    Args:
        x: (..., C, ...) any rank and dense layout (contiguous, channels_last, ...); fp32/bf16/fp16 on the kernels,
            also fp64 on ref.
        b: (C,) added along ``dim`` of x before the activation (cast to x's dtype), or None.
        dim: the dimension of x that b runs along.
        act: a key of ACTIVATIONS (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: the activation's parameter (lrelu's negative slope; default from the table: 0.2 for lrelu).
        gain: output scale (default from the table: sqrt(2) for relu, lrelu and swish, else 1).
        clamp: clamp the output to [-clamp, clamp] after the gain (None: no clamp).
    Returns:
        y: shape and dtype of x.
    """
    _validate.tensor("x", x)
    spec, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    if b is not None:
        _validate.tensor("b", b, ndim=1, device=x.device)
        if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
            raise ValueError(f"dim must be a dimension of x (shape {tuple(x.shape)}), got {dim!r}")
        dim %= x.dim()
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"b has {b.shape[0]} elements but x has {x.shape[dim]} along dim {dim} "
                             f"(x shape {tuple(x.shape)})")
        b = b.to(x.dtype)
    else:
        dim = 0  # unused without b
    backend = _backend.select(x.device, x.dtype, BIAS_ACT_PREFERENCE, KERNEL_DTYPES)
    if backend == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, None if clamp < 0 else clamp)
    return _bias_act_op(x, b, dim, act, alpha, gain, clamp, backend)
