"""FIR resampling as StyleGAN2 uses it: upfirdn2d and its helpers upsample2d / downsample2d / filter2d, and
conv2d_resample (a convolution fused with up/down-sampling through upfirdn2d), with StyleGAN2-ADA's meanings.

upfirdn2d(x, f, up, down, padding, flip_filter, gain): insert up-1 zeros after each pixel, pad by
padding = [px0, px1, py0, py1] (negative values crop), convolve each channel with f (a true convolution, i.e.
correlation with the flipped filter, unless flip_filter), multiply by gain, keep every down-th pixel. A 1-D f is
separable (applied along x then y, each with gain ** 0.5); a 2-D f is (fh, fw). The filter is a constant (no
gradient); the gradient w.r.t. x is itself an upfirdn2d, so every order of gradients comes from the same op.

Backends: ref (eager torch), triton (one polyphase kernel: each output phase visits only its own taps).
Floor: read x once and write the output once. Speed: not measured on a GPU yet.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, fused_op, kernels, s2a_impl

__all__ = ["upfirdn2d", "upfirdn2d_ref", "upsample2d", "downsample2d", "filter2d", "setup_filter",
           "conv2d_resample", "conv2d_resample_size"]

PREFERENCE = ("triton",)
KERNEL_DTYPES = {"triton": CUDA_DTYPES}


# ----------------------------------------------------------------------------------------------------------------
# argument parsing


def _pair(name: str, v, minimum: int) -> tuple[int, int]:
    """An int or [x, y] -> (x, y), each an int >= minimum."""
    kind = type(v)
    if kind is int and v >= minimum:  # the common cases, without the general checks
        return v, v
    if (kind is tuple or kind is list) and len(v) == 2:
        a, b = v
        if type(a) is int and type(b) is int and a >= minimum and b >= minimum:
            return a, b
    vals = [v, v] if isinstance(v, int) and not isinstance(v, bool) else list(v) if isinstance(v, (list, tuple)) \
        else None
    if vals is None or len(vals) != 2 or any(isinstance(a, bool) or not isinstance(a, int) or a < minimum
                                             for a in vals):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair [x, y] of them, got {v!r}")
    return vals[0], vals[1]


def _padding(padding) -> tuple[int, int, int, int]:
    """int, [px, py] or [px0, px1, py0, py1] -> (px0, px1, py0, py1)."""
    kind = type(padding)
    if kind is int:
        return (padding,) * 4
    if (kind is list or kind is tuple) and len(padding) == 4:  # the common forms, without the general checks
        a, b, c, d = padding
        if type(a) is int and type(b) is int and type(c) is int and type(d) is int:
            return a, b, c, d
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * 4
    if isinstance(padding, (list, tuple)) and all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
        if len(padding) == 2:
            return padding[0], padding[0], padding[1], padding[1]
        if len(padding) == 4:
            return tuple(padding)
    raise ValueError(f"padding must be an int, [px, py] or [px0, px1, py0, py1] of ints, got {padding!r}")


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh)."""
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.dim() == 2 else (f.shape[0], f.shape[0])


_FILTER_DTYPES = (torch.float32, torch.float64)
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def _check_filter(f, device) -> torch.Tensor:
    if f is None:
        return torch.ones(1, 1, dtype=torch.float32, device=device)
    if not (isinstance(f, torch.Tensor) and f.dtype in _FILTER_DTYPES and 0 < f.dim() < 3 and f.device == device):
        _validate.tensor("f", f, ndim=(1, 2), dtypes=_FILTER_DTYPES, device=device)  # raises, naming the problem
    if f.requires_grad and _grad_enabled():
        raise ValueError("f must not require grad: upfirdn2d's filter is a constant (register it as a buffer)")
    # emptiness and a NaN / Inf tap (which would reach only some outputs in the kernel: it skips taps that land on
    # inserted zeros and padding, where the reference makes all of them NaN) are refused. Checked once per filter
    # and version of its contents (a filter is a constant buffer), so the host sync is not paid on every call
    # (inference tensors have no version counter: checked on every call).
    if _is_compiling():
        return f
    try:
        version = f._version
    except RuntimeError:  # an inference tensor
        version = None
    if version is None or f.__dict__.get("_gankern_checked_version") != version:
        if f.numel() == 0:
            raise ValueError(f"f must not be empty, got shape {tuple(f.shape)}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"f has non-finite values (NaN or inf): {f.tolist()}")
        f._gankern_checked_version = version
    return f


def setup_filter(f, device: torch.device | str = "cpu", normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """A filter for upfirdn2d from a list / tensor: float32, normalized to sum 1 (then times gain), 1-D when
    separable (default: 1-D input with >= 8 taps), else 2-D (the outer product of a 1-D input with itself)."""
    f = torch.as_tensor([1.0] if f is None else f, dtype=torch.float32)
    if f.dim() == 0:
        f = f[None]
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"the filter must be 1-D or 2-D and not empty, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.dim() == 1 and f.numel() >= 8
    if f.dim() == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.dim())))
    return (f * (gain ** (f.dim() / 2))).to(device)


# ----------------------------------------------------------------------------------------------------------------
# reference twin


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
                  gain: float = 1) -> torch.Tensor:
    """Eager twin of :func:`upfirdn2d` (zero insertion by reshape, pad/crop, depthwise conv2d, strided slice)."""
    f = torch.ones(1, 1, dtype=torch.float32, device=x.device) if f is None else f
    upx, upy = _pair("up", up, 1)
    downx, downy = _pair("down", down, 1)
    px0, px1, py0, py1 = _padding(padding)
    N, C, H, W = x.shape
    x = x.reshape(N, C, H, 1, W, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1]).reshape(N, C, H * upy, W * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.dim() / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.dim())))
    f = f[None, None].repeat([C, 1] + [1] * f.dim())
    if f.dim() == 4:
        x = F.conv2d(x, f, groups=C)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=C)
        x = F.conv2d(x, f.unsqueeze(3), groups=C)
    return x[:, :, ::downy, ::downx]


# ----------------------------------------------------------------------------------------------------------------
# kernel op


def _out_size(H, W, f, up, down, pad) -> tuple[int, int]:
    fw, fh = _filter_size(f)
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    return (H * upy + py0 + py1 - fh) // downy + 1, (W * upx + px0 + px1 - fw) // downx + 1


# per (x shape, x strides, f shape, up, down, padding, flip_filter): [output shape, output strides, the kernel's
# launch plan (made at the first launch)]; a few entries per layer of a model
_PLANS: dict = {}
_MAX_PLANS = 4096


def _checked_out_size(x, f, up, down, padding) -> tuple[int, int]:
    """_out_size, or a ValueError for an empty output."""
    Ho, Wo = _out_size(x.shape[2], x.shape[3], f, up, down, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"upfirdn2d of x {tuple(x.shape)} with a {tuple(f.shape)} filter, up={tuple(up)}, "
                         f"down={tuple(down)}, padding={tuple(padding)} would have an empty output ({Ho} x {Wo})")
    return Ho, Wo


def _plan(x: torch.Tensor, f: torch.Tensor, up, down, padding, flip_filter: bool) -> list:
    """The cached output layout and launch of one call (ValueError for an empty output, before any launch)."""
    key = (x.shape, x.stride(), f.shape, tuple(up), tuple(down), tuple(padding), flip_filter)
    plan = _PLANS.get(key)
    if plan is None:
        Ho, Wo = _checked_out_size(x, f, up, down, padding)
        shape = (x.shape[0], x.shape[1], Ho, Wo)
        strides = torch.empty(shape, device="meta", memory_format=_memory_format(x)).stride()
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = [shape, strides, None]
    return plan


def _upfirdn2d_impl(x: torch.Tensor, f: torch.Tensor, up: list[int], down: list[int], padding: list[int],
                  flip_filter: bool, gain: float, backend: str) -> torch.Tensor:
    plan = _plan(x, f, up, down, padding, flip_filter)
    shape, strides, launch = plan
    out = x.new_empty_strided(shape, strides)
    if out.numel():
        k = kernels("resample")
        if launch is None:
            launch = plan[2] = k.plan(x.shape, x.stride(), f.shape, shape, strides, up, down,
                                      (padding[0], padding[2]), flip_filter)
        k.launch(launch, x, f.contiguous(), out, gain)
    return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


def _upfirdn2d_fake(x, f, up, down, padding, flip_filter, gain, backend):
    Ho, Wo = _checked_out_size(x, f, up, down, padding)
    return torch.empty((x.shape[0], x.shape[1], Ho, Wo), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(x))


def _upfirdn2d_setup(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain, backend = inputs
    ctx.save_for_backward(f)
    ctx.in_size = x.shape[2:]
    ctx.args = (up, down, padding, flip_filter, gain, backend)


def _upfirdn2d_backward(ctx, dy):
    """dx = upfirdn2d(dy, f, up=down, down=up, flipped filter, padding that undoes the forward's)."""
    (f,) = ctx.saved_tensors
    (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain, backend = ctx.args
    fw, fh = _filter_size(f)
    H, W = ctx.in_size
    Ho, Wo = dy.shape[2:]
    p = (fw - px0 - 1, W * upx - Wo * downx + px0 - upx + 1, fh - py0 - 1, H * upy - Ho * downy + py0 - upy + 1)
    dx = _upfirdn2d_op(dy, f, (downx, downy), (upx, upy), p, not flip_filter, gain, backend)
    return dx, None, None, None, None, None, None, None


_upfirdn2d_op = fused_op("upfirdn2d", _upfirdn2d_impl, _upfirdn2d_fake, _upfirdn2d_setup, _upfirdn2d_backward)


# ----------------------------------------------------------------------------------------------------------------
# public API


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1, impl: str | None = None) -> torch.Tensor:
    """Upsample, FIR-filter and downsample a batch of images (StyleGAN2-ADA's meaning and signature).

    Args:
        x: (N, C, H, W), contiguous or channels_last, fp32/bf16/fp16 (fp64 on ref).
        f: (fh, fw) filter, or (ft,) separable filter, fp32 (or None: identity). A constant: no gradient.
        up, down: int or [x, y], >= 1.
        padding: int, [px, py] or [px0, px1, py0, py1] (applied after upsampling; negative values crop).
        flip_filter: False: convolution (the filter is flipped for the correlation); True: correlation.
        gain: overall scale of the output.
        impl: StyleGAN2-ADA's argument: "ref" runs the reference twin, "cuda" or None the default backend choice.
    Returns:
        (N, C, (H * up_y + py0 + py1 - fh) // down_y + 1, (W * up_x + px0 + px1 - fw) // down_x + 1), dtype of x.
    """
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.dtype in _validate.FLOATS):
        _validate.tensor("x", x, ndim=4)  # raises, naming the problem
    if impl is not None:
        impl = s2a_impl(impl)
    f = _check_filter(f, x.device)
    up, down, padding = _pair("up", up, 1), _pair("down", down, 1), _padding(padding)
    if not (type(gain) is float or type(gain) is int) or not math.isfinite(gain):
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain):
            raise ValueError(f"gain must be a finite number, got {gain!r}")
    flip_filter = bool(flip_filter)
    backend = "ref" if impl == "ref" else _backend.select(x.device, x.dtype, PREFERENCE, KERNEL_DTYPES)
    if backend == "ref":
        _checked_out_size(x, f, up, down, padding)
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: upfirdn2d has a "
                                          "Triton kernel only (use the triton backend)")
    return _upfirdn2d_op(x, f, up, down, padding, flip_filter, float(gain), backend)  # its plan checks the sizes


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter x with f, keeping its size (plus padding): x (N, C, H, W) -> (N, C, H + px0 + px1, W + py0 + py1)."""
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by ``up`` with filter f (gain up_x * up_y keeps the mean): (N, C, H, W) -> (N, C, H*up, W*up)."""
    upx, upy = _pair("up", up, 1)
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter with f and downsample by ``down``: (N, C, H, W) -> (N, C, H / down, W / down)."""
    downx, downy = _pair("down", down, 1)
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding=0, groups: int = 1, flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """conv2d(x, w) with FIR up/down-sampling around it (StyleGAN2's conv2d_resample): up > 1 is a transposed
    convolution of stride up followed by filtering with f; down > 1 filters with f and then convolves with stride
    down. x (N, I*groups... ) as conv2d: x (N, groups * I, H, W), w (O, I, kh, kw) -> (N, O, H', W').
    flip_weight=False flips w (a true convolution), as StyleGAN2 does for its upsampling layers; flip_filter as in
    :func:`upfirdn2d` (StyleGAN2-ADA's signature)."""
    _validate.tensor("x", x, ndim=4)
    _validate.tensor("w", w, ndim=4, device=x.device)
    up, down = _validate.positive_int("up", up), _validate.positive_int("down", down)
    groups = _validate.positive_int("groups", groups)
    if f is not None:
        _check_filter(f, x.device)
    O, I, kh, kw = w.shape
    if x.shape[1] != groups * I or O % groups:
        raise ValueError(f"x {tuple(x.shape)} and w {tuple(w.shape)} do not fit groups={groups}: x needs groups * I "
                         f"= {groups * I} channels and O must be a multiple of groups")
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    def conv(x, w, stride=1, padding=0, transpose=False, flip=flip_weight):
        if not flip and (kw > 1 or kh > 1):
            w = w.flip([2, 3])
        if transpose:
            return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
        return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)

    if up > 1:
        # [O, I, k, k] -> [groups * I, O / groups, k, k] for the transposed convolution
        wt = w.reshape(groups, O // groups, I, kh, kw).transpose(1, 2).reshape(groups * I, O // groups, kh, kw)
        px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
        pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
        x = conv(x, wt, stride=up, padding=[pyt, pxt], transpose=True, flip=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up,
                      flip_filter=flip_filter)
        return upfirdn2d(x, f, down=down, flip_filter=flip_filter) if down > 1 else x
    if down > 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return conv(x, w, stride=down)
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return conv(x, w, padding=[py0, px0])
    return conv(upfirdn2d(x, None, padding=[px0, px1, py0, py1]), w)


def conv2d_resample_size(H: int, W: int, kh: int, kw: int, f: torch.Tensor | None, up: int = 1, down: int = 1,
                         padding=0) -> tuple[int, int]:
    """The (H', W') that :func:`conv2d_resample` gives, without running it."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding(padding)

    def axis(S, k, ft, p0, p1):
        if up > 1:
            p0, p1 = p0 + (ft + up - 1) // 2 - (k - 1), p1 + (ft - up) // 2 - (k - up)
            if down > 1:
                p0, p1 = p0 + (ft - down + 1) // 2, p1 + (ft - down) // 2
            pt = max(min(-p0, -p1), 0)
            S = (S - 1) * up - 2 * pt + k + (p0 + pt) + (p1 + pt) - ft + 1
            return (S - ft) // down + 1 if down > 1 else S
        if down > 1:
            p0, p1 = p0 + (ft - down + 1) // 2, p1 + (ft - down) // 2
            return (S + p0 + p1 - ft + 1 - k) // down + 1
        return S + p0 + p1 - k + 1

    return axis(H, kh, fh, py0, py1), axis(W, kw, fw, px0, px1)
