"""Style modulation: fused bias + activation (StyleGAN2's bias_act), AdaIN, and StyleGAN2's modulated convolution
with its noise / bias / activation epilogue.

bias_act (StyleGAN2-ADA's meaning): y = clamp(gain * f(x + b), -clamp, clamp) with f, alpha and gain from the
ACTIVATIONS table. Its backward is itself a fused op (dx = dy * gain f'(v)) whose backward is again fused
(d(dy) = the same op, d(x) = ddx * dy * gain f''(v)), so R1 and path-length penalties differentiate through it
twice. Floor: forward 2, backward 3, double backward 4 elements of memory traffic per element.

adain: instance_norm(x) * gamma + beta in one kernel (statistics + normalization + affine), and a fused backward
(dx, dgamma, dbeta). Floor: forward reads x and writes y; backward reads x and dy and writes dx.

instance_norm: torch's instance norm with a per-channel affine and a fused activation (pix2pix / CycleGAN's norm +
ReLU / LeakyReLU), on the AdaIN kernels; same floors.

modulated_conv2d: x * s (per sample and input channel), one ordinary convolution, then one fused epilogue pass
y * d[n, o] + bias + noise * strength, activation, gain, clamp, where d[n, o] = rsqrt(sum_i s[n, i]^2 q[o, i] + eps)
and q[o, i] = sum_k w[o, i, k]^2 come from one small kernel (an (N, I) @ (I, O) product with q formed on the fly:
no (N, O, I, kh, kw) tensor).

noise_bias_act: the same epilogue without the convolution (StyleGAN's noise injection with a scalar or per-channel
strength, bias and activation in one pass).

Backends: ref (eager torch: the twins, also the oracle of the tests), triton (every op), cuda (bias_act). Speed:
not measured on a GPU yet; default order for bias_act on CUDA tensors: cuda, then triton (not measured).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, DTYPE_CODES, fused_op, module_and_stream, ptr, s2a_impl

__all__ = ["ACTIVATIONS", "bias_act", "bias_act_ref", "adain", "adain_ref", "modulated_conv2d",
           "modulated_conv2d_ref", "demodulation_coefficients", "noise_bias_act", "instance_norm",
           "instance_norm_ref"]

BIAS_ACT_PREFERENCE = ("cuda", "triton")
TRITON_ONLY = ("triton",)
KERNEL_DTYPES = {"cuda": CUDA_DTYPES, "triton": CUDA_DTYPES}


@functools.cache
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


_ACT_PARAMS: dict = {}  # (act, alpha, gain, clamp) -> _act_params' result, for arguments that passed its checks
_NUMBER_TYPES = (float, int, type(None))


def _act_params(act, alpha, gain, clamp) -> tuple[Activation, float, float, float]:
    """Table row and the resolved (alpha, gain, clamp); clamp -1 means none."""
    # the cache only for plain arguments (not bool: True == 1 would hit 1's entry; not numpy scalars) and not
    # under torch.compile (a traced read of a growing dict would guard on it)
    plain = type(act) is str and type(alpha) in _NUMBER_TYPES and type(gain) in _NUMBER_TYPES and \
        type(clamp) in _NUMBER_TYPES and not torch.compiler.is_compiling()
    if plain:
        hit = _ACT_PARAMS.get((act, alpha, gain, clamp))
        if hit is not None:
            return hit
    params = _check_act_params(act, alpha, gain, clamp)
    if plain and len(_ACT_PARAMS) < 1024:
        _ACT_PARAMS[(act, alpha, gain, clamp)] = params
    return params


def _check_act_params(act, alpha, gain, clamp) -> tuple[Activation, float, float, float]:
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
    if t.is_contiguous():
        return t
    dims = sorted((d for d in range(t.dim()) if t.shape[d] != 1), key=lambda d: t.stride(d))
    expect = 1
    for d in dims:
        if t.stride(d) != expect:
            return t.contiguous()
        expect *= t.shape[d]
    return t


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t with exactly ref's strides and dtype (ref dense)."""
    return t if t.stride() == ref.stride() and t.dtype == ref.dtype else torch.empty_like(ref).copy_(t)


def _bias_layout(x: torch.Tensor, dim: int) -> tuple[int, int]:
    """(C, stride): the channel of memory offset e of dense x is (e // stride) % C."""
    return (x.shape[dim], x.stride(dim)) if x.shape[dim] > 1 else (1, 1)


# ----------------------------------------------------------------------------------------------------------------
# bias_act: reference twin


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
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


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in dtype (t itself when it has it: a same-dtype .to() still costs a dispatch)."""
    return t if t.dtype == dtype else t.to(dtype)


def _reduce_to_bias(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """t summed over every dim but ``dim``, in ``dtype``."""
    dims = [i for i in range(t.dim()) if i != dim]
    return _cast(t.sum(dims) if dims else t, dtype)  # sum over [] would sum everything


def _bias_act_impl(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                 clamp: float, backend: str) -> torch.Tensor:
    return _bias_act_run(backend, 0, x, b, None, None, dim, act, alpha, gain, clamp)


def _bias_act_grad_impl(dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float,
                      gain: float, clamp: float, backend: str) -> torch.Tensor:
    """dx = dy * gain f'(x + b) (zero where clamped)."""
    return _bias_act_run(backend, 1, x, b, dy, None, dim, act, alpha, gain, clamp)


def _bias_act_grad2_impl(ddx: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int,
                       act: str, alpha: float, gain: float, clamp: float, backend: str) -> torch.Tensor:
    """d(x) of the backward: ddx * dy * gain f''(x + b) (zero where clamped)."""
    return _bias_act_run(backend, 2, x, b, ddx, dy, dim, act, alpha, gain, clamp)


def _bias_act_fake(x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


def _bias_act_grad_fake(dy, x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


def _bias_act_grad2_fake(ddx, dy, x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(_dense(x))


def _bias_act_setup(ctx, inputs, output):
    x, b, *params = inputs[:]
    ctx.save_for_backward(x, b)
    ctx.params = params  # dim, act, alpha, gain, clamp, backend


def _bias_act_backward(ctx, dy):
    x, b = ctx.saved_tensors
    dim = ctx.params[0]
    dx = _bias_act_grad_op(dy, x, b, *ctx.params)
    db = _reduce_to_bias(dx, dim, b.dtype) if b is not None and ctx.needs_input_grad[1] else None
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
        d_b = _reduce_to_bias(d_x, dim, b.dtype) if b is not None and ctx.needs_input_grad[2] else None
    return d_dy, d_x, d_b, None, None, None, None, None, None


def _no_setup(ctx, inputs, output):
    pass


def _bias_act_grad2_backward(ctx, grad):
    raise NotImplementedError("third-order gradients of gankern.ops.bias_act are not implemented "
                              "(use gankern.use_backend('ref') for them)")


_bias_act_op = fused_op("bias_act", _bias_act_impl, _bias_act_fake, _bias_act_setup, _bias_act_backward)
_bias_act_grad_op = fused_op("bias_act_grad", _bias_act_grad_impl, _bias_act_grad_fake,
                             _bias_act_grad_setup, _bias_act_grad_backward)
_bias_act_grad2_op = fused_op("bias_act_grad2", _bias_act_grad2_impl, _bias_act_grad2_fake,
                              _no_setup, _bias_act_grad2_backward)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str | None = None) -> torch.Tensor:
    """Fused bias + activation + gain + clamp, differentiable twice: StyleGAN2-ADA's ``bias_act`` with its signature
    and defaults (``act="linear"``), so that ``torch_utils.ops.bias_act.bias_act = gankern.ops.bias_act`` keeps S2A's
    images (gankern.compat.stylegan2_ada.patch() does that swap).

    Args:
        x: (..., C, ...) any rank and dense layout (contiguous, channels_last, ...); fp32/bf16/fp16 on the kernels,
            also fp64 on ref.
        b: (C,) added along ``dim`` of x before the activation (cast to x's dtype), or None.
        dim: the dimension of x that b runs along.
        act: a key of ACTIVATIONS (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: the activation's parameter (lrelu's negative slope; default from the table: 0.2 for lrelu).
        gain: output scale (default from the table: sqrt(2) for relu, lrelu and swish, else 1).
        clamp: clamp the output to [-clamp, clamp] after the gain (None: no clamp).
        impl: S2A's argument: ``"ref"`` runs the reference twin, ``"cuda"`` or None the default backend choice.
    Returns:
        y: shape and dtype of x.
    """
    _validate.tensor("x", x)
    impl = s2a_impl(impl)
    spec, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    if b is not None:
        _validate.tensor("b", b, ndim=1, device=x.device)
        if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
            raise ValueError(f"dim must be a dimension of x (shape {tuple(x.shape)}), got {dim!r}")
        dim %= x.dim()
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"b has {b.shape[0]} elements but x has {x.shape[dim]} along dim {dim} "
                             f"(x shape {tuple(x.shape)})")
        if b.dtype != x.dtype:
            b = b.to(x.dtype)
    else:
        dim = 0  # unused without b
    backend = "ref" if impl == "ref" else _backend.select(x.device, x.dtype, BIAS_ACT_PREFERENCE, KERNEL_DTYPES)
    if backend == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, None if clamp < 0 else clamp)
    return _bias_act_op(x, b, dim, act, alpha, gain, clamp, backend)


# ----------------------------------------------------------------------------------------------------------------
# second order through a fused backward: differentiate the reference formula of the first-order gradients


def _double_backward(backward_ref, inputs, grads):
    """The backward of a fused backward op: gradients w.r.t. ``inputs`` (tensors or None) of
    sum_k <backward_ref(*inputs)[k], grads[k]>, where backward_ref is the op's meaning in differentiable torch.
    Second order only: the result does not track further gradients."""
    with torch.enable_grad():
        ins = [t if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        live = [i for i, t in enumerate(ins) if t is not None and t.requires_grad]
        pairs = [(o, g) for o, g in zip(backward_ref(*ins), grads) if g is not None and o.requires_grad]
        out = [None] * len(ins)
        if pairs:
            res = torch.autograd.grad([o for o, _ in pairs], [ins[i] for i in live], [g for _, g in pairs],
                                      allow_unused=True)
            for i, r in zip(live, res):
                out[i] = r
        return out


# ----------------------------------------------------------------------------------------------------------------
# argument checks of the normalization and epilogue ops: a cheap test of the valid case first, the general check
# (which names the problem) when it fails


def _x4(x) -> None:
    """x: a 4-D floating tensor."""
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.dtype in _validate.FLOATS):
        _validate.tensor("x", x, ndim=4)


def _affine(name: str, t, shape: torch.Size, device: torch.device, per_sample: bool) -> None:
    """t: (N, C) (per_sample) or (C,) floating, on device, for x of ``shape`` (N, C, H, W)."""
    if _is_float_on(t, device):
        got = t.shape
        if per_sample and len(got) == 2 and got[0] == shape[0] and got[1] == shape[1]:
            return
        if not per_sample and len(got) == 1 and got[0] == shape[1]:
            return
    _validate.tensor(name, t, ndim=2 if per_sample else 1, device=device)
    want = f"(N, C) = {tuple(shape[:2])}" if per_sample else f"(C,) = ({shape[1]},)"
    raise ValueError(f"{name} must have shape {want} to match x of shape {tuple(shape)}, got {tuple(t.shape)}")


def _is_float_on(t, device: torch.device) -> bool:
    """t is a floating tensor on device (the common case of _validate.tensor's checks)."""
    return isinstance(t, torch.Tensor) and t.dtype in _validate.FLOATS and t.device == device


def _positive_eps(eps) -> None:
    if not ((type(eps) is float or type(eps) is int) and eps > 0):
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive float, got {eps!r}")


# ----------------------------------------------------------------------------------------------------------------
# adain: reference twin, kernels, ops


def adain_ref(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Eager twin of :func:`adain` (statistics in fp32 for 16-bit inputs)."""
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = F.instance_norm(xc, eps=eps) * gamma.to(xc.dtype)[:, :, None, None] + beta.to(xc.dtype)[:, :, None, None]
    return y.to(x.dtype)


def _adain_layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """x in a layout the kernels read with (n, c, pixel) strides: NCHW contiguous or channels_last."""
    if x.is_contiguous():
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


def _adain_impl(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, backend: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, cl = _adain_layout(x)
    y = torch.empty_like(x)
    mean, rstd = _stats(x)
    if x.numel():
        _triton().adain_fwd(x, gamma.contiguous(), beta.contiguous(), y, mean, rstd, eps, cl)
    return y, mean, rstd


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (N, C) fp32 buffers for the statistics of x's planes (sizes as varargs: a tuple costs ~1 us more)."""
    N, C = x.shape[0], x.shape[1]
    mean = torch.empty(N, C, dtype=torch.float32, device=x.device)
    return mean, torch.empty_like(mean)


def _adain_fake(x, gamma, beta, eps, backend):
    x, _ = _adain_layout(x)
    mean = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x), mean, torch.empty_like(mean)


def _adain_backward_impl(x: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                       dy: torch.Tensor, eps: float, backend: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dgamma, dbeta) from the statistics of the forward."""
    x, cl = _adain_layout(x)
    dx = torch.empty_like(x)
    dgamma = torch.empty_like(mean)
    dbeta = torch.empty_like(mean)
    if x.numel():
        _triton().adain_bwd(x, gamma.contiguous(), mean, rstd, _like(dy, x), dx, dgamma, dbeta, cl)
    return dx, _cast(dgamma, gamma.dtype), _cast(dbeta, gamma.dtype)


def _adain_backward_fake(x, gamma, mean, rstd, dy, eps, backend):
    x, _ = _adain_layout(x)
    return torch.empty_like(x), torch.empty_like(gamma), torch.empty_like(gamma)


def _adain_setup(ctx, inputs, output):
    x, gamma, beta, eps, backend = inputs
    ctx.save_for_backward(x, gamma, beta, output[1], output[2])
    ctx.eps, ctx.backend = eps, backend


def _adain_backward(ctx, dy, _dmean, _drstd):
    x, gamma, beta, mean, rstd = ctx.saved_tensors
    dx, dgamma, dbeta = _adain_backward_op(x, gamma, mean, rstd, dy, ctx.eps, ctx.backend)
    return dx, dgamma, _cast(dbeta, beta.dtype), None, None


def _adain_backward_setup(ctx, inputs, output):
    x, gamma, mean, rstd, dy, eps, backend = inputs
    ctx.save_for_backward(x, gamma, dy)
    ctx.eps = eps


def _adain_backward_ref(x, gamma, dy, eps):
    """(dx, dgamma, dbeta) of adain_ref by autograd, differentiable (the meaning of gankern::adain_backward)."""
    beta = torch.zeros_like(gamma, requires_grad=True)
    return torch.autograd.grad(adain_ref(x, gamma, beta, eps), (x, gamma, beta), dy, create_graph=True)


def _adain_double_backward(ctx, ddx, ddgamma, ddbeta):
    """Second order from the reference formula (mean and rstd are recomputed from x, so they get no gradient)."""
    x, gamma, dy = ctx.saved_tensors
    gx, ggamma, gdy = _double_backward(lambda x, g, dy: _adain_backward_ref(x, g, dy, ctx.eps), (x, gamma, dy),
                                       (ddx, ddgamma, ddbeta))
    return gx, ggamma, None, None, gdy, None, None


_adain_op = fused_op("adain", _adain_impl, _adain_fake, _adain_setup, _adain_backward, aux_outputs=2)
_adain_backward_op = fused_op("adain_backward", _adain_backward_impl, _adain_backward_fake,
                              _adain_backward_setup, _adain_double_backward)


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalization: ``instance_norm(x, eps) * gamma[:, :, None, None] + beta[:, :, None, None]``.

    One kernel computes the statistics of each (n, c) plane, normalizes and applies the affine (x read once when
    H*W <= 2048, else twice); the backward is one fused kernel for (dx, dgamma, dbeta); second order through the
    reference formula.

    Args:
        x: (N, C, H, W), H * W >= 2, contiguous or channels_last (kept), fp32/bf16/fp16 (and fp64 on ref).
        gamma, beta: (N, C), any float dtype (the gradients come back in their dtypes).
        eps: added to the (biased) variance.
    Returns:
        y: (N, C, H, W), dtype and layout of x.
    """
    _x4(x)
    shape, device = x.shape, x.device
    _affine("gamma", gamma, shape, device, per_sample=True)
    _affine("beta", beta, shape, device, per_sample=True)
    if shape[2] * shape[3] < 2:
        raise ValueError(f"x must have at least 2 pixels per plane to normalize, got shape {tuple(x.shape)}")
    _positive_eps(eps)
    backend = _backend.select(device, x.dtype, TRITON_ONLY, KERNEL_DTYPES)
    if backend == "ref":
        return adain_ref(x, gamma, beta, eps)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: adain has Triton "
                                          "kernels only (use the triton backend)")
    return _adain_op(x, gamma, beta, float(eps), backend)[0]


# ----------------------------------------------------------------------------------------------------------------
# instance_norm: instance normalization, per-channel affine and activation on the AdaIN kernels


def instance_norm_ref(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      eps: float = 1e-5, act: str = "linear", alpha: float | None = 0.2) -> torch.Tensor:
    """Eager twin of :func:`instance_norm`: ``f(F.instance_norm(x, eps=eps) * weight + bias)`` with f the activation
    (no gain), computed in fp32 for 16-bit inputs. The affine comes after the normalization, as in the kernels and
    adain_ref (torch's CPU kernel folds mean, rstd and the affine into one multiply-add, which makes some of an Inf
    weight's +-Inf NaN)."""
    spec, alpha = _act_params(act, alpha, None, None)[:2]
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = F.instance_norm(xc, eps=eps)
    if weight is not None:
        y = y * weight.to(xc.dtype)[:, None, None]
    if bias is not None:
        y = y + bias.to(xc.dtype)[:, None, None]
    return spec.func(y, alpha).to(x.dtype)


def _instance_norm_impl(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                        act: str, alpha: float, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd); mean, rstd: (N, C) fp32."""
    x, cl = _adain_layout(x)
    y = torch.empty_like(x)
    mean, rstd = _stats(x)
    if x.numel():
        _triton().adain_fwd(x, _flat(weight), _flat(bias), y, mean, rstd, eps, cl, per_sample=False,
                            act=ACTIVATIONS[act].code, alpha=alpha)
    return y, mean, rstd


def _instance_norm_fake(x, weight, bias, eps, act, alpha, backend):
    x, _ = _adain_layout(x)
    mean = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x), mean, torch.empty_like(mean)


def _instance_norm_backward_impl(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                                 mean: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor, eps: float, act: str,
                                 alpha: float, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) from the statistics of the forward; dweight, dbias: (C,) fp32 (computed with weight 1
    and bias 0 when they are absent)."""
    x, cl = _adain_layout(x)
    dx = torch.empty_like(x)
    dw = torch.empty_like(mean)  # (N, C) per-sample sums (all written)
    db = torch.empty_like(mean)
    if x.numel():
        _triton().adain_bwd(x, _flat(weight), mean, rstd, _like(dy, x), dx, dw, db, cl, beta=_flat(bias),
                            per_sample=False, act=ACTIVATIONS[act].code, alpha=alpha)
    return dx, dw.sum(0), db.sum(0)


def _instance_norm_backward_fake(x, weight, bias, mean, rstd, dy, eps, act, alpha, backend):
    x, _ = _adain_layout(x)
    return torch.empty_like(x), mean.new_empty(mean.shape[1:]), mean.new_empty(mean.shape[1:])


def _instance_norm_setup(ctx, inputs, output):
    x, weight, bias, *params = inputs
    ctx.save_for_backward(x, weight, bias, output[1], output[2])
    ctx.params = params  # eps, act, alpha, backend


def _instance_norm_backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = _instance_norm_backward_op(x, weight, bias, mean, rstd, dy, *ctx.params)
    need = ctx.needs_input_grad
    return (dx, _cast(dw, weight.dtype) if weight is not None and need[1] else None,
            _cast(db, bias.dtype) if bias is not None and need[2] else None, None, None, None, None)


def _instance_norm_backward_setup(ctx, inputs, output):
    x, weight, bias, _, _, dy, *params = inputs
    ctx.save_for_backward(x, weight, bias, dy)
    ctx.params = params  # eps, act, alpha, backend


def _instance_norm_backward_ref(x, weight, bias, dy, eps, act, alpha):
    """(dx, dweight, dbias) of instance_norm_ref by autograd, differentiable (the meaning of
    gankern::instance_norm_backward: weight 1 and bias 0 stand in for absent ones)."""
    dt = torch.promote_types(x.dtype, torch.float32)
    w = torch.ones(x.shape[1], dtype=dt, device=x.device, requires_grad=True) if weight is None else weight
    b = torch.zeros(x.shape[1], dtype=dt, device=x.device, requires_grad=True) if bias is None else bias
    return torch.autograd.grad(instance_norm_ref(x, w, b, eps, act, alpha), (x, w, b), dy, create_graph=True)


def _instance_norm_double_backward(ctx, ddx, ddw, ddb):
    """Second order from the reference formula (mean and rstd are recomputed from x, so they get no gradient)."""
    x, weight, bias, dy = ctx.saved_tensors
    eps, act, alpha, _ = ctx.params
    gx, gw, gb, gdy = _double_backward(lambda x, w, b, dy: _instance_norm_backward_ref(x, w, b, dy, eps, act, alpha),
                                       (x, weight, bias, dy), (ddx, ddw, ddb))
    return gx, gw, gb, None, None, gdy, None, None, None, None


_instance_norm_op = fused_op("instance_norm", _instance_norm_impl, _instance_norm_fake, _instance_norm_setup,
                             _instance_norm_backward, aux_outputs=2)
_instance_norm_backward_op = fused_op("instance_norm_backward", _instance_norm_backward_impl,
                                      _instance_norm_backward_fake, _instance_norm_backward_setup,
                                      _instance_norm_double_backward)


def instance_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  eps: float = 1e-5, act: str = "linear", alpha: float | None = 0.2) -> torch.Tensor:
    """Instance normalization with an optional per-channel affine and a fused activation:
    ``f(F.instance_norm(x, weight=weight, bias=bias, eps=eps))`` (torch's training-mode meaning: statistics of each
    (n, c) plane, biased variance), f the activation without gain (pix2pix / CycleGAN: ``act="relu"``, or
    ``act="lrelu"`` with alpha 0.2).

    One kernel computes the statistics, normalizes, applies the affine and the activation (x read once when H*W <=
    2048, else twice); the backward is one fused kernel for (dx, dweight, dbias); second order through the reference
    formula (WGAN-GP through a discriminator with instance norm).

    Args:
        x: (N, C, H, W), H * W >= 2 (torch raises too), any layout (NCHW or channels_last kept, others copied),
            fp32/bf16/fp16 (and fp64 on ref).
        weight, bias: (C,) or None, any float dtype (the gradients come back in their dtypes).
        eps: added to the variance (> 0).
        act: a key of ACTIVATIONS (linear, relu, lrelu, tanh, ...); alpha: lrelu's negative slope (None: 0.2).
    Returns:
        y: (N, C, H, W), dtype and layout of x.
    """
    _x4(x)
    shape, device = x.shape, x.device
    if weight is not None:
        _affine("weight", weight, shape, device, per_sample=False)
    if bias is not None:
        _affine("bias", bias, shape, device, per_sample=False)
    if shape[2] * shape[3] < 2:
        raise ValueError(f"instance norm needs more than 1 spatial element per plane (torch raises too), got x of "
                         f"shape {tuple(x.shape)}")
    _positive_eps(eps)
    alpha = _act_params(act, alpha, None, None)[1]
    backend = _backend.select(device, x.dtype, TRITON_ONLY, KERNEL_DTYPES)
    if backend == "ref":
        return instance_norm_ref(x, weight, bias, eps, act, alpha)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: instance_norm has "
                                          "Triton kernels only (use the triton backend)")
    return _instance_norm_op(x, weight, bias, float(eps), act, alpha, backend)[0]


# ----------------------------------------------------------------------------------------------------------------
# modulated convolution


def _demodulation_ref(weight: torch.Tensor, styles: torch.Tensor, eps: float) -> torch.Tensor:
    q = weight.float().square().sum([2, 3])          # [O, I]
    a = styles.float().square() @ q.t() + eps
    return torch.where(a == math.inf, math.nan, a.rsqrt())  # an Inf weight or style: NaN, as w * s * d would be


def _demodulation_impl(weight: torch.Tensor, styles: torch.Tensor, eps: float, backend: str) -> torch.Tensor:
    d = weight.new_empty(styles.shape[0], weight.shape[0], dtype=torch.float32)
    if d.numel():
        _triton().demodulation(weight.contiguous(), styles.contiguous(), d, eps)
    return d


def _demodulation_fake(weight, styles, eps, backend):
    return weight.new_empty((styles.shape[0], weight.shape[0]), dtype=torch.float32)


def _demodulation_setup(ctx, inputs, output):
    weight, styles, _, _ = inputs
    ctx.save_for_backward(weight, styles, output)


def _demodulation_backward(ctx, dd):
    """With a = d^-2 = s^2 @ q^T + eps: da = -d^3 / 2 * dd; ds = 2 s (da @ q); dw = 2 w (da^T @ s^2) (torch ops,
    differentiable again through d)."""
    weight, styles, d = ctx.saved_tensors
    da = -0.5 * dd * d ** 3                                             # [N, O]
    ds = 2 * styles.float() * (da @ weight.float().square().sum([2, 3]))  # [N, I]
    dw = 2 * weight.float() * (da.t() @ styles.float().square())[:, :, None, None]  # [O, I, kh, kw]
    return dw.to(weight.dtype), ds.to(styles.dtype), None, None


_demodulation_op = fused_op("demodulation", _demodulation_impl, _demodulation_fake,
                            _demodulation_setup, _demodulation_backward)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """d[n, o] = rsqrt(sum_{i, k} (w[o, i, k] s[n, i])^2 + eps) = rsqrt(s^2 @ q^T + eps), q[o, i] = sum_k w^2: one
    small kernel (no (N, O, I, kh, kw) tensor), differentiable to any order. NaN where the sum is Inf (an Inf
    weight or style), so that the output channel is NaN as in the reference's w * s * d.
    weight (O, I, kh, kw), styles (N, I) -> (N, O) fp32."""
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 4 and weight.dtype in _validate.FLOATS):
        _validate.tensor("weight", weight, ndim=4)
    if not (_is_float_on(styles, weight.device) and styles.dim() == 2):
        _validate.tensor("styles", styles, ndim=2, device=weight.device)
    if styles.shape[1] != weight.shape[1]:
        raise ValueError(f"styles has {styles.shape[1]} input channels but weight has {weight.shape[1]} (styles "
                         f"{tuple(styles.shape)}, weight {tuple(weight.shape)})")
    _positive_eps(eps)
    backend = _backend.select(weight.device, weight.dtype, TRITON_ONLY, KERNEL_DTYPES)
    if backend == "ref":
        return _demodulation_ref(weight, styles, eps)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: the demodulation "
                                          "has a Triton kernel only (use the triton backend)")
    return _demodulation_op(weight, styles, float(eps), backend)


def _epilogue_pre(y, d, bias, noise, strength):
    """v = y * d[n, o] + bias[o] + noise * strength (in y's dtype)."""
    v = y if d is None else y * d[:, :, None, None].to(y.dtype)
    if bias is not None:
        v = v + bias.to(y.dtype)[None, :, None, None]
    if noise is not None:  # strength: one element, or (O,)
        v = v + noise.to(y.dtype) * strength.to(y.dtype).reshape(1, -1, 1, 1)
    return v


def _epilogue_ref(y, d, bias, noise, strength, act, alpha, gain, clamp):
    return bias_act_ref(_epilogue_pre(y, d, bias, noise, strength), None, 1, act, alpha, gain,
                        None if clamp < 0 else clamp)


def _s2a_fp16_prenormalize(x, weight, styles, demodulate):
    """StyleGAN2-ADA's fp16 guard: with fp16 activations and demodulation, scale weight (per output channel, to
    max |w| = 1 / sqrt(I kh kw)) and styles (per sample, to max |s| = 1) before modulating. Demodulation cancels
    both scales, so the result is unchanged; only the fp16 intermediates (x * s, the convolution) stay in range."""
    if x.dtype != torch.float16 or not demodulate:
        return weight, styles
    weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.norm(float("inf"), dim=1, keepdim=True)


def _noise_4d(noise):
    """S2A's noise forms as (N or 1, 1, H', W'): a (H', W') map (its noise_mode="const") is shared by the batch."""
    return noise[None, None] if noise is not None and noise.dim() == 2 else noise


def modulated_conv2d_ref(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                         demodulate=True, flip_weight=True, fused_modconv=True, *, bias=None, noise_strength=None,
                         act="linear", alpha=None, gain=None, clamp=None, eps=1e-8):
    """Eager twin of :func:`modulated_conv2d`: StyleGAN2-ADA's formulation with per-sample weights
    w[n] = weight * s[n] (demodulated, computed in fp32 for fp16 inputs) in one grouped convolution."""
    from .resample import _padding, conv2d_resample, conv2d_resample_size, setup_filter
    N, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    if resample_filter is None and (up > 1 or down > 1):
        resample_filter = setup_filter([1, 3, 3, 1], device=x.device)
    if N == 0:
        return x.new_zeros((0, O, *conv2d_resample_size(H, W, kh, kw, resample_filter, up, down, padding)))
    weight, styles = _s2a_fp16_prenormalize(x, weight, styles, demodulate)
    acc = torch.promote_types(x.dtype, torch.float32)
    w = weight[None].to(acc) * styles.to(acc).reshape(N, 1, I, 1, 1)   # [N, O, I, kh, kw]
    if demodulate:
        w = w * (w.square().sum([2, 3, 4]) + eps).rsqrt().reshape(N, O, 1, 1, 1)
    x = x.reshape(1, N * I, H, W)
    if up == 1 and down == 1:
        # zero padding as values, so that a NaN tap (an Inf weight or style times d = 0) makes every output it
        # covers NaN, padded or not, whichever algorithm torch picks (its depthwise conv, groups of I = O = 1,
        # skips padded taps; im2col and the fast path's d = NaN do not)
        x, padding = F.pad(x, _padding(padding)), 0
    y = conv2d_resample(x, w.reshape(N * O, I, kh, kw).to(x.dtype), resample_filter, up, down, padding, groups=N,
                        flip_weight=flip_weight)
    y = y.reshape(N, O, *y.shape[2:])
    noise = _noise_4d(noise)
    strength = None if noise is None else torch.as_tensor(1.0 if noise_strength is None else noise_strength,
                                                          device=x.device)
    _, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    return _epilogue_ref(y, None, bias, noise, strength, act, alpha, gain, clamp)


def _epilogue_impl(y: torch.Tensor, d: torch.Tensor | None, bias: torch.Tensor | None, noise: torch.Tensor | None,
                 strength: torch.Tensor | None, act: str, alpha: float, gain: float, clamp: float,
                 backend: str) -> torch.Tensor:
    """out = clamp(gain f(y * d[n, o] + bias[o] + noise[n, 0] * strength)); noise (N | 1, 1, H, W)."""
    y, cl = _adain_layout(y)
    out = torch.empty_like(y)
    if y.numel():
        _triton().modconv_epilogue(y, _flat(d), _flat(bias), _noise_rows(noise, y.shape[0]), _flat(strength), out,
                                   ACTIVATIONS[act].code, alpha, gain, clamp, cl)
    return out


def _flat(t):
    """t itself when contiguous, else a contiguous copy: the kernels index d, bias and strength as contiguous
    arrays, so a strided or expanded one (b[::2], b.expand(C)) would be read wrong."""
    return None if t is None else t.contiguous()


def _noise_rows(noise, N: int):
    """noise (N | 1, 1, H, W) with contiguous planes and a 0 batch stride for a shared map (the kernels read
    noise[n * stride(0) + p])."""
    if noise is None:
        return None
    noise = noise.contiguous()
    return noise if noise.shape[0] == N else noise.expand(N, -1, -1, -1)


def _epilogue_fake(y, d, bias, noise, strength, act, alpha, gain, clamp, backend):
    return torch.empty_like(_adain_layout(y)[0])


def _epilogue_backward_impl(y: torch.Tensor, d: torch.Tensor | None, bias: torch.Tensor | None,
                          noise: torch.Tensor | None, strength: torch.Tensor | None, dout: torch.Tensor, act: str,
                          alpha: float, gain: float, clamp: float, backend: str
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, sums): dy (like y); sums (3, N, O) fp32 = per (n, o) sums of dv * y, dv and dv * noise."""
    y, cl = _adain_layout(y)
    dy = torch.empty_like(y)
    N, O, _, _ = y.shape
    if not y.numel():
        return dy, torch.zeros(3, N, O, dtype=torch.float32, device=y.device)
    sums = torch.empty(3, N, O, dtype=torch.float32, device=y.device)  # all written
    _triton().modconv_epilogue_bwd(y, _flat(d), _flat(bias), _noise_rows(noise, N), _flat(strength), _like(dout, y),
                                   dy, sums, ACTIVATIONS[act].code, alpha, gain, clamp, cl)
    return dy, sums


def _epilogue_backward_fake(y, d, bias, noise, strength, dout, act, alpha, gain, clamp, backend):
    y = _adain_layout(y)[0]
    return torch.empty_like(y), y.new_empty((3, y.shape[0], y.shape[1]), dtype=torch.float32)


def _epilogue_setup(ctx, inputs, output):
    y, d, bias, noise, strength, *params = inputs
    ctx.save_for_backward(y, d, bias, noise, strength)
    ctx.params = params  # act, alpha, gain, clamp, backend


def _epilogue_grads(ctx, y, d, bias, noise, strength, dy, sums):
    """The gradients of (y, d, bias, noise, strength) from the fused backward's (dy, sums)."""
    need = ctx.needs_input_grad
    dd = sums[0] if d is not None and need[1] else None
    want_b, want_s = bias is not None and need[2], strength is not None and need[4]
    db = ds = None
    if want_b or want_s:
        # the sums over the batch: one reduction and one split for both (each torch op in a backward costs ~2 us)
        _, db, ds = sums.sum(1).unbind(0)
        db = _cast(db, bias.dtype) if want_b else None
        if want_s:  # one strength (shape () or (1,)), or one per channel (O,)
            if strength.numel() == 1:
                ds = ds.sum() if strength.dim() == 0 else ds.sum().reshape(strength.shape)
            ds = _cast(ds, strength.dtype)
        else:
            ds = None
    return dy, dd, db, None, ds


def _epilogue_backward(ctx, dout):
    y, d, bias, noise, strength = ctx.saved_tensors
    dy, sums = _epilogue_backward_op(y, d, bias, noise, strength, dout, *ctx.params)
    return (*_epilogue_grads(ctx, y, d, bias, noise, strength, dy, sums), None, None, None, None, None)


def _epilogue_backward_setup(ctx, inputs, output):
    y, d, bias, noise, strength, dout, *params = inputs
    ctx.save_for_backward(y, d, bias, noise, strength, dout)
    ctx.params = params


def _epilogue_backward_ref(y, d, bias, strength, dout, noise, act, alpha, gain, clamp):
    """(dy, sums) of gankern::modconv_epilogue_backward in differentiable torch."""
    v = _epilogue_pre(y, d, bias, noise, strength)
    (dv,) = torch.autograd.grad(bias_act_ref(v, None, 1, act, alpha, gain, None if clamp < 0 else clamp), v, dout,
                                create_graph=True)
    dy = dv if d is None else dv * d[:, :, None, None].to(dv.dtype)
    nz = (dv * noise.to(dv.dtype)).sum((2, 3)) if noise is not None else torch.zeros_like(dv[:, :, 0, 0])
    return dy, torch.stack([(dv * y).sum((2, 3)), dv.sum((2, 3)), nz]).float()


def _epilogue_double_backward(ctx, ddy, dsums):
    """Second order from the reference formula; noise is a constant."""
    y, d, bias, noise, strength, dout = ctx.saved_tensors
    act, alpha, gain, clamp, _ = ctx.params
    gy, gd, gb, gs, gdout = _double_backward(
        lambda y, d, b, s, g: _epilogue_backward_ref(y, d, b, s, g, noise, act, alpha, gain, clamp),
        (y, d, bias, strength, dout), (ddy, dsums))
    return gy, gd, gb, None, gs, gdout, None, None, None, None, None


_epilogue_op = fused_op("modconv_epilogue", _epilogue_impl, _epilogue_fake, _epilogue_setup, _epilogue_backward)
_epilogue_backward_op = fused_op("modconv_epilogue_backward", _epilogue_backward_impl, _epilogue_backward_fake,
                                 _epilogue_backward_setup, _epilogue_double_backward)


def _check_epilogue(bias, noise, noise_strength, N, O, Ho, Wo, device):
    """Check the epilogue's bias (O,), noise (N | 1, 1, Ho, Wo) and noise_strength; return the strength as a
    tensor (ones when noise comes without a strength), or None without noise. Noise that requires grad is S2A's
    form (already multiplied by a learnable strength): it comes without noise_strength."""
    if bias is not None and not (_is_float_on(bias, device) and bias.dim() == 1 and bias.shape[0] == O):
        _validate.tensor("bias", bias, ndim=1, device=device)
        raise ValueError(f"bias must have O = {O} elements, got shape {tuple(bias.shape)}")
    if noise is None:
        if noise_strength is not None:
            raise ValueError("noise_strength was given without noise")
        return None
    if not (_is_float_on(noise, device) and noise.dim() == 4):
        _validate.tensor("noise", noise, ndim=4, device=device)
    n, one, h, w = noise.shape
    if (n != 1 and n != N) or one != 1 or h != Ho or w != Wo:
        raise ValueError(f"noise must have shape (N or 1, 1, H', W') = ({N} or 1, 1, {Ho}, {Wo}) or (H', W'), got "
                         f"{tuple(noise.shape)}")
    if noise_strength is None:
        return torch.ones((), device=device)
    if noise.requires_grad and torch.is_grad_enabled():
        raise ValueError("noise must not require grad when noise_strength is given (noise is then a constant map "
                         "and noise_strength the learnable part); pass noise * strength without noise_strength "
                         "for a noise that requires grad (StyleGAN2-ADA's form)")
    if not isinstance(noise_strength, torch.Tensor):
        if isinstance(noise_strength, bool) or not isinstance(noise_strength, (int, float)) or \
                not math.isfinite(noise_strength):
            raise ValueError(f"noise_strength must be a finite number or a tensor, got {noise_strength!r}")
        return torch.tensor(float(noise_strength), device=device)
    if not _is_float_on(noise_strength, device):
        _validate.tensor("noise_strength", noise_strength, device=device)
    if noise_strength.dim() > 1 or noise_strength.numel() not in (1, O):
        raise ValueError(f"noise_strength must be a scalar or (O,) = ({O},) per channel, got shape "
                         f"{tuple(noise_strength.shape)}")
    return noise_strength


def _epilogue(y, d, bias, noise, strength, act, alpha, gain, clamp, backend):
    """The fused epilogue; noise that requires grad (S2A's form) is added by torch first (the fused backward
    treats the noise map as a constant), then bias_act."""
    if noise is not None and noise.requires_grad and torch.is_grad_enabled():
        v = (y if d is None else y * d[:, :, None, None].to(y.dtype)) + noise.to(y.dtype)
        if bias is None and act == "linear" and gain == 1 and clamp < 0:
            return v
        return bias_act(v, bias, 1, act, alpha, gain, None if clamp < 0 else clamp)
    return _epilogue_op(y, d, bias, noise, strength, act, alpha, gain, clamp, backend)


def noise_bias_act(x: torch.Tensor, noise: torch.Tensor, noise_strength: torch.Tensor | float | None = None,
                   b: torch.Tensor | None = None, act: str = "lrelu", alpha: float | None = None,
                   gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Noise injection fused with bias_act (StyleGAN's per-pixel noise times a learned strength, one pass):
    ``bias_act(x + noise * noise_strength, b, act=act, ...)``.

    Args:
        x: (N, C, H, W); noise: (N or 1, 1, H, W), a constant; noise_strength: float, one element or (C,);
        b, act, alpha, gain, clamp: as in :func:`bias_act` (b along dim 1).
    Returns:
        (N, C, H, W), dtype and layout of x.
    """
    _x4(x)
    N, C, H, W = x.shape
    device = x.device
    _, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    if noise is None:
        raise ValueError("noise must be a tensor (N or 1, 1, H, W); for no noise use bias_act")
    noise_strength = _check_epilogue(b, noise, noise_strength, N, C, H, W, device)
    backend = _backend.select(device, x.dtype, TRITON_ONLY, KERNEL_DTYPES)
    if backend == "ref":
        return _epilogue_ref(x, None, b, noise, noise_strength, act, alpha, gain, clamp)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: noise_bias_act "
                                          "has Triton kernels only (use the triton backend)")
    return _epilogue(x, None, b, noise, noise_strength, act, alpha, gain, clamp, backend)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, down: int = 1, padding=0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True, *,
                     bias: torch.Tensor | None = None, noise_strength: torch.Tensor | float | None = None,
                     act: str = "linear", alpha: float | None = None, gain: float | None = None,
                     clamp: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2's modulated convolution with StyleGAN2-ADA's signature (training/networks.py), plus gankern's
    output epilogue (keyword-only): ``act(conv(x, weight * s[n]) * d[n, o] + bias + noise * noise_strength) * gain``,
    clamped. Without the extras it is S2A's ``conv * d + noise``.

    Computed as x * s (one pass), one ordinary convolution (cuDNN; conv2d_resample with the FIR filter when up/down
    > 1), and one fused epilogue kernel (demodulation, bias, noise, activation, gain, clamp) whose backward is one
    fused kernel too; d[n, o] comes from an (N, I) @ (I, O) product (:func:`demodulation_coefficients`). fp16 x with
    demodulation: weight and styles are pre-normalized as S2A does (no fp16 overflow; the result is unchanged).

    Args:
        x: (N, I, H, W) fp32/bf16/fp16 (fp64 on ref); weight: (O, I, kh, kw); styles: (N, I).
        noise: S2A's form, added after demodulation: (N or 1, 1, H', W') or a (H', W') map shared by the batch
            (S2A's noise_mode="const"); may require grad (S2A multiplies it by its learnable strength first). With
            ``noise_strength`` it is a constant map (no grad) and the product is fused.
        up, down: 1 or 2 (any int >= 1), FIR resampling with ``resample_filter`` (default [1, 3, 3, 1]).
        padding: int, [px, py] or [px0, px1, py0, py1] (default 0, as S2A; kh // 2 keeps the size of odd kernels).
        demodulate: scale each output channel of each sample to unit expected norm (StyleGAN2's demodulation).
        flip_weight: False for a true convolution (StyleGAN2 uses flip_weight = (up == 1)).
        fused_modconv: accepted for S2A's callers; both of S2A's paths have one meaning, computed as above.
        bias: (O,); noise_strength: a float, a one-element tensor or (O,) per channel (StyleGAN); learnable.
        act, alpha, gain, clamp: as in :func:`bias_act`.
        eps: added inside the demodulation's rsqrt.
    Returns:
        (N, O, H', W') in x's dtype.
    """
    from .resample import conv2d_resample, conv2d_resample_size, setup_filter
    _validate.tensor("x", x, ndim=4)
    _validate.tensor("weight", weight, ndim=4, device=x.device)
    _validate.tensor("styles", styles, ndim=2, device=x.device)
    N, I, H, W = x.shape
    O, wi, kh, kw = weight.shape
    if wi != I:
        raise ValueError(f"weight has {wi} input channels but x has {I} (x {tuple(x.shape)}, weight "
                         f"{tuple(weight.shape)})")
    if tuple(styles.shape) != (N, I):
        raise ValueError(f"styles must have shape (N, I) = {(N, I)} for x of shape {tuple(x.shape)}, got "
                         f"{tuple(styles.shape)}")
    up, down = _validate.positive_int("up", up), _validate.positive_int("down", down)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    _, alpha, gain, clamp = _act_params(act, alpha, gain, clamp)
    if resample_filter is None and (up > 1 or down > 1):
        resample_filter = setup_filter([1, 3, 3, 1], device=x.device)
    Ho, Wo = conv2d_resample_size(H, W, kh, kw, resample_filter, up, down, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"the convolution of x {tuple(x.shape)} with weight {tuple(weight.shape)}, padding "
                         f"{padding}, up={up}, down={down} would have an empty output ({Ho} x {Wo})")
    if noise is not None:
        _validate.tensor("noise", noise, ndim=(2, 4), device=x.device)
    noise = _noise_4d(noise)
    noise_strength = _check_epilogue(bias, noise, noise_strength, N, O, Ho, Wo, x.device)
    backend = _backend.select(x.device, x.dtype, TRITON_ONLY, KERNEL_DTYPES)
    if backend == "ref":
        return modulated_conv2d_ref(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                                    flip_weight, bias=bias, noise_strength=noise_strength, act=act, alpha=alpha,
                                    gain=gain, clamp=None if clamp < 0 else clamp, eps=eps)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: modulated_conv2d "
                                          "has Triton kernels only (use the triton backend)")
    weight, styles = _s2a_fp16_prenormalize(x, weight, styles, demodulate)
    xs = x * styles.to(x.dtype)[:, :, None, None]
    y = conv2d_resample(xs, weight.to(x.dtype), resample_filter, up, down, padding, flip_weight=flip_weight)
    d = demodulation_coefficients(weight, styles, eps) if demodulate else None
    return _epilogue(y, d, bias, noise, noise_strength, act, alpha, gain, clamp, backend)
