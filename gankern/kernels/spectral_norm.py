"""Triton kernels of the spectral-norm family: power iteration and W / sigma for many layers per launch.

The layer table ``meta`` (L, 9) int64 and the work lists are the same as the CUDA kernels' (see
csrc/include/gankern/spectral_norm.h): [W ptr, u ptr, v ptr, h, w, inner, h_off, w_off, n_off], h_off and w_off into
one fp32 buffer (t, then s; offsets multiples of 4 elements); W(r, c) lives at
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
_COLS_ROW_STEP = 16     # sn_cols: rows per step


@triton.jit
def _layer_ptr(meta, layer, field, DT: tl.constexpr):
    return tl.load(meta + layer * 9 + field).to(tl.pointer_type(DT))


@triton.jit
def _layer_dims(meta, layer):
    """h, w, inner of a layer as int32 (a layer has fewer than 2**31 elements: the launchers check it)."""
    return (tl.load(meta + layer * 9 + 3).to(tl.int32), tl.load(meta + layer * 9 + 4).to(tl.int32),
            tl.load(meta + layer * 9 + 5).to(tl.int32))


@triton.jit
def _w_tile(w_addr, rows, cols, h, w, inner, DT: tl.constexpr):
    """W(rows[:, None], cols[None, :]) in fp32, 0 outside the matrix (W at address w_addr); int32 offsets. W's rows
    are contiguous when inner == w (dim 0): then, with W 16-byte aligned and w a multiple of 16, vector loads."""
    mask = (rows < h)[:, None] & (cols < w)[None, :]
    if inner == w:
        if (w % 16 == 0) & (w_addr % 16 == 0):
            # hints: the compiler sees alignment through multiple_of on a pointer and through * 16 on an int
            cols16 = tl.max_contiguous(tl.multiple_of(cols, 16), 16)  # tiles start at multiples of 16 columns
            w16 = (w // 16) * 16
            ptrs = tl.multiple_of(w_addr.to(tl.pointer_type(DT)), 16) + rows[:, None] * w16
            x = tl.load(ptrs + cols16[None, :], mask=(rows < h)[:, None] & (cols16 < w16)[None, :], other=0.0)
        else:
            x = tl.load(w_addr.to(tl.pointer_type(DT)) + rows[:, None] * w + cols[None, :], mask=mask, other=0.0)
    else:
        idx = (cols // inner)[None, :] * (h * inner) + rows[:, None] * inner + (cols % inner)[None, :]
        x = tl.load(w_addr.to(tl.pointer_type(DT)) + idx, mask=mask, other=0.0)
    return x.to(tl.float32)


@triton.jit
def sn_rows_kernel(meta, items, flat, DT: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """t[h_off + r] = sum_c W(r, c) v[c] for ROWS rows; the program of row 0 also zeroes the layer's s (at w_off)
    for the columns pass. flat: the fp32 buffer of t, s and sigma. items: (n, 2) [layer, row0]."""
    pid = tl.program_id(0)
    layer = tl.load(items + 2 * pid)
    row0 = tl.load(items + 2 * pid + 1)
    w_addr = tl.load(meta + layer * 9)
    v_ptr = _layer_ptr(meta, layer, 2, DT)
    h, w, inner = _layer_dims(meta, layer)
    h_off = tl.load(meta + layer * 9 + 6)
    rows = row0 + tl.arange(0, ROWS)
    acc = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, w, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        vv = tl.load(v_ptr + cols, mask=cols < w, other=0.0).to(tl.float32)
        acc += _w_tile(w_addr, rows, cols, h, w, inner, DT) * vv[None, :]
    tl.store(flat + h_off + rows, tl.sum(acc, axis=1), mask=rows < h)
    if row0 == 0:
        s_ptr = flat + tl.multiple_of(tl.load(meta + layer * 9 + 7), 4)
        for c0 in range(0, w, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            tl.store(s_ptr + cols, tl.zeros([BLOCK_C], dtype=tl.float32), mask=cols < w)


@triton.jit
def sn_cols_kernel(meta, items, flat, DT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                   ROW_STEP: tl.constexpr):
    """s[w_off + c] += sum_{r in item} t[h_off + r] W(r, c) (t not yet normalized: the reduce pass divides s by
    |t|), ROW_STEP rows at a time (a whole ROWS x COLS tile live at once took 255 registers and spilled).
    items: (n, 3) [layer, row0, col0], col0 a multiple of COLS."""
    pid = tl.program_id(0)
    layer = tl.load(items + 3 * pid)
    row0 = tl.load(items + 3 * pid + 1)
    col0 = tl.multiple_of(tl.load(items + 3 * pid + 2), COLS)  # so _w_tile's vector path sees aligned columns
    w_addr = tl.load(meta + layer * 9)
    h, w, inner = _layer_dims(meta, layer)
    t_ptr = flat + tl.multiple_of(tl.load(meta + layer * 9 + 6), 4)
    w_off = tl.load(meta + layer * 9 + 7)
    cols = col0 + tl.arange(0, COLS)
    acc = tl.zeros([COLS], dtype=tl.float32)
    for r0 in tl.static_range(0, ROWS, ROW_STEP):
        rows = row0 + r0 + tl.arange(0, ROW_STEP)
        tt = tl.load(t_ptr + rows, mask=rows < h, other=0.0)
        acc += tl.sum(_w_tile(w_addr, rows, cols, h, w, inner, DT) * tt[:, None], axis=0)
    tl.atomic_add(flat + w_off + cols, acc, mask=cols < w)


@triton.jit
def _sum_squares(x_ptr, n, BLOCK: tl.constexpr):
    """sum x[i]^2 for i < n (x_ptr 16-byte aligned): whole blocks unmasked (16-byte vector loads), then the tail."""
    n_whole = (n // BLOCK) * BLOCK
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i0 in range(0, n_whole, BLOCK):
        i = tl.max_contiguous(tl.multiple_of(i0 + tl.arange(0, BLOCK), BLOCK), BLOCK)
        x = tl.load(x_ptr + i)
        acc += x * x
    i = n_whole + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n, other=0.0)
    return tl.sum(acc + x * x, axis=0)


@triton.jit
def _scale_into(x_ptr, dst, n, factor, DT: tl.constexpr, BLOCK: tl.constexpr):
    """x[i] *= factor in place (fp32; x_ptr 16-byte aligned: whole blocks in 16-byte vectors) and dst[i] = x[i] in
    DT, for i < n."""
    n_whole = (n // BLOCK) * BLOCK
    for i0 in range(0, n_whole, BLOCK):
        i = tl.max_contiguous(tl.multiple_of(i0 + tl.arange(0, BLOCK), BLOCK), BLOCK)
        y = tl.load(x_ptr + i) * factor
        tl.store(x_ptr + i, y)
        tl.store(dst + i, y.to(DT))
    i = n_whole + tl.arange(0, BLOCK)
    y = tl.load(x_ptr + i, mask=i < n, other=0.0) * factor
    tl.store(x_ptr + i, y, mask=i < n)
    tl.store(dst + i, y.to(DT), mask=i < n)


@triton.jit
def sn_reduce_kernel(meta, flat, sigma, eps, MODE: tl.constexpr, DT: tl.constexpr, BLOCK: tl.constexpr):
    """One program per layer; flat: the fp32 buffer of t (at h_off) and s (at w_off), offsets multiples of 4
    elements (16 bytes: vector loads); sigma (L,) fp32. MODE 0 (end of an iteration, s = W^T t): nt = max(|t|, eps),
    u = t / nt, s' = s / nt, v = s' / max(|s'|, eps), sigma = |s'|^2 / max(|s'|, eps), u and v also written back
    into flat; MODE 1: sigma = u . t."""
    layer = tl.program_id(0)
    u_ptr = _layer_ptr(meta, layer, 1, DT)
    h = tl.load(meta + layer * 9 + 3)
    t_ptr = flat + tl.multiple_of(tl.load(meta + layer * 9 + 6), 4)
    if MODE == 1:
        h_whole = (h // BLOCK) * BLOCK
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i0 in range(0, h_whole, BLOCK):
            i = tl.max_contiguous(tl.multiple_of(i0 + tl.arange(0, BLOCK), BLOCK), BLOCK)
            acc += tl.load(t_ptr + i) * tl.load(u_ptr + i).to(tl.float32)
        i = h_whole + tl.arange(0, BLOCK)
        acc += tl.load(t_ptr + i, mask=i < h, other=0.0) * tl.load(u_ptr + i, mask=i < h, other=0.0).to(tl.float32)
        tl.store(sigma + layer, tl.sum(acc, axis=0))
    else:
        w = tl.load(meta + layer * 9 + 4)
        s_ptr = flat + tl.multiple_of(tl.load(meta + layer * 9 + 7), 4)
        # max(norm, eps) keeping a NaN norm, as torch's clamp_min in F.normalize (the GPU's max returns eps)
        norm_t = tl.sqrt(_sum_squares(t_ptr, h, BLOCK))
        nt = tl.where(norm_t < eps, eps, norm_t)
        norm_s = tl.sqrt(_sum_squares(s_ptr, w, BLOCK)) / nt
        ns = tl.where(norm_s < eps, eps, norm_s)
        _scale_into(t_ptr, u_ptr, h, 1.0 / nt, DT, BLOCK)
        _scale_into(s_ptr, _layer_ptr(meta, layer, 2, DT), w, 1.0 / (nt * ns), DT, BLOCK)
        tl.store(sigma + layer, norm_s * norm_s / ns)


@triton.jit
def _elementwise_item(meta, items):
    """This program's item of an elementwise work list ((n, 2) [layer, e0], e0 a multiple of the item size):
    layer, e0, the layer's numel and n_off, and W's address."""
    pid = tl.program_id(0)
    layer = tl.load(items + 2 * pid)
    numel = tl.load(meta + layer * 9 + 3) * tl.load(meta + layer * 9 + 4)
    return layer, tl.load(items + 2 * pid + 1), numel, tl.load(meta + layer * 9 + 8), tl.load(meta + layer * 9)


@triton.jit
def _whole_and_aligned(e0, numel, n_off, w_addr, ELEMS: tl.constexpr):
    """The item takes the vector path: no mask, W and n_off 16-byte aligned (n_off a multiple of 16 elements)."""
    return (e0 + ELEMS <= numel) & (w_addr % 16 == 0) & (n_off % 16 == 0)


@triton.jit
def sn_scale_kernel(meta, items, sigma, out, DT: tl.constexpr, ELEMS: tl.constexpr):
    """out[n_off + e] = W[e] / sigma[layer]. items: (n, 2) [layer, e0]."""
    layer, e0, numel, n_off, w_addr = _elementwise_item(meta, items)
    inv = 1.0 / tl.load(sigma + layer)
    e = e0 + tl.arange(0, ELEMS)
    if _whole_and_aligned(e0, numel, n_off, w_addr, ELEMS):
        e = tl.max_contiguous(tl.multiple_of(e, ELEMS), ELEMS)
        x = tl.load(tl.multiple_of(w_addr.to(tl.pointer_type(DT)), 16) + e).to(tl.float32)
        tl.store(out + (n_off // 16) * 16 + e, (x * inv).to(DT))
    else:
        x = tl.load(w_addr.to(tl.pointer_type(DT)) + e, mask=e < numel, other=0.0).to(tl.float32)
        tl.store(out + n_off + e, (x * inv).to(DT), mask=e < numel)


@triton.jit
def sn_grad_dot_kernel(meta, items, g, dots, ELEMS: tl.constexpr, DT: tl.constexpr):
    """dots[layer] += sum_e G[n_off + e] * W[e] over ELEMS elements. items: (n, 2) [layer, e0]."""
    layer, e0, numel, n_off, w_addr = _elementwise_item(meta, items)
    e = e0 + tl.arange(0, ELEMS)
    if _whole_and_aligned(e0, numel, n_off, w_addr, ELEMS):
        e = tl.max_contiguous(tl.multiple_of(e, ELEMS), ELEMS)
        x = tl.load(tl.multiple_of(w_addr.to(tl.pointer_type(DT)), 16) + e).to(tl.float32)
        gg = tl.load(g + (n_off // 16) * 16 + e).to(tl.float32)
    else:
        x = tl.load(w_addr.to(tl.pointer_type(DT)) + e, mask=e < numel, other=0.0).to(tl.float32)
        gg = tl.load(g + n_off + e, mask=e < numel, other=0.0).to(tl.float32)
    tl.atomic_add(dots + layer, tl.sum(x * gg, axis=0))


@triton.jit
def sn_grad_kernel(meta, items, g, sigma, dots, flat, dw, ELEMS: tl.constexpr):
    """dW[n_off + e] = G / sigma - dots / sigma^2 * u[h_off + r] * v[w_off + c], (r, c) the matrix position of e
    (int32 index arithmetic); u and v in the fp32 buffer flat."""
    layer, e0, numel, n_off, w_addr = _elementwise_item(meta, items)
    h, w, inner = _layer_dims(meta, layer)
    h_off = tl.load(meta + layer * 9 + 6)
    w_off = tl.load(meta + layer * 9 + 7)
    e = e0 + tl.arange(0, ELEMS)
    e32 = e.to(tl.int32)
    if inner == w:  # dim 0: W(r, c) at r * w + c
        r = e32 // w
        c = e32 - r * w
    else:
        q = e32 // inner
        r = q % h
        c = (q // h) * inner + (e32 - q * inner)
    s = tl.load(sigma + layer)
    coef = tl.load(dots + layer) / (s * s)
    mask = e < numel
    uu = tl.load(flat + h_off + r, mask=mask, other=0.0)
    vv = tl.load(flat + w_off + c, mask=mask, other=0.0)
    if _whole_and_aligned(e0, numel, n_off, w_addr, ELEMS):  # (W itself is not read here)
        e = tl.max_contiguous(tl.multiple_of(e, ELEMS), ELEMS)
        n16 = (n_off // 16) * 16
        gg = tl.load(g + n16 + e).to(tl.float32)
        tl.store(dw + n16 + e, (gg / s - coef * uu * vv).to(dw.dtype.element_ty))
    else:
        gg = tl.load(g + n_off + e, mask=mask, other=0.0).to(tl.float32)
        tl.store(dw + n_off + e, (gg / s - coef * uu * vv).to(dw.dtype.element_ty), mask=mask)


def rows(meta, items, n_items, flat, dt):
    sn_rows_kernel[(n_items,)](meta, items, flat, DT=dt, ROWS=ROWS_PER_ITEM, BLOCK_C=_BLOCK_C)


def cols(meta, items, n_items, flat, dt):
    sn_cols_kernel[(n_items,)](meta, items, flat, DT=dt, ROWS=COLS_ROWS, COLS=COLS_COLS, ROW_STEP=_COLS_ROW_STEP)


def reduce(meta, n_layers, mode, flat, sigma, eps, dt):
    sn_reduce_kernel[(n_layers,)](meta, flat, sigma, eps, MODE=mode, DT=dt, BLOCK=_BLOCK_R)


def scale(meta, items, n_items, sigma, out, dt):
    sn_scale_kernel[(n_items,)](meta, items, sigma, out, DT=dt, ELEMS=SCALE_ELEMS)


def grad_dot(meta, items, n_items, g, dots, dt):
    sn_grad_dot_kernel[(n_items,)](meta, items, g, dots, ELEMS=SCALE_ELEMS, DT=dt)


def grad(meta, items, n_items, g, sigma, dots, flat, dw):
    sn_grad_kernel[(n_items,)](meta, items, g, sigma, dots, flat, dw, ELEMS=SCALE_ELEMS)
