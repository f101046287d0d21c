"""The augment family: the resampling and color steps of ADA's pipeline (gankern.augment.AugmentPipe), each one
pass over the images.

affine_grid_sample(x, theta, size): bilinear resampling of x at the positions F.affine_grid(theta, size) gives
(zeros padding, align_corners=False), the positions computed in the kernel: neither the (N, Ho, Wo, 3) base grid
nor the (N, Ho, Wo, 2) grid of the eager path is written, read or kept for the backward (the eager path keeps the
grid and x, the 2x up-sampled image of the pipe: about 1.2 GB at paper256's batch 64). color_transform(x, M): a
per-image 4x4 color matrix on RGB pixels (the luma form for C = 1). Both are linear in x: the gradient of each is
its adjoint (a scatter for the resampling, the transposed matrix for the color), and the gradient of that adjoint is
the forward again, so every order of gradients (R1 on augmented reals) runs the same two kernels. theta and M are
constants (random draws): they take no gradient and are refused when they require one.

Backends: ref (eager torch: F.affine_grid + F.grid_sample; a bmm + add), triton. Floors: see
gankern/kernels/augment.py. Speed: not measured on a GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, fused_op, kernels

__all__ = ["affine_grid_sample", "affine_grid_sample_ref", "color_transform", "color_transform_ref"]

PREFERENCE = ("triton",)
KERNEL_DTYPES = {"triton": CUDA_DTYPES}


# ----------------------------------------------------------------------------------------------------------------
# reference twins


def affine_grid_sample_ref(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Eager twin of :func:`affine_grid_sample`: F.affine_grid (in x's dtype) then F.grid_sample."""
    Ho, Wo = x.shape[2:] if size is None else size
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], Ho, Wo], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_transform_ref(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Eager twin of :func:`color_transform` (S2A's: a bmm and an add; C = 1 takes the matrix averaged over RGB)."""
    N, C, H, W = x.shape
    flat = x.reshape(N, C, H * W)
    M = M.to(x.dtype)
    if C == 3:
        flat = M[:, :3, :3] @ flat + M[:, :3, 3:]
    else:
        Mg = M[:, :3, :].mean(dim=1, keepdim=True)  # (N, 1, 4)
        flat = flat * Mg[:, :, :3].sum(dim=2, keepdim=True) + Mg[:, :, 3:]
    return flat.reshape(N, C, H, W)


# ----------------------------------------------------------------------------------------------------------------
# kernel ops: resampling (forward and its adjoint, each the other's gradient)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


def _sample_impl(x: torch.Tensor, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    out = torch.empty((x.shape[0], x.shape[1], height, width), dtype=x.dtype, device=x.device,
                      memory_format=_memory_format(x))
    if out.numel():
        kernels("augment").affine_grid_sample(x, theta, out)
    return out


def _sample_fake(x, theta, height, width):
    return torch.empty((x.shape[0], x.shape[1], height, width), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(x))


def _sample_setup(ctx, inputs, output):
    x, theta, height, width = inputs
    ctx.save_for_backward(theta)
    ctx.sizes = (x.shape[2], x.shape[3])


def _sample_backward(ctx, dy):
    (theta,) = ctx.saved_tensors
    return _sample_grad_op(dy, theta, *ctx.sizes), None, None, None


def _sample_grad_impl(dy: torch.Tensor, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """dx (N, C, height, width) = the adjoint of the resampling applied to dy (N, C, Ho, Wo)."""
    N, C = dy.shape[:2]
    acc = torch.zeros((N, C, height, width), dtype=torch.float32, device=dy.device)
    if acc.numel() and dy.numel():
        kernels("augment").affine_grid_sample_grad(dy, theta, acc)
    return acc if dy.dtype == torch.float32 else acc.to(dy.dtype)


def _sample_grad_fake(dy, theta, height, width):
    return dy.new_empty((dy.shape[0], dy.shape[1], height, width))


def _sample_grad_setup(ctx, inputs, output):
    dy, theta, height, width = inputs
    ctx.save_for_backward(theta)
    ctx.sizes = (dy.shape[2], dy.shape[3])


def _sample_grad_backward(ctx, ddx):
    (theta,) = ctx.saved_tensors
    return _sample_op(ddx, theta, *ctx.sizes), None, None, None


_sample_op = fused_op("affine_grid_sample", _sample_impl, _sample_fake, _sample_setup, _sample_backward)
_sample_grad_op = fused_op("affine_grid_sample_grad", _sample_grad_impl, _sample_grad_fake, _sample_grad_setup,
                           _sample_grad_backward)


# ----------------------------------------------------------------------------------------------------------------
# kernel op: color (its gradient is the same op with the transposed matrix, without the offset)


def _color_impl(x: torch.Tensor, M: torch.Tensor, bias: bool) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    if out.numel():
        kernels("augment").color_transform(x, M, out, bias)
    return out


def _color_fake(x, M, bias):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _color_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _color_backward(ctx, dy):
    (M,) = ctx.saved_tensors
    return _color_op(dy, M.transpose(1, 2), False), None, None


_color_op = fused_op("color_transform", _color_impl, _color_fake, _color_setup, _color_backward)


# ----------------------------------------------------------------------------------------------------------------
# public API


_CONSTANT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _constant(name: str, t: torch.Tensor, shape: tuple[int, ...], x: torch.Tensor) -> None:
    """t: a tensor of the given shape on x's device that requires no grad (theta, M)."""
    if isinstance(t, torch.Tensor) and t.shape == shape and t.dtype in _CONSTANT_DTYPES and t.device == x.device \
            and not t.requires_grad:
        return  # the common case, without building the messages
    _validate.tensor(name, t, ndim=len(shape), dtypes=_CONSTANT_DTYPES, device=x.device)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} for x {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} must not require grad: it is a constant of the augmentation (the op has no "
                         f"gradient w.r.t. it); pass {name}.detach()")


def affine_grid_sample(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Bilinear resampling at affine positions: ``F.grid_sample(x, F.affine_grid(theta, (N, C, *size)))`` with
    mode bilinear, padding zeros, align_corners False, without the grid tensor.

    Args:
        x: (N, C, Hi, Wi), fp32/fp16/bf16 (fp64 on ref), any layout. Differentiable to every order.
        theta: (N, 2, 3), the map from normalized output positions (x, y, 1) in [-1, 1] to normalized input
            positions; a constant (must not require grad). The kernel computes positions in fp32.
        size: (Ho, Wo) of the output, default (Hi, Wi).
    Returns:
        (N, C, Ho, Wo), dtype of x. A position that theta makes NaN / Inf gives NaN (as the eager path).
    """
    _validate.tensor("x", x, ndim=4)
    _constant("theta", theta, (x.shape[0], 2, 3), x)
    if size is None:
        size = (x.shape[2], x.shape[3])
    elif not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be (Ho, Wo), two ints >= 1, got {size!r}")
    backend = _backend.select(x.device, x.dtype, PREFERENCE, KERNEL_DTYPES)
    if backend == "ref":
        return affine_grid_sample_ref(x, theta, size)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: affine_grid_sample "
                                          "has a Triton kernel only (use the triton backend)")
    return _sample_op(x, theta if theta.dtype == torch.float32 else theta.float(), int(size[0]), int(size[1]))


def color_transform(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Per-image affine color transform: ``y[n, :, p] = M[n, :3, :3] @ x[n, :, p] + M[n, :3, 3]`` for every pixel
    p (C = 3); for C = 1 (grayscale) the RGB matrix averaged over its rows, ``y = x * mean_r(sum_k M[n, r, :3]) +
    mean_r(M[n, r, 3])`` (StyleGAN2-ADA's handling).

    Args:
        x: (N, C, H, W) with C = 3 or 1, fp32/fp16/bf16 (fp64 on ref), any layout. Differentiable to every order.
        M: (N, 4, 4) homogeneous color matrices (the last row is not read); a constant (must not require grad).
    Returns:
        (N, C, H, W), dtype of x.
    """
    _validate.tensor("x", x, ndim=4)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 3 (RGB) or 1 (luma) channels, got shape {tuple(x.shape)}")
    _constant("M", M, (x.shape[0], 4, 4), x)
    backend = _backend.select(x.device, x.dtype, PREFERENCE, KERNEL_DTYPES)
    if backend == "ref":
        return color_transform_ref(x, M)
    if backend == "cuda":
        raise _backend.BackendUnavailable("gankern backend 'cuda' was asked for but cannot run: color_transform "
                                          "has a Triton kernel only (use the triton backend)")
    return _color_op(x, M if M.dtype == torch.float32 else M.float(), True)
