"""Triton kernels of the san family (meaning and floors: gankern/ops/san.py).

san_kernel: one program per work item (layer l, block of BP kernel pairs, block of BF frequencies). It evaluates the
DFT of its pairs' k x k kernels at its frequencies on the fly, tap by tap (phases from integer arithmetic modulo the
layer's input size, so that large sizes keep their precision), keeps re / im of the (BP, BF) tile in registers and
writes the tile's largest magnitude and where it is: the zero-padded (O, I, H, W) spectrum is never stored.
Frequencies cover the half plane v in [0, W // 2] only: a real kernel's spectrum is Hermitian,
|w^(u, v)| = |w^(-u, -v)|. All layers of a model go in one launch (the work table lists every layer's items).
san_finish_kernel: one program per layer reduces its items' maxima to the layer's constant and maximizer.
san_grad_kernel: one program per layer writes d s / dw on the layer's maximizing pair.

Layer table ``layers`` (L, len(LAYER_COLUMNS)) int64, columns named by LAYER_COLUMNS; items (n, 3) int32 rows
(layer, first pair, first frequency), each layer's items contiguous from its ITEM0.
"""
import triton
import triton.language as tl

BP = 32   # kernel pairs per program
BF = 64   # frequencies per program
_FINISH_BLOCK = 128  # items per loop step of san_finish_kernel
_TAPS = 16           # taps per loop step of san_grad_kernel
NAN_FLAG = tl.constexpr(65536.0)  # added to an item's maximizer slot when any of its values is NaN (> BP * BF)
# the columns of the layer table: (offset in w, pairs O * I, kh, kw, H, W, frequencies H * (W // 2 + 1), first item,
# items); the host builds its rows in this order
LAYER_COLUMNS = ("offset", "pairs", "kh", "kw", "H", "W", "nfreq", "item0", "nitems")
OFFSET, PAIRS, KH, KW, H_, W_, NFREQ, ITEM0, NITEMS = (tl.constexpr(i) for i in range(len(LAYER_COLUMNS)))
_NCOLS = tl.constexpr(len(LAYER_COLUMNS))
_TWO_PI = tl.constexpr(6.283185307179586)


@triton.jit
def _field(layers, layer, col: tl.constexpr):
    return tl.load(layers + layer * _NCOLS + col)


@triton.jit
def _sincos(x):
    """(sin x, cos x) for 0 <= x < 4 pi, in plain arithmetic: x reduced by k pi / 2 (Cody-Waite, three parts of
    pi / 2) and Cephes' single-precision polynomials on [-pi / 4, pi / 4] (about 1 ulp). libdevice's sinf / cosf
    keep a slow path for huge arguments whose table lives on the stack (a 28-byte frame); the phases here never
    need it."""
    k = tl.floor(x * 0.6366197723675814 + 0.5)  # 2 / pi
    r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.549789948768648e-8
    r2 = r * r
    s = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4))
    c = 1.0 - 0.5 * r2 + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5))
    q = k.to(tl.int32) & 3
    sin = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    cos = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    return sin, cos


@triton.jit
def san_kernel(w, layers, items, part, BP: tl.constexpr, BF: tl.constexpr):
    """w: all layers' kernels, flat ((O * I, kh * kw) row-major per layer, layers one after another), fp32, fp16 or
    bf16; part: (2, n) fp32: part[0, item] the item's largest |w^| over values that are not NaN (-1 if none),
    part[1, item] where it is in the item's (BP, BF) tile, plus NAN_FLAG when any of its values is NaN."""
    item = tl.program_id(0)
    n_items = tl.num_programs(0)
    layer = tl.load(items + item * 3)
    p0 = tl.load(items + item * 3 + 1)
    f0 = tl.load(items + item * 3 + 2)
    offset = _field(layers, layer, OFFSET)
    npairs = _field(layers, layer, PAIRS).to(tl.int32)
    kh = _field(layers, layer, KH).to(tl.int32)
    kw = _field(layers, layer, KW).to(tl.int32)
    H = _field(layers, layer, H_).to(tl.int32)
    W = _field(layers, layer, W_).to(tl.int32)
    nfreq = _field(layers, layer, NFREQ).to(tl.int32)
    p = p0 + tl.arange(0, BP)
    f = f0 + tl.arange(0, BF)
    pmask = p < npairs
    fmask = f < nfreq
    Wf = W // 2 + 1
    u = f // Wf
    v = f % Wf
    kk = kh * kw
    base = w + offset + p.to(tl.int64) * kk  # [BP] the pairs' first taps
    scale = _TWO_PI / (H * W).to(tl.float32)
    re = tl.zeros([BP, BF], dtype=tl.float32)
    im = tl.zeros([BP, BF], dtype=tl.float32)
    # phase 2 pi (a u / H + b v / W) = 2 pi q / (H W), q reduced modulo H W in integers; tap t = a * kw + b, and
    # (a u) % H, (b v) % W advance by u, v (mod H, W) per step of a, b: no division in the loop
    au = tl.zeros([BF], dtype=tl.int32)
    for a in range(0, kh):
        bv = tl.zeros([BF], dtype=tl.int32)
        for b in range(0, kw):
            ang = (au * W + bv * H).to(tl.float32) * scale
            tap = tl.load(base + a * kw + b, mask=pmask, other=0.0).to(tl.float32)  # [BP]
            sin, cos = _sincos(ang)
            re += tap[:, None] * cos[None, :]
            im -= tap[:, None] * sin[None, :]
            bv = bv + v
            bv = tl.where(bv >= W, bv - W, bv)
        au = au + u
        au = tl.where(au >= H, au - H, au)
    mag2 = re * re + im * im
    valid = pmask[:, None] & fmask[None, :]
    isnan = valid & (mag2 != mag2)
    flat = tl.reshape(tl.where(valid & (mag2 == mag2), mag2, -1.0), [BP * BF])
    best = tl.argmax(flat, 0)
    top = tl.max(flat, 0)
    any_nan = tl.max(tl.reshape(isnan.to(tl.int32), [BP * BF]), 0)
    tl.store(part + item, tl.where(top >= 0, tl.sqrt(tl.maximum(top, 0.0)), -1.0))
    tl.store(part + n_items + item, best.to(tl.float32) + any_nan.to(tl.float32) * NAN_FLAG)


@triton.jit
def san_finish_kernel(layers, items, part, n_items, s, arg, BF: tl.constexpr, BLOCK: tl.constexpr):
    """Per layer: s (L,) fp32 = the largest item maximum (NaN when any item saw a NaN); arg (L, 3) int64 = (pair,
    u, v) of the first item reaching it (v in [0, W // 2])."""
    layer = tl.program_id(0)
    i0 = _field(layers, layer, ITEM0).to(tl.int32)
    n = _field(layers, layer, NITEMS).to(tl.int32)
    best_val = tl.full([BLOCK], -2.0, tl.float32)
    best_item = tl.full([BLOCK], 0, tl.int32)
    nan_seen = tl.zeros([BLOCK], dtype=tl.int32)
    for k0 in range(0, n, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        m = k < n
        val = tl.load(part + i0 + k, mask=m, other=-2.0)
        flag = tl.load(part + n_items + i0 + k, mask=m, other=0.0) >= NAN_FLAG
        nan_seen = tl.maximum(nan_seen, flag.to(tl.int32))
        better = val > best_val  # strict: the earlier item keeps a tie
        best_item = tl.where(better, k, best_item)
        best_val = tl.where(better, val, best_val)
    top = tl.max(best_val, 0)
    first = i0 + tl.min(tl.where(best_val == top, best_item, 2147483647), 0)
    pos = tl.load(part + n_items + first)
    local = tl.where(pos >= NAN_FLAG, pos - NAN_FLAG, pos).to(tl.int32)
    pair = tl.load(items + first * 3 + 1) + local // BF
    f = tl.load(items + first * 3 + 2) + local % BF
    Wf = (_field(layers, layer, W_) // 2 + 1).to(tl.int32)
    tl.store(s + layer, tl.where(tl.max(nan_seen, 0) > 0, float("nan"), top))
    tl.store(arg + layer * 3, pair.to(tl.int64))
    tl.store(arg + layer * 3 + 1, (f // Wf).to(tl.int64))
    tl.store(arg + layer * 3 + 2, (f % Wf).to(tl.int64))



@triton.jit
def san_grad_kernel(w, layers, arg, gs, gs_stride, dw, TAPS: tl.constexpr):
    """dw (flat like w, zeros outside the maximizing pairs): on layer l's pair, gs[l] * d|w^(u, v)| / dw
    = gs[l] * (re cos phi - im sin phi) / |w^| (0 where |w^| = 0), phi = 2 pi (a u / H + b v / W)."""
    layer = tl.program_id(0)
    kh = _field(layers, layer, KH).to(tl.int32)
    kw = _field(layers, layer, KW).to(tl.int32)
    H = _field(layers, layer, H_).to(tl.int32)
    W = _field(layers, layer, W_).to(tl.int32)
    pair = tl.load(arg + layer * 3)
    u = tl.load(arg + layer * 3 + 1).to(tl.int32)
    v = tl.load(arg + layer * 3 + 2).to(tl.int32)
    kk = kh * kw
    start = _field(layers, layer, OFFSET) + pair * kk
    scale = _TWO_PI / (H * W).to(tl.float32)
    re = tl.zeros([TAPS], dtype=tl.float32)
    im = tl.zeros([TAPS], dtype=tl.float32)
    for t0 in range(0, kk, TAPS):
        t = t0 + tl.arange(0, TAPS)
        ang = ((((t // kw) * u) % H) * W + (((t % kw) * v) % W) * H).to(tl.float32) * scale
        tap = tl.load(w + start + t, mask=t < kk, other=0.0).to(tl.float32)
        sin, cos = _sincos(ang)
        re += tap * cos
        im -= tap * sin
    re_s = tl.sum(re, 0)
    im_s = tl.sum(im, 0)
    mag = tl.sqrt(re_s * re_s + im_s * im_s)
    coef = tl.load(gs + layer * gs_stride).to(tl.float32) / mag
    for t0 in range(0, kk, TAPS):
        t = t0 + tl.arange(0, TAPS)
        ang = ((((t // kw) * u) % H) * W + (((t % kw) * v) % W) * H).to(tl.float32) * scale
        sin, cos = _sincos(ang)
        g = tl.where(mag > 0, (re_s * cos - im_s * sin) * coef, 0.0)
        tl.store(dw + start + t, g.to(dw.dtype.element_ty), mask=t < kk)


def constants(w_flat, layers, items, part, s, arg):
    """The work table ``items`` over the flat kernels ``w_flat`` (san_kernel), then each layer's s and arg."""
    n = items.shape[0]
    # 8 warps: 80 registers a thread (4 warps took 168): twice the resident warps per SM
    san_kernel[(n,)](w_flat, layers, items, part, BP=BP, BF=BF, num_warps=8)
    san_finish_kernel[(layers.shape[0],)](layers, items, part, n, s, arg, BF=BF, BLOCK=_FINISH_BLOCK)


def grad(w_flat, layers, arg, gs, dw):
    """dw = d (gs . s) / d w_flat, dw zero-filled by the caller."""
    san_grad_kernel[(layers.shape[0],)](w_flat, layers, arg, gs, gs.stride(0), dw, TAPS=_TAPS)
