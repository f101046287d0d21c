"""Triton kernel of the san family (meaning and floors: gankern/ops/san.py).

san_kernel: one program per work item (layer l, block of BP kernel pairs, block of BF frequencies). It evaluates the
DFT of its pairs' k x k kernels at its frequencies on the fly, tap by tap (phases from integer arithmetic modulo the
layer's input size, so that large sizes keep their precision), keeps re / im of the (BP, BF) tile in registers and
writes the tile's largest magnitude and where it is: the zero-padded (O, I, H, W) spectrum is never stored.
Frequencies cover the half plane v in [0, W // 2] only: a real kernel's spectrum is Hermitian,
|w^(u, v)| = |w^(-u, -v)|. All layers of a model go in one launch (the work table lists every layer's items).
"""
import triton
import triton.language as tl

BP = 32   # kernel pairs per program
BF = 64   # frequencies per program


@triton.jit
def san_kernel(w, layers, items, out_val, out_arg, BP: tl.constexpr, BF: tl.constexpr):
    """w: all layers' kernels, fp32, flat ((O * I, kh * kw) row-major per layer, layers one after another);
    layers: (L, 7) int64 rows (offset in w, pairs O * I, kh, kw, H, W, frequencies H * (W // 2 + 1));
    items: (n, 3) int32 rows (layer, first pair, first frequency); out_val: (n,) fp32 the item's largest |w^|
    (NaN when any of its values is NaN); out_arg: (n,) int64, pair * frequencies + frequency of that maximum."""
    item = tl.program_id(0)
    layer = tl.load(items + item * 3)
    p0 = tl.load(items + item * 3 + 1)
    f0 = tl.load(items + item * 3 + 2)
    row = layers + layer * 7
    offset = tl.load(row)
    npairs = tl.load(row + 1).to(tl.int32)
    kh = tl.load(row + 2).to(tl.int32)
    kw = tl.load(row + 3).to(tl.int32)
    H = tl.load(row + 4).to(tl.int32)
    W = tl.load(row + 5).to(tl.int32)
    nfreq = tl.load(row + 6).to(tl.int32)
    p = p0 + tl.arange(0, BP)
    f = f0 + tl.arange(0, BF)
    pmask = p < npairs
    fmask = f < nfreq
    Wf = W // 2 + 1
    u = f // Wf
    v = f % Wf
    kk = kh * kw
    base = w + offset + p.to(tl.int64) * kk  # [BP] the pairs' first taps
    re = tl.zeros([BP, BF], dtype=tl.float32)
    im = tl.zeros([BP, BF], dtype=tl.float32)
    for t in range(0, kk):
        a = t // kw
        b = t % kw
        # phase 2 pi (a u / H + b v / W) = 2 pi q / (H W), q reduced modulo H W in integers
        q = ((a * u) % H) * W + ((b * v) % W) * H  # [BF]
        ang = q.to(tl.float32) * (6.283185307179586 / (H * W).to(tl.float32))
        tap = tl.load(base + t, mask=pmask, other=0.0)  # [BP]
        re += tap[:, None] * tl.cos(ang)[None, :]
        im -= tap[:, None] * tl.sin(ang)[None, :]
    mag2 = re * re + im * im
    valid = pmask[:, None] & fmask[None, :]
    isnan = valid & (mag2 != mag2)
    flat = tl.reshape(tl.where(valid & (mag2 == mag2), mag2, -1.0), [BP * BF])
    best = tl.argmax(flat, 0)
    top = tl.max(flat, 0)
    any_nan = tl.max(tl.reshape(isnan.to(tl.int32), [BP * BF]), 0) > 0
    tl.store(out_val + item, tl.where(any_nan, float("nan"), tl.sqrt(top)))
    pair = p0 + best // BF
    tl.store(out_arg + item, pair.to(tl.int64) * nfreq + f0 + best % BF)


def constants(w_flat, layers, items, out_val, out_arg):
    """Launch the work table ``items`` (see san_kernel) over the flat kernels ``w_flat``."""
    san_kernel[(items.shape[0],)](w_flat, layers, items, out_val, out_arg, BP=BP, BF=BF)
