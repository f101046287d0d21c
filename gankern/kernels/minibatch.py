"""Triton kernels of the minibatch family (meaning and floors: gankern/ops/minibatch.py).

mb_disc_kernel: one program per (block of BI rows i, kernel b). It keeps M[i-block, b, :] in registers and streams
the rows j in blocks of BJ: the (BI, BJ, C) differences and the (BI, BJ) weights live only in registers.
Forward: o[i, b] = sum_{j != i} e_ij. Backward: dM[i, b, :] = -sum_j (g_i + g_j) e_ij sign(M_i - M_j), each program
summing over all j for its own rows (no atomics; every pair is evaluated from both sides).

mb_std_kernel: one program per (group slot m, channel group f): it reads the G x (c * H * W) slab of x once.
Forward: writes the slab's copy into the output and the std of the group into the F extra channels of its G samples.
Backward: dx = dout[:, :C] + (d / (G * s)) * gstd / (c * H * W), gstd the sum of dout's extra channel f over the group.
"""
import triton
import triton.language as tl

from ._host import cdiv, next_power_of_2

_DISC_TILE = 8192   # elements of the (BI, BJ, CP) register tile
_STD_TILE = 4096    # elements of the (GP, BLOCK) register tile


@triton.jit
def mb_disc_kernel(M, g, out, N, B, C, BACKWARD: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
                   CP: tl.constexpr):
    """M: (N, B, C); g: (N, B) (backward only); out: o (N, B) forward, dM (N, B, C) backward."""
    b = tl.program_id(1)
    i = tl.program_id(0) * BI + tl.arange(0, BI)
    c = tl.arange(0, CP)
    imask = i < N
    cmask = c < C
    offs_i = (i.to(tl.int64) * B + b) * C
    mi = tl.load(M + offs_i[:, None] + c[None, :], mask=imask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
    if BACKWARD:
        gi = tl.load(g + i.to(tl.int64) * B + b, mask=imask, other=0.0).to(tl.float32)
        acc = tl.zeros([BI, CP], dtype=tl.float32)
    else:
        acc = tl.zeros([BI], dtype=tl.float32)
    for j0 in range(0, N, BJ):
        j = j0 + tl.arange(0, BJ)
        jmask = j < N
        offs_j = (j.to(tl.int64) * B + b) * C
        mj = tl.load(M + offs_j[:, None] + c[None, :], mask=jmask[:, None] & cmask[None, :], other=0.0)
        diff = mi[:, None, :] - mj.to(tl.float32)[None, :, :]  # [BI, BJ, CP]; padded c: 0
        e = tl.exp(-tl.sum(tl.abs(diff), axis=2))  # [BI, BJ]
        e = tl.where((i[:, None] != j[None, :]) & jmask[None, :], e, 0.0)
        if BACKWARD:
            gj = tl.load(g + j.to(tl.int64) * B + b, mask=jmask, other=0.0).to(tl.float32)
            w = (gi[:, None] + gj[None, :]) * e
            sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
            acc -= tl.sum(w[:, :, None] * sign, axis=1)
        else:
            acc += tl.sum(e, axis=1)
    if BACKWARD:
        tl.store(out + offs_i[:, None] + c[None, :], acc.to(out.dtype.element_ty),
                 mask=imask[:, None] & cmask[None, :])
    else:
        tl.store(out + i.to(tl.int64) * B + b, acc.to(out.dtype.element_ty), mask=imask)


@triton.jit
def mb_std_kernel(x, go, out, M, C, HW, F, eps, G: tl.constexpr, GP: tl.constexpr, BACKWARD: tl.constexpr,
                  BLOCK: tl.constexpr):
    """x: (N, C, H, W); go: (N, C + F, H, W) (backward only); out: (N, C + F, H, W) forward, dx (N, C, H, W)
    backward. N = G * M; sample n = gi * M + m; channel group f holds channels [f * c, (f + 1) * c)."""
    m = tl.program_id(0) // F
    f = tl.program_id(0) % F
    cHW = (C // F) * HW
    gs = tl.arange(0, GP)
    gmask = gs < G
    n = (gs * M + m).to(tl.int64)  # [GP] the samples of the group
    slab_x = n * C * HW + f * cHW  # the slab's start in x (and dx)
    slab_o = n * (C + F) * HW + f * cHW  # in out / go
    extra = n * (C + F) * HW + (C + f) * HW  # the extra channel f in out / go
    if BACKWARD:
        gacc = tl.zeros([GP, BLOCK], dtype=tl.float32)
        for k0 in range(0, HW, BLOCK):
            k = k0 + tl.arange(0, BLOCK)
            gacc += tl.load(go + extra[:, None] + k[None, :], mask=gmask[:, None] & (k < HW)[None, :],
                            other=0.0).to(tl.float32)
        coef = tl.sum(tl.sum(gacc, axis=1), axis=0) / (cHW * G)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(0, cHW, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        kmask = k < cHW
        mask = gmask[:, None] & kmask[None, :]
        v = tl.load(x + slab_x[:, None] + k[None, :], mask=mask, other=0.0).to(tl.float32)  # [GP, BLOCK]
        d = tl.where(mask, v - (tl.sum(v, axis=0) / G)[None, :], 0.0)
        s = tl.sqrt(tl.sum(d * d, axis=0) / G + eps)  # [BLOCK]
        if BACKWARD:
            gx = tl.load(go + slab_o[:, None] + k[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(out + slab_x[:, None] + k[None, :], (gx + d * (coef / s)[None, :]).to(out.dtype.element_ty),
                     mask=mask)
        else:
            acc += tl.where(kmask, s, 0.0)
            tl.store(out + slab_o[:, None] + k[None, :], v.to(out.dtype.element_ty), mask=mask)
    if not BACKWARD:
        std = tl.sum(acc, axis=0) / cHW
        for k0 in range(0, HW, BLOCK):
            k = k0 + tl.arange(0, BLOCK)
            tl.store(out + extra[:, None] + k[None, :], tl.zeros([GP, BLOCK], dtype=tl.float32) + std,
                     mask=gmask[:, None] & (k < HW)[None, :])


def disc(M, g, out):
    """Forward (g None) or backward of the pair sums; M (N, B, C) contiguous, out preallocated."""
    N, B, C = M.shape
    CP = next_power_of_2(C)
    BI = max(1, min(32, 512 // CP))
    BJ = max(1, min(32, _DISC_TILE // (BI * CP)))
    # the backward's tile over 8 warps: over 4, the (16, 16, 32) fp32 one spills on sm_80 (168 registers + 24 B)
    mb_disc_kernel[(cdiv(N, BI), B)](M, M if g is None else g, out, N, B, C, BACKWARD=g is not None,
                                            BI=BI, BJ=BJ, CP=CP, num_warps=4 if g is None else 8)


def std(x, go, out, G, F, eps):
    """Forward (go None) or backward of minibatch stddev; x (N, C, H, W) contiguous, out preallocated."""
    N, C, H, W = x.shape
    GP = next_power_of_2(G)
    BLOCK = max(1, min(1024, next_power_of_2(C // F * H * W), _STD_TILE // GP))
    mb_std_kernel[(N // G * F,)](x, x if go is None else go, out, N // G, C, H * W, F, eps, G=G, GP=GP,
                                 BACKWARD=go is not None, BLOCK=BLOCK)
