"""Minibatch family: two ways a discriminator looks across the batch to fight mode collapse.

**Minibatch discrimination** (Salimans et al. 2016, "Improved techniques for training GANs"): with M = (f @ T)
viewed as (N, B, C),

    o[i, b] = sum_{j != i} exp(-||M[i, b, :] - M[j, b, :]||_1),

and, with g = dL/do and e_ijb = exp(-||M_ib - M_jb||_1) (e_ii = 0),

    dL/dM[i, b, c] = -sum_j (g[i, b] + g[j, b]) * e_ijb * sign(M[i, b, c] - M[j, b, c]).

The kernels (Triton: gankern/kernels/minibatch.py, CUDA: csrc/minibatch.cu) tile the N x N pairs per b and keep
a tile of rows of M on chip: neither the (N, N, B, C) differences nor the (N, N, B) weights are ever stored, in the
forward or the backward (which recomputes e from the same tiles). Memory O(N * B * C), time O(N^2 * B * C).
Floor: per (i, j, b, c) 2 FP32 instructions forward (difference, abs-add) and 5 more backward (the difference
again, sign, multiply-add), on the CUDA cores (no tensor-core form); bytes are negligible. For N=256, B=128, C=16:
2.7e8 FLOPs forward (4.0 us at the H100's 67 TFLOP/s fp32 datasheet rate), 9.4e8 forward + backward (14 us).
The f @ T matmul is torch's.

**Minibatch standard deviation** (PGGAN / StyleGAN2-ADA's MinibatchStdLayer): G = min(group_size, N) samples per
group (sample n is in group slot n % (N // G), as ``x.reshape(G, -1, ...)`` does), F = num_channels groups of
c = C // F channels; std[m, f] = mean over (c, H, W) of sqrt(var over the group + 1e-8); output
cat([x, std broadcast to (N, F, H, W)], 1). One fused kernel forward (reads x once, writes the copy and the extra
channels) and one backward; when the (slot, channel group) slabs are too few to fill the GPU, each slab is split
over programs and a second small launch sums their parts into the extra channels. Floor: x read and the output
written once: 64x512x4x4 fp32, 4.2 MB, 1.4 us at 3.0 TB/s.

Backward of the backward (second order, for R1 on a discriminator that uses these layers): the backward ops are
custom ops whose own gradient is autograd through the reference backward formula (differentiable eager ops).

Backends: ref (eager torch, any float dtype; its discrimination is chunked over rows so it too stays within
bounded memory), triton and cuda (fp32 / bf16 / fp16, fp32 accumulation; the CUDA discrimination kernels take
C <= DISC_CUDA_MAX_C, larger C goes to triton). Speed: not measured on a GPU yet, so the default order on CUDA
tensors (cuda, then triton: the CUDA C++ kernels are compiled at install, Triton's at first call) is not measured
either; bench/bench_minibatch.py measures both.
"""
from __future__ import annotations

import torch

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, DTYPE_CODES, fused_op, kernels, module_and_stream, ptr

DISC_PREFERENCE = ("cuda", "triton")
DISC_KERNEL_DTYPES = {"cuda": CUDA_DTYPES, "triton": CUDA_DTYPES}
DISC_CUDA_MAX_C = 48  # gk::MB_MAX_C: the CUDA kernels' shared-memory tiles hold rows of up to this many elements
STD_PREFERENCE = ("cuda", "triton")
STD_KERNEL_DTYPES = {"cuda": CUDA_DTYPES, "triton": CUDA_DTYPES}
STD_EPS = 1e-8
_REF_CHUNK = 1 << 24  # elements of the (rows, N, B, C) temporary of the reference discrimination
_empty = torch.empty  # allocation of the kernels' outputs (the tests fill them with NaN)

__all__ = ["minibatch_discrimination", "minibatch_discrimination_pairs", "minibatch_stddev"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# reference twins (eager torch; the backward formulas are differentiable, which gives the second order)

def _row_chunks(M: torch.Tensor):
    """Per chunk of n rows from i0: (M[i0:i0 + n], off-diagonal mask (n, N, 1), all of M), M in the accumulation
    dtype; chunks of at most _REF_CHUNK elements of (n, N, B, C)."""
    N = M.shape[0]
    Mf = M.to(_acc_dtype(M.dtype))
    step = max(1, _REF_CHUNK // max(1, M.numel()))
    cols = torch.arange(N, device=M.device)
    for i0 in range(0, N, step):
        rows = torch.arange(i0, min(N, i0 + step), device=M.device)
        yield Mf[i0:i0 + step], (rows[:, None] != cols[None, :])[:, :, None], Mf


def _disc_ref(M: torch.Tensor) -> torch.Tensor:
    """M (N, B, C) -> o (N, B)."""
    out = []
    for mi, off_diag, Mf in _row_chunks(M):
        d = (mi[:, None] - Mf[None]).abs().sum(-1)  # [n, N, B]
        out.append(torch.where(off_diag, torch.exp(-d), 0).sum(1))  # where, not * mask: the pair (i, i) is not
        # in the sum, so a NaN of sample i reaches o[i] through its pairs j != i only (as in the kernels)
    return torch.cat(out).to(M.dtype)


def _disc_backward_ref(M: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """M (N, B, C), g = dL/do (N, B) -> dL/dM (N, B, C)."""
    gf = g.to(_acc_dtype(M.dtype))
    out, i0 = [], 0
    for mi, off_diag, Mf in _row_chunks(M):
        diff = mi[:, None] - Mf[None]  # [n, N, B, C]
        w = torch.where(off_diag, (gf[i0:i0 + len(mi), None] + gf[None]) * torch.exp(-diff.abs().sum(-1)), 0)
        out.append(-(w[..., None] * diff.sign()).sum(1))
        i0 += len(mi)
    return torch.cat(out).to(M.dtype)


def _group_view(x: torch.Tensor, G: int, F: int) -> torch.Tensor:
    """x (N, C, H, W) -> [G, N // G, F, C // F, H, W] in the accumulation dtype (StyleGAN2's grouping)."""
    N, C, H, W = x.shape
    return x.to(_acc_dtype(x.dtype)).reshape(G, -1, F, C // F, H, W)


def _std_ref(x: torch.Tensor, G: int, F: int) -> torch.Tensor:
    """x (N, C, H, W) -> (N, C + F, H, W): StyleGAN2-ADA's MinibatchStdLayer."""
    N, C, H, W = x.shape
    y = _group_view(x, G, F)
    y = y - y.mean(0)
    y = (y.square().mean(0) + STD_EPS).sqrt()  # [M, F, c, H, W]
    y = y.mean([2, 3, 4]).reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
    return torch.cat([x, y.to(x.dtype)], 1)


def _std_backward_ref(x: torch.Tensor, go: torch.Tensor, G: int, F: int) -> torch.Tensor:
    """x (N, C, H, W), go = dL/dout (N, C + F, H, W) -> dL/dx (N, C, H, W)."""
    N, C, H, W = x.shape
    y = _group_view(x, G, F)
    d = y - y.mean(0)  # [G, M, F, c, H, W]
    s = (d.square().mean(0) + STD_EPS).sqrt()  # [M, F, c, H, W]
    gs = go[:, C:].to(d.dtype).reshape(G, -1, F, H, W).sum([0, 3, 4])  # [M, F]: grad of std[m, f]
    dy = d / (G * s) * (gs / (C // F * H * W))[:, :, None, None, None]
    return (go[:, :C].to(d.dtype) + dy.reshape(N, C, H, W)).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# kernel backends

def _disc_kernels(backend: str, M: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """Forward (g None): o (N, B) in M's dtype; backward: dM (N, B, C)."""
    N, B, C = M.shape
    out = _empty((N, B) if g is None else (N, B, C), device=M.device, dtype=M.dtype)
    if backend == "triton":
        k = kernels("minibatch")
        k.disc(M, g, out)
    else:
        mod, stream = module_and_stream(M.device)
        code = DTYPE_CODES[M.dtype]
        if g is None:
            mod.mb_disc_forward(ptr(M), N, B, C, ptr(out), code, stream)
        else:
            mod.mb_disc_backward(ptr(M), ptr(g), N, B, C, ptr(out), code, stream)
    return out


def _std_kernels(backend: str, x: torch.Tensor, go: torch.Tensor | None, G: int, F: int) -> torch.Tensor:
    """Forward (go None): (N, C + F, H, W); backward: dx (N, C, H, W)."""
    N, C, H, W = x.shape
    out = _empty((N, C + F, H, W) if go is None else (N, C, H, W), device=x.device, dtype=x.dtype)
    if backend == "triton":
        k = kernels("minibatch")
        split = k.std_split(N, C, H * W, G, F)
        P = split[3]
        partials = torch.empty(N // G * F * P, device=x.device, dtype=torch.float32) if go is None and P > 1 else None
        k.std(x, go, out, partials, G, F, STD_EPS, split)
    else:
        mod, stream = module_and_stream(x.device)
        if go is None:
            partials = torch.empty(mod.mb_std_partials(N, C, H * W, G, F), device=x.device, dtype=torch.float32)
            mod.mb_std_forward(ptr(x), N, C, H * W, G, F, STD_EPS, ptr(out), ptr(partials), DTYPE_CODES[x.dtype],
                               stream)
        else:
            mod.mb_std_backward(ptr(x), ptr(go), N, C, H * W, G, F, STD_EPS, ptr(out), DTYPE_CODES[x.dtype], stream)
    return out


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops: each forward op's gradient is a backward op (a kernel); each backward op's gradient is autograd
# through the differentiable reference formula of that backward.

def _grad_of_backward(formula, tensors, extra, grad):
    """Gradients of ``formula(*tensors, *extra)`` w.r.t. ``tensors`` for the incoming ``grad``; differentiable
    again when the caller asked for a graph (create_graph)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # fresh nodes (a view of a tensor in the graph, else a detached leaf): the gradients are those of this
        # formula alone, not also of the paths between the tensors (go may itself depend on x)
        ins = [t.view_as(t) if t.requires_grad else t.detach().requires_grad_(True) for t in tensors]
        return torch.autograd.grad(formula(*ins, *extra), ins, grad, create_graph=create_graph)


def _disc_impl(M: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _disc_ref(M)
    return _disc_kernels(backend, M, None)


def _disc_fake(M, backend):
    return M.new_empty(M.shape[:2])


def _disc_backward_impl(M: torch.Tensor, g: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _disc_backward_ref(M, g)
    return _disc_kernels(backend, M, g.to(M.dtype).contiguous())


def _disc_backward_fake(M, g, backend):
    return torch.empty_like(M)


def _disc_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.backend = inputs[1]


def _disc_backward(ctx, g):
    (M,) = ctx.saved_tensors
    return _disc_backward_op(M, g, ctx.backend), None


def _disc_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _disc_backward_backward(ctx, h):
    dM, dg = _grad_of_backward(_disc_backward_ref, ctx.saved_tensors, (), h)
    return dM, dg, None


_disc_op = fused_op("minibatch_disc", _disc_impl, _disc_fake, _disc_setup, _disc_backward)
_disc_backward_op = fused_op("minibatch_disc_backward", _disc_backward_impl, _disc_backward_fake,
                             _disc_backward_setup, _disc_backward_backward)


def _std_impl(x: torch.Tensor, G: int, F: int, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _std_ref(x, G, F)
    return _std_kernels(backend, x, None, G, F)


def _std_fake(x, G, F, backend):
    N, C, H, W = x.shape
    return x.new_empty((N, C + F, H, W))


def _std_backward_impl(x: torch.Tensor, go: torch.Tensor, G: int, F: int, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _std_backward_ref(x, go, G, F)
    return _std_kernels(backend, x, go.to(x.dtype).contiguous(), G, F)


def _std_backward_fake(x, go, G, F, backend):
    return torch.empty_like(x)


def _std_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.G, ctx.F, ctx.backend = inputs[1:]


def _std_backward(ctx, go):
    (x,) = ctx.saved_tensors
    return _std_backward_op(x, go, ctx.G, ctx.F, ctx.backend), None, None, None


def _std_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.G, ctx.F = inputs[2:4]


def _std_backward_autograd(x: torch.Tensor, go: torch.Tensor, G: int, F: int) -> torch.Tensor:
    """dL/dx of the forward formula by autograd, differentiable again (the meaning of _std_backward_ref). The
    second order takes its derivative: the same arithmetic as StyleGAN2-ADA's double autograd through its layer.
    Differentiating the closed form instead loses fp32 accuracy (7e-4 relative against fp64 where this gives 1e-6):
    its two terms nearly cancel when the incoming gradient is nearly affine in the deviations from the group mean."""
    with torch.enable_grad():
        return torch.autograd.grad(_std_ref(x, G, F), x, go, create_graph=True)[0]


def _std_backward_backward(ctx, h):
    dx, dgo = _grad_of_backward(_std_backward_autograd, ctx.saved_tensors, (ctx.G, ctx.F), h)
    return dx, dgo, None, None, None


_std_op = fused_op("minibatch_std", _std_impl, _std_fake, _std_setup, _std_backward)
_std_backward_op = fused_op("minibatch_std_backward", _std_backward_impl, _std_backward_fake,
                            _std_backward_setup, _std_backward_backward)


# ----------------------------------------------------------------------------------------------------------------
# public API

def minibatch_discrimination_pairs(M: torch.Tensor) -> torch.Tensor:
    """The pair sums of minibatch discrimination, on M already computed.

    Args:
        M: (N, B, C) float, N >= 1 samples, B kernels of dimension C.
    Returns:
        o: (N, B), dtype of M: o[i, b] = sum_{j != i} exp(-||M[i, b] - M[j, b]||_1) (zeros when N == 1).
    """
    _validate.tensor("M", M, ndim=3)
    if M.numel() == 0:
        raise ValueError(f"M must not be empty, got shape {tuple(M.shape)}")
    preference = DISC_PREFERENCE
    if M.shape[2] > DISC_CUDA_MAX_C:
        if _backend.forced_backend() == "cuda":
            raise _backend.BackendUnavailable(f"gankern backend 'cuda' was asked for but cannot run: its minibatch "
                                              f"discrimination kernels take C <= {DISC_CUDA_MAX_C}, got C = "
                                              f"{M.shape[2]}")
        preference = ("triton",)
    backend = _backend.select(M.device, M.dtype, preference, DISC_KERNEL_DTYPES)
    return _disc_op(M if backend == "ref" else M.contiguous(), backend)


def minibatch_discrimination(f: torch.Tensor, T: torch.Tensor, B: int, C: int) -> torch.Tensor:
    """Minibatch discrimination (Salimans et al. 2016), differentiable in f and T (first and second order).

    Args:
        f: (N, A) features, N >= 1; T: (A, B * C), same dtype and device.
        B: number of kernels; C: kernel dimension.
    Returns:
        o: (N, B), dtype of f, with M = (f @ T).view(N, B, C):
        o[i, b] = sum_{j != i} exp(-||M[i, b, :] - M[j, b, :]||_1). Concatenate ``[f, o]`` for the layer's output
        (:class:`gankern.nn.MinibatchDiscrimination` does).
    """
    B = _validate.positive_int("B", B)
    C = _validate.positive_int("C", C)
    _validate.tensor("f", f, ndim=2)
    _validate.tensor("T", T, ndim=2, dtypes=(f.dtype,))
    _validate.same_device(f=f, T=T)
    if f.shape[0] == 0:
        raise ValueError(f"f must hold at least one sample, got shape {tuple(f.shape)}")
    if T.shape[0] != f.shape[1]:
        raise ValueError(f"T must have f.shape[1] = {f.shape[1]} rows, got shape {tuple(T.shape)}")
    if T.shape[1] != B * C:
        raise ValueError(f"T must have B * C = {B} * {C} = {B * C} columns, got shape {tuple(T.shape)}")
    return minibatch_discrimination_pairs((f @ T).view(f.shape[0], B, C))


def minibatch_stddev(x: torch.Tensor, group_size: int | None = 4, num_channels: int = 1) -> torch.Tensor:
    """Minibatch standard deviation (PGGAN / StyleGAN2-ADA), differentiable (first and second order).

    Args:
        x: (N, C, H, W) float.
        group_size: samples per group; G = min(group_size, N) (None: G = N). N must be a multiple of G; sample n
            is grouped with samples n + k * (N // G).
        num_channels: F, the number of extra channels; C must be a multiple of F.
    Returns:
        (N, C + F, H, W), dtype of x: cat([x, std], 1), std[n, f] the mean over the f-th group of C // F channels
        and all pixels of sqrt(var over n's group + 1e-8).
    """
    _validate.tensor("x", x, ndim=4)
    N, C, H, W = x.shape
    G = N if group_size is None else min(_validate.positive_int("group_size", group_size), N)
    F = _validate.positive_int("num_channels", num_channels)
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    if N % G != 0:
        raise ValueError(f"the batch size N = {N} must be a multiple of the group size min(group_size, N) = {G}")
    if C % F != 0:
        raise ValueError(f"the channel count C = {C} must be a multiple of num_channels = {F}")
    backend = _backend.select(x.device, x.dtype, STD_PREFERENCE, STD_KERNEL_DTYPES)
    return _std_op(x if backend == "ref" else x.contiguous(), G, F, backend)
