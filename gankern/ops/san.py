"""San family: the normalization constants of sparsity-aware normalization (Kligvasser & Michaeli, "Sparsity Aware
Normalization for GANs", AAAI 2021).

Meaning. A convolution with weight w (O, I, kh, kw) acting by circular convolution on inputs of spatial size (H, W)
has, per kernel pair (o, i), the frequency response w^_oi(u, v) = sum_{a, b} w[o, i, a, b] e^{-2 pi j (a u / H +
b v / W)} (taps beyond the input wrap around, as a circular convolution does). SAN's constant is

    s(w) = max over o, i, u, v of |w^_oi(u, v)|,

the gain of the layer on channel-sparse inputs (the paper's definition: the complex magnitude of each kernel's
DFT, as the authors' code computed it with ``torch.rfft(..., onesided=False)`` before torch 1.7; their port to
``torch.fft.fft2`` takes ``torch.norm(..., dim=-1)`` over the last *frequency* axis instead, a different quantity,
which gankern does not follow). A linear layer (O, I) is the 1 x 1 case: s = max |W_oi|. The layer then uses
W / (gain * s + eps) (:func:`gankern.nn.utils.sparsity_aware_norm`).

Gradient (first order): ds/dw is non-zero on the maximizing pair only: with w^ = re + j im at the maximizing
frequency, ds/dw[o*, i*, a, b] = (re cos phi_ab - im sin phi_ab) / |w^|, phi_ab = 2 pi (a u* / H + b v* / W).

The Triton kernel (gankern/kernels/san.py) evaluates each kernel's DFT at the frequencies on the fly from its k x k
taps, on the half plane v <= W // 2 (a real kernel's spectrum is Hermitian), and reduces to the maximum without
storing the spectrum; all layers of a model go in one launch (and one more reduces each layer's items). The
reference twin zero-pads (folds) each kernel to (H, W) and calls torch.fft.fft2: for a 512 x 512 3 x 3 layer at 64 x
64 that spectrum is 8.6 GB of complex64. Floor: 4 FLOPs per (pair, frequency, tap) on the fp32 CUDA cores (re and im
multiply-adds) over the half plane: for that layer 262144 pairs x 2112 frequencies x 9 taps x 4 = 2.0e10 FLOPs, 0.30
ms at an H100's 67 TFLOP/s; bytes (the 9.4 MB of weights) are negligible. Speed: not measured on a GPU yet
(bench/bench_san.py).

Backends: ref (eager torch.fft, any float dtype) and triton (fp32 / fp16 / bf16 weights, fp32 arithmetic): two
launches forward (every layer's work items, then each layer's maximum and maximizer), one (after a zero fill)
backward. Default on CUDA tensors: triton. There is no CUDA C++ kernel.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, fused_op, kernels

PREFERENCE = ("triton",)
KERNEL_DTYPES = {"triton": CUDA_DTYPES}
_FIELDS = 5  # per layer in the op's ``shapes`` list: pairs O * I, kh, kw, H, W
_empty = torch.empty  # allocation of the kernel's outputs (the tests fill them with NaN)

__all__ = ["san_constant", "san_constants"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The constants' dtype: float64 for float64 weights, else float32."""
    return torch.promote_types(dtype, torch.float32)


def _layers(w_flat: torch.Tensor, shapes: Sequence[int]):
    """Per layer: (its kernels (P, kh, kw) viewed in w_flat, H, W)."""
    offset = 0
    for l in range(0, len(shapes), _FIELDS):
        P, kh, kw, H, W = shapes[l:l + _FIELDS]
        yield w_flat[offset:offset + P * kh * kw].view(P, kh, kw), H, W
        offset += P * kh * kw


# ----------------------------------------------------------------------------------------------------------------
# reference twin

def _spectrum_ref(w: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """w (P, kh, kw) -> |DFT| (P, H, W) of the kernels zero-padded to (H, W), taps past the size wrapped around."""
    P, kh, kw = w.shape
    nh, nw = -(-kh // H), -(-kw // W)
    folded = F.pad(w, (0, nw * W - kw, 0, nh * H - kh)).view(P, nh, H, nw, W).sum((1, 3))
    return torch.fft.fft2(folded).abs()


def _constants_ref(w_flat: torch.Tensor, shapes: Sequence[int]):
    """-> s (L,), arg (L, 3) int64 rows (pair, u, v) of each layer's maximum."""
    s, arg = [], []
    for w, H, W in _layers(w_flat, shapes):
        mag = _spectrum_ref(w, H, W).flatten()
        i = torch.argmax(torch.nan_to_num(mag, nan=-1.0))
        s.append(mag.max())
        arg.append(torch.stack([i // (H * W), i // W % H, i % W]))
    return torch.stack(s), torch.stack(arg)


# ----------------------------------------------------------------------------------------------------------------
# triton backend

class _Table:
    """The kernels' layer table and work list of one layout (``shapes``), on one device: built once, one
    host-to-device copy."""

    def __init__(self, shapes: tuple[int, ...], device: torch.device):
        k = kernels("san")
        rows, items, offset = [], [], 0
        for l, i in enumerate(range(0, len(shapes), _FIELDS)):
            P, kh, kw, H, W = shapes[i:i + _FIELDS]
            nfreq = H * (W // 2 + 1)
            pf = torch.cartesian_prod(torch.arange(0, P, k.BP), torch.arange(0, nfreq, k.BF)).view(-1, 2)
            row = dict(offset=offset, pairs=P, kh=kh, kw=kw, H=H, W=W, nfreq=nfreq, item0=sum(map(len, items)),
                       nitems=len(pf))
            rows.append([row[c] for c in k.LAYER_COLUMNS])
            items.append(torch.cat([torch.full((len(pf), 1), l), pf], 1))  # rows (layer, first pair, first freq)
            offset += P * kh * kw
        self.shapes = shapes
        self.layers = torch.tensor(rows, dtype=torch.int64).to(device)
        self.items = torch.cat(items).to(device=device, dtype=torch.int32)
        self.n_items, self.n_layers = self.items.shape[0], len(rows)


_TABLES: dict = {}  # (shapes tuple, device) -> _Table


def _table(shapes, device: torch.device) -> _Table:
    key = (shapes if type(shapes) is tuple else tuple(shapes), device)
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES[key] = _Table(key[0], device)
    return t


def _constants_triton(w_flat: torch.Tensor, shapes: list[int]):
    """Two launches: every layer's items, then each layer's maximum and maximizer."""
    t = _table(shapes, w_flat.device)
    part = _empty(2 * t.n_items, device=w_flat.device, dtype=torch.float32)
    s = _empty(t.n_layers, device=w_flat.device, dtype=torch.float32)
    arg = torch.empty((t.n_layers, 3), device=w_flat.device, dtype=torch.int64)  # (int: cannot hold the NaN poison)
    kernels("san").constants(w_flat, t.layers, t.items, part, s, arg)
    return s, arg


def _grad_triton(w_flat: torch.Tensor, shapes: list[int], arg: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
    t = _table(shapes, w_flat.device)
    dw = torch.zeros_like(w_flat)
    kernels("san").grad(w_flat, t.layers, arg, gs, dw)
    return dw


# ----------------------------------------------------------------------------------------------------------------
# torch.library op: gankern::san_constants (w_flat, shapes, backend) -> (s (L,), arg (L, 3))

def _constants_impl(w_flat: torch.Tensor, shapes: list[int], backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "ref":
        s, arg = _constants_ref(w_flat.to(_acc_dtype(w_flat.dtype)), shapes)
        return s.to(_acc_dtype(w_flat.dtype)), arg
    return _constants_triton(w_flat, shapes)


def _constants_fake(w_flat, shapes, backend):
    L = len(shapes) // _FIELDS
    return w_flat.new_empty(L, dtype=_acc_dtype(w_flat.dtype)), w_flat.new_empty((L, 3), dtype=torch.int64)


def _constants_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.shapes, ctx.backend = inputs[1], inputs[2]


def _constants_backward(ctx, gs, garg):
    """dw_flat: on each layer's maximizing pair, gs * d|w^(u*, v*)| / dw (formula in the module docstring)."""
    w_flat, arg = ctx.saved_tensors
    if ctx.backend != "ref":
        return _grad_triton(w_flat, ctx.shapes, arg, gs), None, None
    grads = []
    for l, (w, H, W) in enumerate(_layers(w_flat, ctx.shapes)):
        P, kh, kw = w.shape
        pair, u, v = (int(t) for t in arg[l])
        a = torch.arange(kh, device=w.device, dtype=torch.float64)[:, None]
        b = torch.arange(kw, device=w.device, dtype=torch.float64)[None, :]
        phi = 2 * math.pi * ((a * u % H) / H + (b * v % W) / W)
        taps = w[pair].double()
        re, im = (taps * phi.cos()).sum(), -(taps * phi.sin()).sum()
        mag = torch.sqrt(re * re + im * im)
        g = torch.zeros(P, kh, kw, device=w.device, dtype=torch.float64)
        g[pair] = torch.where(mag > 0, (re * phi.cos() - im * phi.sin()) / mag, 0.0) * gs[l].double()
        grads.append(g.flatten())
    return torch.cat(grads).to(w_flat.dtype), None, None


_constants_op = fused_op("san_constants", _constants_impl, _constants_fake, _constants_setup, _constants_backward)


# ----------------------------------------------------------------------------------------------------------------
# public API

def _size(name: str, size, weight: torch.Tensor) -> tuple[int, int]:
    if weight.ndim == 2:
        return 1, 1
    if size is None:
        raise ValueError(f"{name} is needed for a convolution weight {tuple(weight.shape)}: the (H, W) of its input")
    try:
        H, W = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (H, W) of positive ints, got {size!r}") from None
    if H < 1 or W < 1 or H * W >= 2 ** 30 or tuple(size) != (H, W):
        raise ValueError(f"{name} must be a pair (H, W) of positive ints with H * W < 2^30, got {size!r}")
    return H, W


def _shapes(weights: list, input_sizes) -> tuple[int, ...]:
    """The op's ``shapes`` of a call (_FIELDS ints per layer), every argument checked."""
    if not weights:
        raise ValueError("weights must hold at least one weight")
    input_sizes = [None] * len(weights) if input_sizes is None else list(input_sizes)
    if len(input_sizes) != len(weights):
        raise ValueError(f"input_sizes must have one entry per weight ({len(weights)}), got {len(input_sizes)}")
    shapes = []
    for l, w in enumerate(weights):
        _validate.tensor(f"weights[{l}]", w, ndim=(2, 4))
        _validate.tensor(f"weights[{l}]", w, dtypes=(weights[0].dtype,), device=weights[0].device)
        if w.numel() == 0:
            raise ValueError(f"weights[{l}] must not be empty, got shape {tuple(w.shape)}")
        kh, kw = w.shape[2:] if w.ndim == 4 else (1, 1)
        shapes += [w.shape[0] * w.shape[1], kh, kw, *_size(f"input_sizes[{l}]", input_sizes[l], w)]
    return tuple(shapes)


# (input sizes, (shape, dtype, device) of each weight) -> the checked ``shapes`` of such a call: a call whose key is
# here was checked already (the key holds everything the checks read)
_PLANS: dict = {}
_PLANS_MAX = 1024


def san_constants(weights: Sequence[torch.Tensor], input_sizes: Sequence | None = None) -> torch.Tensor:
    """SAN's normalization constants of many layers, in two kernel launches (differentiable, first order).

    Args:
        weights: L weights on one device, one dtype: (O, I) of a Linear or (O, I, kh, kw) of a Conv2d.
        input_sizes: per weight the (H, W) of the convolution's input (None or ignored for a Linear).
    Returns:
        s: (L,), float32 (float64 for float64 weights): s[l] = max over kernel pairs and frequencies of the
        magnitude of the kernels' DFT at size (H, W) (module docstring); for a Linear max |W|.
    """
    if not isinstance(weights, (list, tuple)):
        weights = list(weights)
    key = None
    try:
        key = (input_sizes if input_sizes is None else tuple(input_sizes),
               *[(w.shape, w.dtype, w.device) for w in weights])
        shapes = _PLANS[key]
    except (KeyError, TypeError, AttributeError):  # a new layout, unhashable sizes or a bad argument: check it all
        shapes = _shapes(weights, input_sizes)
        if isinstance(key, tuple) and not torch.compiler.is_compiling():
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            with contextlib.suppress(TypeError):  # unhashable sizes: checked at every call
                _PLANS[key] = shapes
    w0 = weights[0]
    backend = _backend.select(w0.device, w0.dtype, PREFERENCE, KERNEL_DTYPES)
    return _constants_op(torch.cat([w.reshape(-1) for w in weights]), shapes, backend)[0]


def san_constant(weight: torch.Tensor, input_size=None) -> torch.Tensor:
    """SAN's normalization constant of one layer: ``san_constants([weight], [input_size])[0]`` (a 0-dim tensor)."""
    return san_constants([weight], [input_size])[0]
