"""Spectral normalization (Miyato et al. 2018) for many layers at once.

Meaning (that of ``torch.nn.utils.parametrizations.spectral_norm``): each weight W is read as the matrix
Wm = W.movedim(dim, 0).reshape(h, w); one power iteration is

    u <- normalize(Wm v),   v <- normalize(Wm^T u),   sigma = u^T Wm v,

and the layer uses W / sigma, whose gradient treats u and v as constants:
dW = G / sigma - <G, W> / sigma^2 * u v^T.

The kernels (Triton: gankern/kernels/spectral_norm.py, CUDA: csrc/spectral_norm.cu) serve every layer of a model in
one launch per phase: rows (Wm v), normalize u, columns (Wm^T u), normalize v and sigma (sigma = |Wm^T u|, which
equals u^T Wm v for the new v), then W / sigma. The backward is two launches for all layers: <G, W> per layer, then
dW = G / sigma - <G, W> / sigma^2 u v^T elementwise.

Floor per step (shared/GPU.md): W read twice and W / sigma written once, for BigGAN-128's 57 layers (160.5M fp32
weights) 0.64 ms on an H100. This design moves W four times (the W / sigma pass reads W again): 0.86 ms at 3.0 TB/s,
above the 0.8 ms target; reaching it needs the scale pass to hit L2 (per layer right after its columns pass) or
1/sigma folded into the layer's epilogue. Speed: not measured on a GPU yet.

CUDA graphs: the layer table and work lists are built (one host-to-device copy) on the first call for a set of
tensors and cached; run one eager step before capturing a graph.

Backends: ref (eager torch), triton, cuda (fp32 / bf16 / fp16 weights, fp32 accumulation). Default on CUDA tensors:
cuda, then triton (order not yet measured on a GPU).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import _backend, _validate
from ._launch import CUDA_DTYPES, DTYPE_CODES, fused_op, module_and_stream, ptr

PREFERENCE = ("cuda", "triton")
KERNEL_DTYPES = {"cuda": CUDA_DTYPES, "triton": CUDA_DTYPES}

__all__ = ["power_iteration_all", "spectral_normalize_all", "as_matrix", "from_matrix"]


def as_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """W.movedim(dim, 0) as the (h, w) matrix the power iteration works on."""
    return weight.movedim(dim, 0).reshape(weight.shape[dim], -1)


def from_matrix(mat: torch.Tensor, shape: Sequence[int], dim: int) -> torch.Tensor:
    """Inverse of :func:`as_matrix`: the (h, w) matrix laid out as a weight of ``shape``."""
    moved = [shape[dim]] + [s for i, s in enumerate(shape) if i != dim]
    return mat.reshape(moved).movedim(0, dim)


# ----------------------------------------------------------------------------------------------------------------
# reference twins

def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """sigma, u and v as returned to the caller: float64 for float64 weights, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32

def _power_iteration_ref(weights, us, vs, dims, n_iter, eps):
    sigmas = []
    with torch.no_grad():
        for w, u, v, d in zip(weights, us, vs, dims):
            wm = as_matrix(w, d)
            for _ in range(n_iter):
                u.copy_(F.normalize(torch.mv(wm, v), dim=0, eps=eps))
                v.copy_(F.normalize(torch.mv(wm.H, u), dim=0, eps=eps))
            sigmas.append(torch.vdot(u, torch.mv(wm, v)))
        acc = _acc_dtype(weights[0].dtype)
        return (torch.stack(sigmas).to(acc), torch.cat([u.to(acc) for u in us]), torch.cat([v.to(acc) for v in vs]))


def _normalize_ref(weights, sigmas):
    return torch.cat([(w / s.to(w.dtype)).reshape(-1) for w, s in zip(weights, sigmas)])


# ----------------------------------------------------------------------------------------------------------------
# kernel backends: one plan (layer table + work lists) per set of tensors, the same phases on triton and cuda

class _Plan:
    """Layer table and work lists of one call (cached by the tensors' addresses and shapes: the table holds only
    those, so a cached plan is valid whenever the key matches)."""

    def __init__(self, key, device, rows_per_item, cols_rows, cols_cols, scale_elems):
        n = len(key)
        meta = np.zeros((n, 9), dtype=np.int64)
        rows, cols, scale = [], [], []
        h_off = w_off = n_off = 0
        self.numels, self.hs, self.ws = [], [], []
        for i, (wp, up, vp, shape, dim) in enumerate(key):
            h = shape[dim]
            numel = int(np.prod(shape))
            w = numel // h
            inner = int(np.prod(shape[dim + 1:]))
            meta[i] = (wp, up, vp, h, w, inner, h_off, w_off, n_off)
            rows += [(i, r) for r in range(0, h, rows_per_item)]
            cols += [(i, r, c) for r in range(0, h, cols_rows) for c in range(0, w, cols_cols)]
            scale += [(i, e) for e in range(0, numel, scale_elems)]
            self.numels.append(numel)
            self.hs.append(h)
            self.ws.append(w)
            h_off, w_off, n_off = h_off + h, w_off + w, n_off + numel
        self.total_h, self.total_w, self.total_n = h_off, w_off, n_off

        def dev(a, dtype):
            return torch.from_numpy(np.asarray(a, dtype=dtype).reshape(len(a), -1)).to(device)
        self.meta = torch.from_numpy(meta).to(device)
        self.rows, self.cols, self.scale = dev(rows, np.int32), dev(cols, np.int32), dev(scale, np.int32)


@functools.lru_cache(maxsize=512)
def _plan(key, device, sizes) -> _Plan:
    return _Plan(key, device, *sizes)


class _Triton:
    def __init__(self):
        from ..kernels import spectral_norm as k
        import triton.language as tl
        self.k = k
        self.sizes = (k.ROWS_PER_ITEM, k.COLS_ROWS, k.COLS_COLS, k.SCALE_ELEMS)
        self.tl_dtypes = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    def run(self, plan, phase, dtype, *args):
        dt = self.tl_dtypes[dtype]
        if phase == "rows":
            self.k.rows(plan.meta, plan.rows, args[0], dt)
        elif phase == "cols":
            self.k.cols(plan.meta, plan.cols, args[0], dt)
        elif phase == "reduce":
            mode, flat, eps, sigma = args
            self.k.reduce(plan.meta, len(plan.numels), mode, flat, eps, sigma, dt)
        elif phase == "scale":
            sigma, out = args
            self.k.scale(plan.meta, plan.scale, sigma, out, dt)
        elif phase == "grad_dot":
            g, dots = args
            self.k.grad_dot(plan.meta, plan.scale, g, dots, dt)
        else:
            self.k.grad(plan.meta, plan.scale, *args)


class _Cuda:
    def __init__(self, device):
        self.mod, self.stream = module_and_stream(device)
        m = self.mod
        self.sizes = (m.SN_ROWS_PER_ITEM, m.SN_COLS_ROWS, m.SN_COLS_COLS, m.SN_SCALE_ELEMS)

    def run(self, plan, phase, dtype, *args):
        code, m = DTYPE_CODES[dtype], self.mod
        if phase == "rows":
            m.sn_rows(ptr(plan.meta), ptr(plan.rows), plan.rows.shape[0], ptr(args[0]), code, self.stream)
        elif phase == "cols":
            m.sn_cols(ptr(plan.meta), ptr(plan.cols), plan.cols.shape[0], ptr(args[0]), code, self.stream)
        elif phase == "reduce":
            mode, flat, eps, sigma = args
            m.sn_reduce(ptr(plan.meta), len(plan.numels), mode, ptr(flat), eps, ptr(sigma), code, self.stream)
        elif phase == "scale":
            sigma, out = args
            m.sn_scale(ptr(plan.meta), ptr(plan.scale), plan.scale.shape[0], ptr(sigma), ptr(out), code, self.stream)
        elif phase == "grad_dot":
            g, dots = args
            m.sn_grad_dot(ptr(plan.meta), ptr(plan.scale), plan.scale.shape[0], ptr(g), ptr(dots), code, self.stream)
        else:
            m.sn_grad(ptr(plan.meta), ptr(plan.scale), plan.scale.shape[0], *(ptr(a) for a in args), code,
                      self.stream)


_TRITON: list[_Triton] = []


def _runner(backend, device):
    if backend == "triton":
        if not _TRITON:
            _TRITON.append(_Triton())
        return _TRITON[0]
    return _Cuda(device)


def _plan_for(runner, weights, us, vs, dims):
    key = tuple((w.data_ptr(), u.data_ptr(), v.data_ptr(), tuple(w.shape), d) for w, u, v, d in zip(weights, us, vs, dims))
    return _plan(key, weights[0].device, runner.sizes)


def _power_iteration_kernels(backend, weights, us, vs, dims, n_iter, eps):
    runner = _runner(backend, weights[0].device)
    plan = _plan_for(runner, weights, us, vs, dims)
    dtype, device = weights[0].dtype, weights[0].device
    t = torch.empty(plan.total_h, device=device, dtype=torch.float32)
    s = torch.empty(plan.total_w, device=device, dtype=torch.float32)
    sigma = torch.empty(len(weights), device=device, dtype=torch.float32)
    for _ in range(n_iter):
        runner.run(plan, "rows", dtype, t)
        runner.run(plan, "reduce", dtype, 0, t, eps, sigma)
        s.zero_()
        runner.run(plan, "cols", dtype, s)
        runner.run(plan, "reduce", dtype, 1, s, eps, sigma)
    if n_iter == 0:
        runner.run(plan, "rows", dtype, t)
        runner.run(plan, "reduce", dtype, 2, t, eps, sigma)
        return sigma, torch.cat([u.float() for u in us]), torch.cat([v.float() for v in vs])
    return sigma, t, s


def _normalize_kernels(backend, weights, sigmas, dims):
    runner = _runner(backend, weights[0].device)
    plan = _plan_for(runner, weights, weights, weights, dims)
    out = torch.empty(plan.total_n, device=weights[0].device, dtype=weights[0].dtype)
    runner.run(plan, "scale", weights[0].dtype, sigmas, out)
    return out


def _normalize_backward_kernels(weights: list[torch.Tensor], grad: torch.Tensor, sigmas: torch.Tensor,
                                u_flat: torch.Tensor, v_flat: torch.Tensor, dims: list[int], backend: str
                                ) -> torch.Tensor:
    """dW of every layer (flat, like the forward's output) in two launches: <G, W> per layer, then
    G / sigma - <G, W> / sigma^2 * u v^T."""
    runner = _runner(backend, weights[0].device)
    plan = _plan_for(runner, weights, weights, weights, dims)
    dtype = weights[0].dtype
    grad = grad.to(dtype).contiguous()
    dots = torch.zeros(len(weights), device=grad.device, dtype=torch.float32)
    runner.run(plan, "grad_dot", dtype, grad, dots)
    dw = torch.empty_like(grad)
    runner.run(plan, "grad", dtype, grad, sigmas, dots, u_flat, v_flat, dw)
    return dw


def _normalize_backward_fake(weights, grad, sigmas, u_flat, v_flat, dims, backend):
    return torch.empty_like(grad, dtype=weights[0].dtype)


_sn_normalize_backward = fused_op("sn_normalize_backward", _normalize_backward_kernels, _normalize_backward_fake)


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops

def _power_iteration_impl(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
                        dims: list[int], n_iter: int, eps: float, backend: str
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if backend == "ref":
        return _power_iteration_ref(weights, us, vs, dims, n_iter, eps)
    return _power_iteration_kernels(backend, weights, us, vs, dims, n_iter, eps)


def _power_iteration_fake(weights, us, vs, dims, n_iter, eps, backend):
    w0 = weights[0]
    acc = _acc_dtype(w0.dtype)
    return (w0.new_empty(len(weights), dtype=acc), w0.new_empty(sum(u.numel() for u in us), dtype=acc),
            w0.new_empty(sum(v.numel() for v in vs), dtype=acc))


_sn_power_iteration = fused_op("sn_power_iteration", _power_iteration_impl, _power_iteration_fake,
                               mutates_args=("us", "vs"))


def _normalize_impl(weights: list[torch.Tensor], sigmas: torch.Tensor, u_flat: torch.Tensor, v_flat: torch.Tensor,
                  dims: list[int], backend: str) -> torch.Tensor:
    if backend == "ref":
        return _normalize_ref(weights, sigmas)
    return _normalize_kernels(backend, weights, sigmas, dims)


def _normalize_fake(weights, sigmas, u_flat, v_flat, dims, backend):
    return weights[0].new_empty(sum(w.numel() for w in weights))


def _normalize_setup(ctx, inputs, output):
    weights, sigmas, u_flat, v_flat, dims, backend = inputs
    ctx.save_for_backward(sigmas, u_flat, v_flat, *weights)
    ctx.dims = dims
    ctx.backend = backend


def _normalize_backward(ctx, grad):
    """dW = G / sigma - <G, W> / sigma^2 * u v^T per layer: the fused kernels for a first-order backward, else
    differentiable torch ops (so that it has a backward)."""
    sigmas, u_flat, v_flat, *weights = ctx.saved_tensors
    if ctx.backend != "ref" and not torch.is_grad_enabled():  # first order: the fused kernels
        dw = _sn_normalize_backward(weights, grad, sigmas, u_flat, v_flat, ctx.dims, ctx.backend)
        return [d.view(w.shape) for d, w in zip(dw.split([w.numel() for w in weights]), weights)], \
            None, None, None, None, None
    grads = grad.split([w.numel() for w in weights])
    us = u_flat.split([w.shape[d] for w, d in zip(weights, ctx.dims)])
    vs = v_flat.split([w.numel() // w.shape[d] for w, d in zip(weights, ctx.dims)])
    out = []
    for w, g, u, v, sig, d in zip(weights, grads, us, vs, sigmas, ctx.dims):
        uv = from_matrix(torch.outer(u, v), w.shape, d)  # d sigma / dW
        wa = w.to(sig.dtype)
        if torch.is_grad_enabled():  # double backward: sigma = <u v^T, W> must carry its dependence on W
            sig = (uv * wa).sum()
        g = g.view(w.shape).to(sig.dtype)
        coef = (g * wa).sum() / (sig * sig)
        out.append((g / sig - coef * uv).to(w.dtype))
    return out, None, None, None, None, None


_sn_normalize = fused_op("sn_normalize", _normalize_impl, _normalize_fake, _normalize_setup, _normalize_backward)


# ----------------------------------------------------------------------------------------------------------------
# public API

def _check(weights, us, vs, dims, n_power_iterations, eps):
    if not isinstance(weights, (list, tuple)) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of tensors")
    if not (len(weights) == len(us) == len(vs) == len(dims)):
        raise ValueError(f"weights, us, vs and dims must have one entry per layer, got lengths "
                         f"{len(weights)}, {len(us)}, {len(vs)}, {len(dims)}")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 0:
        raise ValueError(f"n_power_iterations must be an int >= 0, got {n_power_iterations!r}")
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    _validate.tensor("weights[0]", weights[0])
    device, dtype = weights[0].device, weights[0].dtype
    for i, (w, u, v, d) in enumerate(zip(weights, us, vs, dims)):
        _validate.tensor(f"weights[{i}]", w, dtypes=_validate.FLOATS, device=device)
        if w.dtype != dtype:
            raise TypeError(f"weights[{i}] has dtype {w.dtype} but weights[0] has {dtype}: one call takes one dtype")
        if w.dim() < 2:
            raise ValueError(f"weights[{i}] must have at least 2 dimensions, got shape {tuple(w.shape)}")
        if not isinstance(d, int) or not 0 <= d < w.dim():
            raise ValueError(f"dims[{i}] = {d!r} is not a dimension of weights[{i}] (shape {tuple(w.shape)})")
        if not w.is_contiguous():
            raise ValueError(f"weights[{i}] must be contiguous")
        h = w.shape[d]
        for name, t, n in ((f"us[{i}]", u, h), (f"vs[{i}]", v, w.numel() // max(h, 1))):
            _validate.tensor(name, t, ndim=1, dtypes=(dtype,), device=device)
            if t.numel() != n:
                raise ValueError(f"{name} must have {n} elements for weights[{i}] of shape {tuple(w.shape)} "
                                 f"(dim={d}), got {t.numel()}")
            if not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous")
        if w.numel() == 0:
            raise ValueError(f"weights[{i}] is empty (shape {tuple(w.shape)})")
    return device, dtype


def _backend_for(device, dtype, weights):
    backend = _backend.select(device, dtype, PREFERENCE, KERNEL_DTYPES)
    if backend != "ref":
        for i, w in enumerate(weights):
            if w.numel() >= 2**31:  # the work lists hold int32 element offsets
                raise ValueError(f"weights[{i}] has {w.numel()} elements; the {backend} kernels take layers of "
                                 f"fewer than 2**31 elements (use gankern.use_backend('ref') for it)")
    return backend


def power_iteration_all(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                        n_power_iterations: int = 1, eps: float = 1e-12,
                        dims: Sequence[int] | None = None) -> torch.Tensor:
    """Run ``n_power_iterations`` power iterations on every layer at once, updating ``us`` and ``vs`` in place.

    Args:
        weights: L tensors, each (h, ...) read as a matrix along ``dims[l]`` (default 0); one dtype and device.
        us: L tensors (h_l,), the left vectors; vs: L tensors (w_l,), the right vectors; dtype of the weights.
    Returns:
        sigmas: (L,) float32 (float64 for float64 weights), sigma_l = u_l^T W_l v_l after the iterations (with 0 iterations: of the given u, v).
    """
    dims = [0] * len(weights) if dims is None else list(dims)
    device, dtype = _check(weights, us, vs, dims, n_power_iterations, eps)
    backend = _backend_for(device, dtype, weights)
    with torch.no_grad():
        return _sn_power_iteration(list(weights), list(us), list(vs), dims, n_power_iterations, float(eps),
                                   backend)[0]


def spectral_normalize_all(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                           n_power_iterations: int = 1, eps: float = 1e-12, dims: Sequence[int] | None = None
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Power iteration (updating ``us``, ``vs`` in place) and W / sigma for every layer, differentiable in W.

    Returns:
        (normalized, sigmas): normalized[l] has the shape and dtype of weights[l]; sigmas (L,) float32
        (float64 for float64 weights).
    """
    dims = [0] * len(weights) if dims is None else list(dims)
    device, dtype = _check(weights, us, vs, dims, n_power_iterations, eps)
    backend = _backend_for(device, dtype, weights)
    weights = list(weights)
    with torch.no_grad():  # u, v and sigma are constants of the gradient, as in torch
        sigmas, u_flat, v_flat = _sn_power_iteration(weights, list(us), list(vs), dims, n_power_iterations,
                                                     float(eps), backend)
    flat = _sn_normalize(weights, sigmas, u_flat, v_flat, dims, backend)
    return [o.view(w.shape) for o, w in zip(flat.split([w.numel() for w in weights]), weights)], sigmas
