"""Triton kernels of the spectral-norm family: power iteration and W / sigma for many layers per launch.

The layer table ``meta`` (L, 9) int64 and the work lists are the same as the CUDA kernels' (see
csrc/include/gankern/spectral_norm.h): [W ptr, u ptr, v ptr, h, w, inner, h_off, w_off, n_off]; W(r, c) lives at
(c // inner) * h * inner + r * inner + c % inner. Floor per step: W read twice, W / sigma written once.
"""
import triton
import triton.language as tl

ROWS_PER_ITEM = 16      # sn_rows: rows per program
COLS_ROWS = 64          # sn_cols: rows per program
COLS_COLS = 128         # sn_cols: columns per program
SCALE_ELEMS = 2048      # sn_scale: elements per program
_BLOCK_C = 128          # sn_rows: columns per loop step
_BLOCK_R = 1024         # sn_reduce: elements per loop step


@triton.jit
def _layer_ptr(meta, layer, field, DT: tl.constexpr):
    return tl.load(meta + layer * 9 + field).to(tl.pointer_type(DT))


@triton.jit
def _w_index(rows, cols, h, w, inner):
    """Offsets of W(rows[:, None], cols[None, :]); dim == 0 (inner == w) skips the divisions."""
    if inner == w:
        idx = rows[:, None] * w + cols[None, :]
    else:
        idx = (cols // inner)[None, :] * (h * inner) + rows[:, None] * inner + (cols % inner)[None, :]
    return idx


@triton.jit
def sn_rows_kernel(meta, items, t, DT: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """t[h_off + r] = sum_c W(r, c) v[c] for ROWS rows. items: (n, 2) [layer, row0]."""
    pid = tl.program_id(0)
    layer = tl.load(items + 2 * pid)
    row0 = tl.load(items + 2 * pid + 1)
    w_ptr = _layer_ptr(meta, layer, 0, DT)
    v_ptr = _layer_ptr(meta, layer, 2, DT)
    h = tl.load(meta + layer * 9 + 3)
    w = tl.load(meta + layer * 9 + 4)
    inner = tl.load(meta + layer * 9 + 5)
    h_off = tl.load(meta + layer * 9 + 6)
    rows = row0 + tl.arange(0, ROWS)
    rmask = rows < h
    acc = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, w, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < w
        x = tl.load(w_ptr + _w_index(rows, cols, h, w, inner), mask=rmask[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)
        vv = tl.load(v_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        acc += x * vv[None, :]
    tl.store(t + h_off + rows, tl.sum(acc, axis=1), mask=rmask)


@triton.jit
def sn_cols_kernel(meta, items, s, DT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """s[w_off + c] += sum_{r in item} u[r] W(r, c). items: (n, 3) [layer, row0, col0]."""
    pid = tl.program_id(0)
    layer = tl.load(items + 3 * pid)
    row0 = tl.load(items + 3 * pid + 1)
    col0 = tl.load(items + 3 * pid + 2)
    w_ptr = _layer_ptr(meta, layer, 0, DT)
    u_ptr = _layer_ptr(meta, layer, 1, DT)
    h = tl.load(meta + layer * 9 + 3)
    w = tl.load(meta + layer * 9 + 4)
    inner = tl.load(meta + layer * 9 + 5)
    w_off = tl.load(meta + layer * 9 + 7)
    rows = row0 + tl.arange(0, ROWS)
    cols = col0 + tl.arange(0, COLS)
    rmask = rows < h
    cmask = cols < w
    x = tl.load(w_ptr + _w_index(rows, cols, h, w, inner), mask=rmask[:, None] & cmask[None, :],
                other=0.0).to(tl.float32)
    uu = tl.load(u_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    tl.atomic_add(s + w_off + cols, tl.sum(x * uu[:, None], axis=0), mask=cmask)


@triton.jit
def sn_reduce_kernel(meta, flat, sigma, eps, MODE: tl.constexpr, DT: tl.constexpr, BLOCK: tl.constexpr):
    """One program per layer. MODE 0: u = t / max(|t|, eps); 1: v = s / max(|s|, eps), sigma = |s|^2 / max(|s|, eps);
    2: sigma = u . t. Modes 0 and 1 also write the normalized vector back into ``flat`` in fp32."""
    layer = tl.program_id(0)
    u_ptr = _layer_ptr(meta, layer, 1, DT)
    if MODE == 1:
        n = tl.load(meta + layer * 9 + 4)
        off = tl.load(meta + layer * 9 + 7)
        dst = _layer_ptr(meta, layer, 2, DT)
    else:
        n = tl.load(meta + layer * 9 + 3)
        off = tl.load(meta + layer * 9 + 6)
        dst = u_ptr
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        x = tl.load(flat + off + i, mask=i < n, other=0.0)
        if MODE == 2:
            acc += x * tl.load(u_ptr + i, mask=i < n, other=0.0).to(tl.float32)
        else:
            acc += x * x
    total = tl.sum(acc, axis=0)
    if MODE == 2:
        tl.store(sigma + layer, total)
    else:
        denom = tl.maximum(tl.sqrt(total), eps)
        for i0 in range(0, n, BLOCK):
            i = i0 + tl.arange(0, BLOCK)
            y = tl.load(flat + off + i, mask=i < n, other=0.0) / denom
            tl.store(flat + off + i, y, mask=i < n)
            tl.store(dst + i, y.to(DT), mask=i < n)
        if MODE == 1:
            tl.store(sigma + layer, total / denom)


@triton.jit
def _elementwise_item(meta, items, DT: tl.constexpr, ELEMS: tl.constexpr):
    """This program's item of an elementwise work list ((n, 2) [layer, e0]): the layer, the offsets e of its ELEMS
    elements, their mask, the layer's n_off and W[e] in fp32."""
    pid = tl.program_id(0)
    layer = tl.load(items + 2 * pid)
    e = tl.load(items + 2 * pid + 1) + tl.arange(0, ELEMS)
    mask = e < tl.load(meta + layer * 9 + 3) * tl.load(meta + layer * 9 + 4)
    x = tl.load(_layer_ptr(meta, layer, 0, DT) + e, mask=mask, other=0.0).to(tl.float32)
    return layer, e, mask, tl.load(meta + layer * 9 + 8), x


@triton.jit
def sn_scale_kernel(meta, items, sigma, out, DT: tl.constexpr, ELEMS: tl.constexpr):
    """out[n_off + e] = W[e] / sigma[layer]. items: (n, 2) [layer, e0]."""
    layer, e, mask, n_off, x = _elementwise_item(meta, items, DT, ELEMS)
    inv = 1.0 / tl.load(sigma + layer)
    tl.store(out + n_off + e, (x * inv).to(DT), mask=mask)


@triton.jit
def sn_grad_dot_kernel(meta, items, g, dots, ELEMS: tl.constexpr, DT: tl.constexpr):
    """dots[layer] += sum_e G[n_off + e] * W[e] over ELEMS elements. items: (n, 2) [layer, e0]."""
    layer, e, mask, n_off, x = _elementwise_item(meta, items, DT, ELEMS)
    gg = tl.load(g + n_off + e, mask=mask, other=0.0).to(tl.float32)
    tl.atomic_add(dots + layer, tl.sum(x * gg, axis=0))


@triton.jit
def sn_grad_kernel(meta, items, g, sigma, dots, u, v, dw, ELEMS: tl.constexpr):
    """dW[n_off + e] = G / sigma - dots / sigma^2 * u[h_off + r] * v[w_off + c], (r, c) the matrix position of e."""
    pid = tl.program_id(0)
    layer = tl.load(items + 2 * pid)
    e0 = tl.load(items + 2 * pid + 1)
    h = tl.load(meta + layer * 9 + 3)
    w = tl.load(meta + layer * 9 + 4)
    inner = tl.load(meta + layer * 9 + 5)
    h_off = tl.load(meta + layer * 9 + 6)
    w_off = tl.load(meta + layer * 9 + 7)
    n_off = tl.load(meta + layer * 9 + 8)
    e = e0 + tl.arange(0, ELEMS)
    mask = e < h * w
    r = (e // inner) % h
    c = (e // (h * inner)) * inner + e % inner
    s = tl.load(sigma + layer)
    coef = tl.load(dots + layer) / (s * s)
    gg = tl.load(g + n_off + e, mask=mask, other=0.0).to(tl.float32)
    uu = tl.load(u + h_off + r, mask=mask, other=0.0)
    vv = tl.load(v + w_off + c, mask=mask, other=0.0)
    tl.store(dw + n_off + e, (gg / s - coef * uu * vv).to(dw.dtype.element_ty), mask=mask)


def rows(meta, items, t, dt):
    sn_rows_kernel[(items.shape[0],)](meta, items, t, DT=dt, ROWS=ROWS_PER_ITEM, BLOCK_C=_BLOCK_C)


def cols(meta, items, s, dt):
    sn_cols_kernel[(items.shape[0],)](meta, items, s, DT=dt, ROWS=COLS_ROWS, COLS=COLS_COLS)


def reduce(meta, n_layers, mode, flat, eps, sigma, dt):
    sn_reduce_kernel[(n_layers,)](meta, flat, sigma, eps, MODE=mode, DT=dt, BLOCK=_BLOCK_R)


def scale(meta, items, sigma, out, dt):
    sn_scale_kernel[(items.shape[0],)](meta, items, sigma, out, DT=dt, ELEMS=SCALE_ELEMS)


def grad_dot(meta, items, g, dots, dt):
    sn_grad_dot_kernel[(items.shape[0],)](meta, items, g, dots, ELEMS=SCALE_ELEMS, DT=dt)


def grad(meta, items, g, sigma, dots, u, v, dw):
    sn_grad_kernel[(items.shape[0],)](meta, items, g, sigma, dots, u, v, dw, ELEMS=SCALE_ELEMS)
