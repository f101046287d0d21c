"""Triton kernels of the minibatch family (meaning and floors: gankern/ops/minibatch.py).

mb_disc_kernel: one program per (block of BI rows i, kernel b). It keeps M[i-block, b, :] in registers and streams
the rows j in blocks of BJ: the (BI, BJ, C) differences and the (BI, BJ) weights live only in registers.
Forward: o[i, b] = sum_{j != i} e_ij. Backward: dM[i, b, :] = -sum_j (g_i + g_j) e_ij sign(M_i - M_j), each program
summing over all j for its own rows (no atomics; every pair is evaluated from both sides).

mb_std_kernel: programs (group slot m, channel group f) x P parts of the G x (c * H * W) slab of x, each read once
(P > 1 when the slabs are too few to fill the GPU: std_split). Forward: writes the slab's copy into the output and
the std of the group into the F extra channels of its G samples (P > 1: each program writes its part's sum of std,
and mb_std_fill_kernel sums the P parts and writes the extra channels).
Backward: dx = dout[:, :C] + (d / (G * s)) * gstd / (c * H * W), gstd the sum of dout's extra channel f over the group.
"""
import functools

import triton
import triton.language as tl

from ._host import cdiv, next_power_of_2

_DISC_TILE = 8192   # elements of the (BI, BJ, CP) register tile
_STD_TILE = 4096    # elements of the (GP, BLOCK) register tile
_STD_PROGRAMS = 264  # programs the stddev grid aims at when there are fewer slabs (two per SM of an H200)
_STD_MIN_CHUNK = 512  # elements per program at least (a smaller slab is one program: a second launch costs more)


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
def mb_std_kernel(x, go, out, partials, M, C, HW, F, chunk, eps, G: tl.constexpr, GP: tl.constexpr,
                  BACKWARD: tl.constexpr, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """x: (N, C, H, W); go: (N, C + F, H, W) (backward only); out: (N, C + F, H, W) forward, dx (N, C, H, W)
    backward; partials: (M * F, P) fp32 (forward with SPLIT). N = G * M; sample n = gi * M + m; channel group f holds
    channels [f * c, (f + 1) * c). Program (m * F + f, p) takes elements [p * chunk, (p + 1) * chunk) of the slab."""
    pid = tl.program_id(0)
    p = tl.program_id(1)
    m = pid // F
    f = pid % F
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
    k_end = tl.minimum(p * chunk + chunk, cHW)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(p * chunk, k_end, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        kmask = k < k_end
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
        if SPLIT:
            tl.store(partials + pid * tl.num_programs(1) + p, tl.sum(acc, axis=0))
        else:
            _std_fill(out, extra, gmask, tl.sum(acc, axis=0) / cHW, HW, GP, BLOCK)


@triton.jit
def _std_fill(out, extra, gmask, std, HW, GP: tl.constexpr, BLOCK: tl.constexpr):
    """The extra channel (at ``extra`` of the group's samples) = std."""
    for k0 in range(0, HW, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        tl.store(out + extra[:, None] + k[None, :], tl.zeros([GP, BLOCK], dtype=tl.float32) + std,
                 mask=gmask[:, None] & (k < HW)[None, :])


@triton.jit
def mb_std_fill_kernel(partials, out, M, C, HW, F, P, G: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr,
                       PBLOCK: tl.constexpr):
    """Program m * F + f: the extra channel f of slot m's G samples = the sum of the slab's P partials / (c H W)."""
    pid = tl.program_id(0)
    m = pid // F
    f = pid % F
    acc = tl.zeros([PBLOCK], dtype=tl.float32)
    for p0 in range(0, P, PBLOCK):
        q = p0 + tl.arange(0, PBLOCK)
        acc += tl.load(partials + pid * P + q, mask=q < P, other=0.0)
    gs = tl.arange(0, GP)
    n = (gs * M + m).to(tl.int64)
    _std_fill(out, n * (C + F) * HW + (C + f) * HW, gs < G, tl.sum(acc, axis=0) / ((C // F) * HW), HW, GP, BLOCK)


def disc(M, g, out):
    """Forward (g None) or backward of the pair sums; M (N, B, C) contiguous, out preallocated."""
    N, B, C = M.shape
    CP = next_power_of_2(C)
    BI = max(1, min(32, 512 // CP))
    BJ = max(1, min(32, _DISC_TILE // (BI * CP)))
    # the backward's tile over 8 warps: over 4, the (16, 16, 32) fp32 one spills on sm_80 (168 registers + 24 B)
    mb_disc_kernel[(cdiv(N, BI), B)](M, M if g is None else g, out, N, B, C, BACKWARD=g is not None,
                                            BI=BI, BJ=BJ, CP=CP, num_warps=4 if g is None else 8)


@functools.lru_cache(maxsize=256)
def std_split(N, C, HW, G, F):
    """(GP, BLOCK, chunk, P): the slab of each of the N // G * F (slot, channel group) pairs goes to P programs of
    ``chunk`` elements (whole BLOCKs), so that the grid has about _STD_PROGRAMS programs when the slabs are fewer
    (two per SM of a 132-SM GPU: 64x512x4x4 with groups of 4 has 16 slabs)."""
    slabs, chw = N // G * F, C // F * HW
    GP = next_power_of_2(G)
    per = cdiv(chw, 1 if slabs >= _STD_PROGRAMS else cdiv(_STD_PROGRAMS, slabs))
    BLOCK = max(1, min(1024, max(next_power_of_2(per), min(_STD_MIN_CHUNK, next_power_of_2(chw))), _STD_TILE // GP))
    chunk = cdiv(per, BLOCK) * BLOCK
    return GP, BLOCK, chunk, cdiv(chw, chunk)


def std(x, go, out, partials, G, F, eps, split):
    """Forward (go None) or backward of minibatch stddev; x (N, C, H, W) contiguous, out preallocated; split:
    std_split(...); partials: for a forward with P > 1, (N // G * F * P,) fp32 scratch."""
    N, C, H, W = x.shape
    GP, BLOCK, chunk, P = split
    parts = go is None and P > 1
    mb_std_kernel[(N // G * F, P)](x, x if go is None else go, out, partials if parts else out, N // G, C, H * W, F,
                                   chunk, eps, G=G, GP=GP, BACKWARD=go is not None, SPLIT=parts, BLOCK=BLOCK)
    if parts:
        mb_std_fill_kernel[(N // G * F,)](partials, out, N // G, C, H * W, F, P, G=G, GP=GP,
                                          BLOCK=min(BLOCK, next_power_of_2(H * W)), PBLOCK=min(256, next_power_of_2(P)))
