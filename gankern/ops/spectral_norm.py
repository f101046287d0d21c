"""Spectral normalization (Miyato et al. 2018) for many layers at once.

Meaning (that of ``torch.nn.utils.parametrizations.spectral_norm``): each weight W is read as the matrix
Wm = W.movedim(dim, 0).reshape(h, w); one power iteration is

    u <- normalize(Wm v),   v <- normalize(Wm^T u),   sigma = u^T Wm v,

and the layer uses W / sigma, whose gradient treats u and v as constants:
dW = G / sigma - <G, W> / sigma^2 * u v^T.

The kernels (Triton: gankern/kernels/spectral_norm.py, CUDA: csrc/spectral_norm.cu) serve every layer of a model in
one launch per phase; an iteration is three: rows (t = Wm v, and s zeroed), columns (s = Wm^T t), then per layer
u = t / |t|, v = normalize(s / |t|) and sigma = |s| / |t| (= u^T Wm v for the new v). Then W / sigma. The u and v
of all layers travel in one fp32 buffer (_Layout), sigma in an (L,) tensor. The backward is two launches for all
layers: <G, W> per layer, then dW = G / sigma - <G, W> / sigma^2 u v^T elementwise.

Floor per step (shared/GPU.md): W read twice and W / sigma written once, for BigGAN-128's 57 layers (160.5M fp32
weights) 0.64 ms on an H100. This design moves W four times (the W / sigma pass reads W again): 0.86 ms at 3.0 TB/s,
above the 0.8 ms target; reaching it needs the scale pass to hit L2 (per layer right after its columns pass) or
1/sigma folded into the layer's epilogue. Speed: not measured on a GPU yet.

Host: a call whose tensors (addresses, shapes, dtypes, contiguity) were checked before takes its cached plan
(layer table, work lists) without checking again. CUDA graphs: the plan is built (one host-to-device copy) on the
first call for a set of tensors; run one eager step before capturing a graph.

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
from ._launch import _EAGER_TYPES, CUDA_DTYPES, DTYPE_CODES, fused_op, kernels, module_and_stream

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
# the flat fp32 buffer of a power iteration: u of every layer, then v

class _Layout:
    """Where u (h_l,) and v (w_l,) of every layer lie in the flat fp32 buffer the power iteration returns (all
    backends); offsets are multiples of 4 elements (16 bytes: the kernels' vector loads)."""

    backend = "ref"

    def __init__(self, hs: tuple[int, ...], ws: tuple[int, ...]):
        def offsets(sizes, start):
            out = []
            for n in sizes:
                out.append(start)
                start += -(-n // 4) * 4
            return out, start
        self.hs, self.ws = hs, ws
        self.h_offs, end = offsets(hs, 0)
        self.w_offs, self.total = offsets(ws, end)

    def split(self, buf: torch.Tensor):
        """(us, vs) of buf: views."""
        return ([buf[o:o + n] for o, n in zip(self.h_offs, self.hs)],
                [buf[o:o + n] for o, n in zip(self.w_offs, self.ws)])

    def fill(self, buf: torch.Tensor, us, vs) -> torch.Tensor:
        """buf with every layer's u and v copied in."""
        for o, t in zip(self.h_offs + self.w_offs, list(us) + list(vs)):
            buf[o:o + t.numel()] = t
        return buf


@functools.lru_cache(maxsize=512)
def _layout(hs: tuple[int, ...], ws: tuple[int, ...]) -> _Layout:
    return _Layout(hs, ws)


def _layout_of(weights, dims) -> _Layout:
    hs = tuple(w.shape[d] for w, d in zip(weights, dims))
    ws = tuple(w.numel() // h for w, h in zip(weights, hs))
    try:
        return _layout(hs, ws)
    except TypeError:  # symbolic sizes (tracing with dynamic shapes) do not hash
        return _Layout(hs, ws)


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
        sigma = torch.stack(sigmas).to(acc)
        return sigma, _layout_of(weights, dims).fill(sigma.new_zeros(_layout_of(weights, dims).total), us, vs)


def _normalize_ref(weights, sigmas):
    return torch.cat([(w / s.to(w.dtype)).reshape(-1) for w, s in zip(weights, sigmas)])


# ----------------------------------------------------------------------------------------------------------------
# kernel backends: one plan (layer table + work lists) per set of tensors, the same phases on triton and cuda

class _Plan:
    """Layer table and work lists of one set of tensors (cached by their addresses and shapes: the table holds only
    those), for one backend's item sizes; the launches of each phase."""

    def __init__(self, key, layout: _Layout, device, backend: str):
        self.backend = backend
        if backend == "triton":
            k = self.k = _kernels()
            rows_per_item, cols_rows, cols_cols, scale_elems = (k.ROWS_PER_ITEM, k.COLS_ROWS, k.COLS_COLS,
                                                                 k.SCALE_ELEMS)
        else:
            m = module_and_stream(device)[0]
            rows_per_item, cols_rows, cols_cols, scale_elems = (m.SN_ROWS_PER_ITEM, m.SN_COLS_ROWS, m.SN_COLS_COLS,
                                                                 m.SN_SCALE_ELEMS)
        n = len(key)
        meta = np.zeros((n, 9), dtype=np.int64)
        rows, cols, scale = [], [], []
        n_off = 0
        for i, (wp, up, vp, shape, dim, *_) in enumerate(key):
            h, w = layout.hs[i], layout.ws[i]
            numel = h * w
            inner = int(np.prod(shape[dim + 1:]))
            meta[i] = (wp, up, vp, h, w, inner, layout.h_offs[i], layout.w_offs[i], n_off)
            rows += [(i, r) for r in range(0, h, rows_per_item)]
            cols += [(i, r, c) for r in range(0, h, cols_rows) for c in range(0, w, cols_cols)]
            scale += [(i, e) for e in range(0, numel, scale_elems)]
            n_off += numel
        self.layout, self.total_n, self.n_layers = layout, n_off, n

        def dev(a, dtype):
            return torch.from_numpy(np.asarray(a, dtype=dtype).reshape(len(a), -1)).to(device)
        self.meta = torch.from_numpy(meta).to(device)
        self.row_items, self.col_items, self.elem_items = dev(rows, np.int32), dev(cols, np.int32), dev(scale, np.int32)
        self.n_rows, self.n_cols, self.n_scale = len(rows), len(cols), len(scale)
        # the addresses the CUDA launchers take (the tensors live as long as the plan)
        self.ptrs = tuple(t.data_ptr() for t in (self.meta, self.row_items, self.col_items, self.elem_items))

    def power_iteration(self, buf, sigma, n_iter, eps, dtype):
        """u, v (in place and into buf) and sigma of every layer. Per iteration: rows (and zero s),
        columns, then u, v and sigma; with 0 iterations: rows and sigma = u . t."""
        L = self.n_layers
        if self.backend == "triton":
            k, dt, meta = self.k, _TL_DTYPES[dtype], self.meta
            for _ in range(max(n_iter, 1)):
                k.rows(meta, self.row_items, self.n_rows, buf, dt)
                if n_iter:
                    k.cols(meta, self.col_items, self.n_cols, buf, dt)
                k.reduce(meta, L, 0 if n_iter else 1, buf, sigma, eps, dt)
            return
        m, stream = module_and_stream(buf.device)
        code, b, sig, (meta, rows, cols, _) = DTYPE_CODES[dtype], buf.data_ptr(), sigma.data_ptr(), self.ptrs
        for _ in range(max(n_iter, 1)):
            m.sn_rows(meta, rows, self.n_rows, b, code, stream)
            if n_iter:
                m.sn_cols(meta, cols, self.n_cols, b, code, stream)
            m.sn_reduce(meta, L, 0 if n_iter else 1, b, eps, sig, code, stream)

    def scale(self, sigma, out, dtype):
        """out = W / sigma of every layer, flat."""
        if self.backend == "triton":
            self.k.scale(self.meta, self.elem_items, self.n_scale, sigma, out, _TL_DTYPES[dtype])
        else:
            m, stream = module_and_stream(out.device)
            m.sn_scale(self.ptrs[0], self.ptrs[3], self.n_scale, sigma.data_ptr(), out.data_ptr(), DTYPE_CODES[dtype],
                       stream)

    def grad(self, g, sigma, buf, dots, dw, dtype):
        """dots = <G, W> per layer (zeroed by the caller), then dW."""
        if self.backend == "triton":
            self.k.grad_dot(self.meta, self.elem_items, self.n_scale, g, dots, _TL_DTYPES[dtype])
            self.k.grad(self.meta, self.elem_items, self.n_scale, g, sigma, dots, buf, dw)
            return
        m, stream = module_and_stream(buf.device)
        code, (meta, _, _, items), b = DTYPE_CODES[dtype], self.ptrs, buf.data_ptr()
        m.sn_grad_dot(meta, items, self.n_scale, g.data_ptr(), dots.data_ptr(), code, stream)
        m.sn_grad(meta, items, self.n_scale, g.data_ptr(), sigma.data_ptr(), dots.data_ptr(), b, b, dw.data_ptr(),
                  code, stream)


_TL_DTYPES: dict = {}


def _kernels():
    k = kernels("spectral_norm")
    if not _TL_DTYPES:
        import triton.language as tl
        _TL_DTYPES.update({torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16})
    return k


# (signature of a checked call, device) -> {backend: _Plan (ref: _Layout)}; a signature holds all a plan depends on
_PLANS: dict = {}
_PLANS_MAX = 512
# the plan of the current call, with the list of weights it was made for: the ops of that call take it by the list's
# identity instead of rebuilding its key (a traced call passes other lists and rebuilds it); cleared at the call's end
_LATEST: list = [None, None]
_TABLES: dict = {}  # (addresses, shapes and dims of the tensors, backend, device) -> _Plan


def _plan(weights, us, vs, dims, backend) -> _Plan:
    """The plan of the latest checked call when these are its weights, else (a traced call, a backward) the plan of
    these tensors' addresses and shapes."""
    if _LATEST[0] is weights and _LATEST[1] is not None and _LATEST[1].backend == backend:
        return _LATEST[1]
    key = (tuple((w.data_ptr(), u.data_ptr(), v.data_ptr(), tuple(w.shape), d)
                 for w, u, v, d in zip(weights, us, vs, dims)), backend, weights[0].device)
    plan = _TABLES.get(key)
    if plan is None:
        if len(_TABLES) >= _PLANS_MAX:
            _TABLES.clear()
        plan = _TABLES[key] = _Plan(key[0], _layout_of(weights, dims), key[2], backend)
    return plan


def _power_iteration_kernels(backend, weights, us, vs, dims, n_iter, eps):
    plan = _plan(weights, us, vs, dims, backend)
    device = weights[0].device
    buf = torch.empty(plan.layout.total, device=device, dtype=torch.float32)
    sigma = torch.empty(plan.n_layers, device=device, dtype=torch.float32)
    plan.power_iteration(buf, sigma, n_iter, eps, weights[0].dtype)
    if n_iter == 0:  # u, v as given, into the buffer
        plan.layout.fill(buf, us, vs)
    return sigma, buf


def _normalize_kernels(backend, weights, sigma, dims):
    plan = _plan(weights, weights, weights, dims, backend)
    out = torch.empty(plan.total_n, device=weights[0].device, dtype=weights[0].dtype)
    plan.scale(sigma, out, weights[0].dtype)
    return out


def _normalize_backward_kernels(weights: list[torch.Tensor], grad: torch.Tensor, sigma: torch.Tensor,
                                buf: torch.Tensor, dims: list[int], backend: str) -> torch.Tensor:
    """dW of every layer (flat, like the forward's output) in two launches: <G, W> per layer, then
    G / sigma - <G, W> / sigma^2 * u v^T."""
    plan = _plan(weights, weights, weights, dims, backend)
    dtype = weights[0].dtype
    grad = grad.to(dtype).contiguous()
    dots = torch.zeros(len(weights), device=grad.device, dtype=torch.float32)
    dw = torch.empty_like(grad)
    plan.grad(grad, sigma, buf, dots, dw, dtype)
    return dw


def _normalize_backward_fake(weights, grad, sigma, buf, dims, backend):
    return torch.empty_like(grad, dtype=weights[0].dtype)


_sn_normalize_backward = fused_op("sn_normalize_backward", _normalize_backward_kernels, _normalize_backward_fake)


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops: gankern::sn_power_iteration -> (sigma (L,), the flat buffer of every u and v (_Layout));
# gankern::sn_normalize -> W / sigma of every layer, flat

def _power_iteration_impl(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
                          dims: list[int], n_iter: int, eps: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "ref":
        return _power_iteration_ref(weights, us, vs, dims, n_iter, eps)
    return _power_iteration_kernels(backend, weights, us, vs, dims, n_iter, eps)


def _power_iteration_fake(weights, us, vs, dims, n_iter, eps, backend):
    acc = _acc_dtype(weights[0].dtype)
    return (weights[0].new_empty(len(weights), dtype=acc),
            weights[0].new_empty(_layout_of(weights, dims).total, dtype=acc))


_sn_power_iteration = fused_op("sn_power_iteration", _power_iteration_impl, _power_iteration_fake,
                               mutates_args=("us", "vs"))


def _normalize_impl(weights: list[torch.Tensor], sigma: torch.Tensor, buf: torch.Tensor, dims: list[int],
                    backend: str) -> torch.Tensor:
    if backend == "ref":
        return _normalize_ref(weights, sigma)
    return _normalize_kernels(backend, weights, sigma, dims)


def _normalize_fake(weights, sigma, buf, dims, backend):
    return weights[0].new_empty(sum(w.numel() for w in weights))


def _normalize_setup(ctx, inputs, output):
    weights, sigma, buf, dims, backend = inputs
    ctx.save_for_backward(sigma, buf, *weights)
    ctx.dims = dims
    ctx.backend = backend


def _normalize_backward(ctx, grad):
    """dW = G / sigma - <G, W> / sigma^2 * u v^T per layer: the fused kernels for a first-order backward, else
    differentiable torch ops (so that it has a backward)."""
    sigmas, buf, *weights = ctx.saved_tensors
    if ctx.backend != "ref" and not torch.is_grad_enabled():  # first order: the fused kernels
        dw = _sn_normalize_backward(weights, grad, sigmas, buf, ctx.dims, ctx.backend)
        return [d.view(w.shape) for d, w in zip(dw.split([w.numel() for w in weights]), weights)], \
            None, None, None, None
    grads = grad.split([w.numel() for w in weights])
    us, vs = _layout_of(weights, ctx.dims).split(buf)
    out = []
    for w, g, u, v, sig, d in zip(weights, grads, us, vs, sigmas, ctx.dims):
        uv = from_matrix(torch.outer(u, v), w.shape, d)  # d sigma / dW
        wa = w.to(sig.dtype)
        if torch.is_grad_enabled():  # double backward: sigma = <u v^T, W> must carry its dependence on W
            sig = (uv * wa).sum()
        g = g.view(w.shape).to(sig.dtype)
        coef = (g * wa).sum() / (sig * sig)
        out.append((g / sig - coef * uv).to(w.dtype))
    return out, None, None, None, None


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


def _check_sizes(backend, weights):
    if backend != "ref":
        for i, w in enumerate(weights):
            if w.numel() >= 2**31:  # the work lists hold int32 element offsets
                raise ValueError(f"weights[{i}] has {w.numel()} elements; the {backend} kernels take layers of "
                                 f"fewer than 2**31 elements (use gankern.use_backend('ref') for it)")


def _prepare(weights, us, vs, dims, n_power_iterations, eps, traced):
    """(weights, us, vs, dims as lists, backend, cached) of a checked call (traced: under torch.compile); its
    plan in _LATEST for the ops. cached: the call's signature is in _PLANS: eager tensors with storage, not traced
    (a signature was stored only for a call of plain tensors; a tensor without storage cannot make one).

    A call whose signature (the addresses, shapes, dtypes and contiguity the checks read) was checked before takes
    its plan from _PLANS without checking again."""
    weights = list(weights)  # (a list of this call's own: _LATEST knows the call by it)
    us = us if type(us) is list else list(us)
    vs = vs if type(vs) is list else list(vs)
    dims = [0] * len(weights) if dims is None else list(dims)
    if traced:
        device, dtype = _check(weights, us, vs, dims, n_power_iterations, eps)
        backend = _backend.select(device, dtype, PREFERENCE, KERNEL_DTYPES)
        _check_sizes(backend, weights)
        return weights, us, vs, dims, backend, False
    sig = None
    if (weights and len(weights) == len(us) == len(vs) == len(dims) and type(n_power_iterations) is int
            and n_power_iterations >= 0 and type(eps) is float and eps > 0):
        try:  # (u and v: nbytes = numel * itemsize; the checks made it h, w times the weights' itemsize)
            sig = tuple([(w.data_ptr(), w.shape, w.dtype, w.is_contiguous(), u.data_ptr(), u.nbytes, v.data_ptr(),
                          v.nbytes, d) for w, u, v, d in zip(weights, us, vs, dims)])
            w0 = weights[0]
            device, dtype = w0.device, w0.dtype
        except (AttributeError, RuntimeError):  # not tensors, or tensors without storage (tracing): no signature
            sig = None
    plans = _PLANS.get((sig, device)) if sig is not None else None  # backend -> plan of a checked signature
    cached = plans is not None
    if plans is None:  # a new signature, or something a signature cannot hold: the checks say what is wrong
        device, dtype = _check(weights, us, vs, dims, n_power_iterations, eps)
        if sig is None:
            _LATEST[0] = _LATEST[1] = None
            backend = _backend.select(device, dtype, PREFERENCE, KERNEL_DTYPES)
            _check_sizes(backend, weights)
            return weights, us, vs, dims, backend, False
        plans = {}
        cached = all(type(t) in _EAGER_TYPES for t in (*weights, *us, *vs))  # (see _power_iteration)
        if cached:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[(sig, device)] = plans
    backend = _backend.select(device, dtype, PREFERENCE, KERNEL_DTYPES)
    plan = plans.get(backend)
    if plan is None:
        _check_sizes(backend, weights)
        layout = _layout_of(weights, dims)
        plan = plans[backend] = layout if backend == "ref" else _Plan(
            tuple((w.data_ptr(), u.data_ptr(), v.data_ptr(), tuple(w.shape), d)
                  for w, u, v, d in zip(weights, us, vs, dims)), layout, device, backend)
    _LATEST[0], _LATEST[1] = weights, plan
    return weights, us, vs, dims, backend, cached


def _power_iteration(weights, us, vs, n_power_iterations, eps, dims):
    """(weights, dims, backend, sigma, buf): the checked call's power iteration (no autograd node: u, v and sigma
    are constants of the gradient, as in torch)."""
    traced = torch.compiler.is_compiling()
    weights, us, vs, dims, backend, cached = _prepare(weights, us, vs, dims, n_power_iterations, eps, traced)
    if cached:  # plain eager tensors, not tracing: no grad mode to enter (the op has no autograd formula)
        sigma, buf = _sn_power_iteration(weights, us, vs, dims, n_power_iterations, float(eps), backend)
    else:
        with torch.no_grad():
            sigma, buf = _sn_power_iteration(weights, us, vs, dims, n_power_iterations, float(eps), backend)
    return weights, dims, backend, sigma, buf


def power_iteration_all(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                        n_power_iterations: int = 1, eps: float = 1e-12,
                        dims: Sequence[int] | None = None) -> torch.Tensor:
    """Run ``n_power_iterations`` power iterations on every layer at once, updating ``us`` and ``vs`` in place.

    Args:
        weights: L tensors, each (h, ...) read as a matrix along ``dims[l]`` (default 0); one dtype and device.
        us: L tensors (h_l,), the left vectors; vs: L tensors (w_l,), the right vectors; dtype of the weights.
    Returns:
        sigmas: (L,) float32 (float64 for float64 weights), sigma_l = u_l^T W_l v_l after the iterations (with 0
        iterations: of the given u, v).
    """
    sigma = _power_iteration(weights, us, vs, n_power_iterations, eps, dims)[3]
    _LATEST[0] = _LATEST[1] = None
    return sigma


def spectral_normalize_all(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                           n_power_iterations: int = 1, eps: float = 1e-12, dims: Sequence[int] | None = None
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Power iteration (updating ``us``, ``vs`` in place) and W / sigma for every layer, differentiable in W.

    Returns:
        (normalized, sigmas): normalized[l] has the shape and dtype of weights[l]; sigmas (L,) float32
        (float64 for float64 weights).
    """
    weights, dims, backend, sigma, buf = _power_iteration(weights, us, vs, n_power_iterations, eps, dims)
    flat = _sn_normalize(weights, sigma, buf, dims, backend)
    _LATEST[0] = _LATEST[1] = None
    return [o.view(w.shape) for o, w in zip(flat.split([w.numel() for w in weights]), weights)], sigma
