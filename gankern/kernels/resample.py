"""Triton kernel of the resample family: upfirdn2d (upsample by zero insertion, pad/crop, FIR filter, downsample),
polyphase. Along one axis with up U, down D, g = gcd(U, D): output o = r + (U / g) * m has phase r, and all outputs
of one phase use the same taps, k = k0(r) + j * U (the others land on inserted zeros), on the inputs
i = base(r) + m * (D / g) + j. With U, D, the filter size and the padding compile-time constants, each phase is an
unrolled loop over only its own taps, whose input offsets and filter indices are constants: no index arithmetic per
tap beyond a constant offset and a bounds mask. Floor: read x once, write the output once.

Down-sampling along y without up-sampling, with DOWNY < FH <= 2 * DOWNY (S2A's down 2 with 4 taps, and the
gradient of its up 2), runs upfirdn2d_down_kernel instead: it walks down the rows and loads each input row once.

Separable filters are not split into two 1-D passes: at S2A's 4-tap filters a polyphase output takes 2 x 2 taps
(up 2) or 4 x 4 (down 2), while two passes would add an intermediate image to write and read (+80% of the floor's
bytes at up 2 and down 2), in a kernel that is bound by memory traffic.
"""
import math

import triton
import triton.language as tl

from ._host import cdiv, next_power_of_2

# phase positions (m) per thread: 8 when the phases share loads (2 x 2, 2 x 1 or 1 x 2 phases), else 4 (at 8 the
# 16 taps of down 2 spill at sm_90); a program has BLOCK_Y x BLOCK_X of them, BLOCK_X <= 64 fitted to the output
# width, on up to 4 warps (fewer for small planes)
PER_THREAD = {True: 8, False: 4}
INT32_MAX = 2 ** 31 - 1
DOWN_ROWS = 32      # output rows per program of upfirdn2d_down_kernel
DOWN_CHANNELS = 4   # channels per program of upfirdn2d_down_kernel (outputs per thread and step)


@triton.jit
def _tap(f, KY: tl.constexpr, KX: tl.constexpr, FW: tl.constexpr, FH: tl.constexpr, SEPARABLE: tl.constexpr,
         FLIP: tl.constexpr):
    """The correlation tap t[KY, KX] (fp32 scalar) of the filter f, flipped in both axes when FLIP."""
    FY: tl.constexpr = FH - 1 - KY if FLIP else KY
    FX: tl.constexpr = FW - 1 - KX if FLIP else KX
    if SEPARABLE:
        return tl.load(f + FY).to(tl.float32) * tl.load(f + FX).to(tl.float32)
    return tl.load(f + FY * FW + FX).to(tl.float32)


@triton.jit
def _phase(x_plane, f, H, W, my, mx, sxh, sxw, gain, RY: tl.constexpr, RX: tl.constexpr,
           UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr, PX0: tl.constexpr,
           PY0: tl.constexpr, FW: tl.constexpr, FH: tl.constexpr, SEPARABLE: tl.constexpr, FLIP: tl.constexpr,
           BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """(BLOCK_Y, BLOCK_X) fp32: the outputs (RY + PHY * my, RX + PHX * mx) of phase (RY, RX), from the taps of the
    phase only, at constant input offsets from (my * DOWNY / gy, mx * DOWNX / gx)."""
    GY: tl.constexpr = math.gcd(UPY, DOWNY)
    GX: tl.constexpr = math.gcd(UPX, DOWNX)
    KY0: tl.constexpr = (PY0 - RY * DOWNY) % UPY          # the phase's first tap
    KX0: tl.constexpr = (PX0 - RX * DOWNX) % UPX
    BY0: tl.constexpr = (RY * DOWNY + KY0 - PY0) // UPY   # its input offset (exact division)
    BX0: tl.constexpr = (RX * DOWNX + KX0 - PX0) // UPX
    iy0 = my * (DOWNY // GY)
    ix0 = mx * (DOWNX // GX)
    acc = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    for j in tl.static_range((FH - KY0 + UPY - 1) // UPY):
        iy = iy0 + (BY0 + j)
        row = x_plane + iy * sxh
        row_ok = (iy >= 0) & (iy < H)
        for i in tl.static_range((FW - KX0 + UPX - 1) // UPX):
            ix = ix0 + (BX0 + i)
            tap = _tap(f, KY0 + j * UPY, KX0 + i * UPX, FW, FH, SEPARABLE, FLIP)
            col_ok = (ix >= 0) & (ix < W)
            v = tl.load(row[:, None] + (ix * sxw)[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            acc += tap * v.to(tl.float32)
    return acc * gain


@triton.jit
def _phase_row(x_plane, f, H, W, my, mx, sxh, sxw, gain, RY: tl.constexpr, UPX: tl.constexpr, UPY: tl.constexpr,
               DOWNX: tl.constexpr, DOWNY: tl.constexpr, PX0: tl.constexpr, PY0: tl.constexpr, FW: tl.constexpr,
               FH: tl.constexpr, SEPARABLE: tl.constexpr, FLIP: tl.constexpr, BLOCK_Y: tl.constexpr,
               BLOCK_X: tl.constexpr):
    """(BLOCK_Y, PHX * BLOCK_X) fp32, PHX <= 2: the outputs of y phase RY, x phases interleaved along x."""
    a = _phase(x_plane, f, H, W, my, mx, sxh, sxw, gain, RY, 0, UPX, UPY, DOWNX, DOWNY, PX0, PY0, FW, FH, SEPARABLE,
               FLIP, BLOCK_Y, BLOCK_X)
    if UPX // math.gcd(UPX, DOWNX) == 2:
        b = _phase(x_plane, f, H, W, my, mx, sxh, sxw, gain, RY, 1, UPX, UPY, DOWNX, DOWNY, PX0, PY0, FW, FH,
                   SEPARABLE, FLIP, BLOCK_Y, BLOCK_X)
        a = tl.reshape(tl.join(a, b), [BLOCK_Y, 2 * BLOCK_X])
    return a


@triton.jit
def upfirdn2d_kernel(x, f, out, C, H, W, Ho, Wo, n_tx, n_tiles, sxn, sxc, sxh, sxw, son, soc, soh, sow, gain,
                     UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
                     PX0: tl.constexpr, PY0: tl.constexpr, FW: tl.constexpr, FH: tl.constexpr,
                     SEPARABLE: tl.constexpr, FLIP: tl.constexpr, WIDE: tl.constexpr,
                     BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """out[n, c, oy, ox] = gain * sum_{ky, kx} t[ky, kx] * X(oy * DOWNY + ky - PY0, ox * DOWNX + kx - PX0), where
    X(qy, qx) = x[n, c, qy / UPY, qx / UPX] when both divide exactly and land inside x, else 0, and the correlation
    taps t are the filter f flipped in both axes when FLIP (a true convolution), else f itself; a SEPARABLE f is
    (FW,) with t[ky, kx] = f[ky] f[kx], else (FH, FW) contiguous.
    x: (N, C, H, W) by strides sx*; out: (N, C, Ho, Wo) by strides so*; in-plane offsets in int32 unless WIDE.
    Grid: (N * C * n_tiles,): each program one (n, c) plane, one tile of BLOCK_Y x BLOCK_X phase positions (n_tx
    tiles along x), every phase."""
    pid = tl.program_id(0)
    plane = pid // n_tiles
    tile = pid % n_tiles
    n = plane // C
    c = plane % C
    my = (tile // n_tx) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    mx = (tile % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    if WIDE:
        my = my.to(tl.int64)
        mx = mx.to(tl.int64)
    x_plane = x + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    o_plane = out + n.to(tl.int64) * son + c.to(tl.int64) * soc
    PHY: tl.constexpr = UPY // math.gcd(UPY, DOWNY)   # output phases along y
    PHX: tl.constexpr = UPX // math.gcd(UPX, DOWNX)
    if PHX <= 2 and PHY <= 2:
        # the phases' loads first (shared offsets load once), then the stores, two x phases interleaved in
        # registers so that each store is contiguous along x
        a0 = _phase_row(x_plane, f, H, W, my, mx, sxh, sxw, gain, 0, UPX, UPY, DOWNX, DOWNY, PX0, PY0, FW, FH,
                        SEPARABLE, FLIP, BLOCK_Y, BLOCK_X)
        if PHY == 2:
            a1 = _phase_row(x_plane, f, H, W, my, mx, sxh, sxw, gain, 1, UPX, UPY, DOWNX, DOWNY, PX0, PY0, FW, FH,
                            SEPARABLE, FLIP, BLOCK_Y, BLOCK_X)
        ox = (tile % n_tx) * (PHX * BLOCK_X) + tl.arange(0, PHX * BLOCK_X)
        if WIDE:
            ox = ox.to(tl.int64)
        om = (ox < Wo)[None, :]
        oy = PHY * my
        tl.store(o_plane + (oy * soh)[:, None] + (ox * sow)[None, :], a0.to(out.dtype.element_ty),
                 mask=(oy < Ho)[:, None] & om)
        if PHY == 2:
            tl.store(o_plane + ((oy + 1) * soh)[:, None] + (ox * sow)[None, :], a1.to(out.dtype.element_ty),
                     mask=(oy + 1 < Ho)[:, None] & om)
    else:  # up > 2 (over gcd(up, down)): one phase at a time, strided stores
        for ry in tl.static_range(PHY):
            for rx in tl.static_range(PHX):
                acc = _phase(x_plane, f, H, W, my, mx, sxh, sxw, gain, ry, rx, UPX, UPY, DOWNX, DOWNY, PX0, PY0, FW,
                             FH, SEPARABLE, FLIP, BLOCK_Y, BLOCK_X)
                oy = ry + PHY * my
                ox = rx + PHX * mx
                tl.store(o_plane + (oy * soh)[:, None] + (ox * sow)[None, :], acc.to(out.dtype.element_ty),
                         mask=(oy < Ho)[:, None] & (ox < Wo)[None, :])


@triton.jit
def _pick(taps, K: tl.constexpr, SIZE: tl.constexpr):
    """taps[K] of a 1-D register tensor, as a scalar (pure: hoisted out of loops, unlike a load)."""
    return tl.sum(tl.where(tl.arange(0, SIZE) == K, taps, 0.0), axis=0)


@triton.jit
def _row_tap(taps, KY: tl.constexpr, KX: tl.constexpr, FW: tl.constexpr, FH: tl.constexpr,
             SEPARABLE: tl.constexpr, FLIP: tl.constexpr, SIZE: tl.constexpr):
    """_tap from the filter held in registers (taps: f flattened, padded to SIZE)."""
    FY: tl.constexpr = FH - 1 - KY if FLIP else KY
    FX: tl.constexpr = FW - 1 - KX if FLIP else KX
    if SEPARABLE:
        return _pick(taps, FY, SIZE) * _pick(taps, FX, SIZE)
    return _pick(taps, FY * FW + FX, SIZE)


@triton.jit
def upfirdn2d_down_kernel(x, f, out, C, H, W, Ho, Wo, n_tx, n_tiles, sxn, sxc, sxh, sxw, son, soc, soh, sow, gain,
                          DOWNX: tl.constexpr, DOWNY: tl.constexpr, PX0: tl.constexpr, PY0: tl.constexpr,
                          FW: tl.constexpr, FH: tl.constexpr, SEPARABLE: tl.constexpr, FLIP: tl.constexpr,
                          WIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_X: tl.constexpr):
    """upfirdn2d_kernel's output for up = 1 and DOWNY < FH <= 2 * DOWNY, where each input row feeds at most two
    output rows: a (BLOCK_C channels, BLOCK_X columns) strip walks down ROWS output rows and loads each input row
    once; the rows that also feed the next output row add to a carried accumulator (half the loads of the tile
    kernel at down 2 with 4 taps). Grid: (N * cdiv(C, BLOCK_C) * n_tiles,), n_tiles = row blocks x n_tx strips."""
    SIZE: tl.constexpr = triton.next_power_of_2(FW if SEPARABLE else FH * FW)
    taps = tl.load(f + tl.arange(0, SIZE), mask=tl.arange(0, SIZE) < (FW if SEPARABLE else FH * FW),
                   other=0.0).to(tl.float32)
    pid = tl.program_id(0)
    cblock = pid // n_tiles
    tile = pid % n_tiles
    n_cb = tl.cdiv(C, BLOCK_C)
    n = cblock // n_cb
    c = (cblock % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    ox = (tile % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    oy0 = (tile // n_tx) * ROWS
    if WIDE:
        ox = ox.to(tl.int64)
        oy0 = oy0.to(tl.int64)
    x_plane = x + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc    # [BLOCK_C] pointers
    o_plane = out + n.to(tl.int64) * son + c.to(tl.int64) * soc
    c_ok = c < C
    ix0 = ox * DOWNX - PX0
    nxt = tl.zeros([BLOCK_C, BLOCK_X], tl.float32)
    for oy in range(oy0 - 1, tl.minimum(oy0 + ROWS, Ho)):  # the first step only fills the carry
        acc = nxt
        nxt = tl.zeros([BLOCK_C, BLOCK_X], tl.float32)
        for ky in tl.static_range(FH - DOWNY, FH):  # the rows that the previous step did not load
            iy = oy * DOWNY + (ky - PY0)
            row = x_plane + iy * sxh
            row_ok = c_ok & (iy >= 0) & (iy < H)
            for kx in tl.static_range(FW):
                ix = ix0 + kx
                v = tl.load(row[:, None] + (ix * sxw)[None, :], mask=row_ok[:, None] & ((ix >= 0) & (ix < W))[None, :],
                            other=0.0).to(tl.float32)
                acc += _row_tap(taps, ky, kx, FW, FH, SEPARABLE, FLIP, SIZE) * v
                if ky >= DOWNY:
                    nxt += _row_tap(taps, ky - DOWNY, kx, FW, FH, SEPARABLE, FLIP, SIZE) * v
        tl.store(o_plane[:, None] + (oy * soh + ox * sow)[None, :], (acc * gain).to(out.dtype.element_ty),
                 mask=c_ok[:, None] & ((ox < Wo) & (oy >= oy0))[None, :])


def _check_grid(programs: int) -> None:
    if programs > INT32_MAX:
        raise ValueError(f"upfirdn2d: {programs} programs, over the grid's 2^31 (split the batch)")


def plan(x_shape, x_strides, f_shape, out_shape, out_strides, up, down, pad0, flip_filter) -> tuple:
    """The launch of upfirdn2d for these shapes and strides: (kernel name, grid, size and stride arguments,
    constexpr keywords), for :func:`launch` (the ops layer caches it per shape). f_shape: (fh, fw) or separable
    (ft,); up, down, pad0: (x, y); flip_filter as in gankern.ops.resample.upfirdn2d. In-plane offsets are int32 when
    every plane fits, else int64 (WIDE)."""
    N, C, H, W = x_shape
    Ho, Wo = out_shape[2:]
    fh, fw = (f_shape[0], f_shape[0]) if len(f_shape) == 1 else f_shape
    wide = max((H - 1) * x_strides[2] + (W - 1) * x_strides[3],
               (Ho - 1) * out_strides[2] + (Wo - 1) * out_strides[3]) > INT32_MAX
    common = dict(PX0=pad0[0], PY0=pad0[1], FW=fw, FH=fh, SEPARABLE=len(f_shape) == 1, FLIP=not flip_filter,
                  WIDE=wide)
    if tuple(up) == (1, 1) and down[1] < fh <= 2 * down[1]:
        block_x = min(128, max(32, next_power_of_2(Wo)))
        n_ty, n_tx = cdiv(Ho, DOWN_ROWS), cdiv(Wo, block_x)
        block_c = min(DOWN_CHANNELS, next_power_of_2(C))
        grid = N * cdiv(C, block_c) * n_ty * n_tx
        _check_grid(grid)
        return ("upfirdn2d_down_kernel", (grid,), (C, H, W, Ho, Wo, n_tx, n_ty * n_tx, *x_strides, *out_strides),
                dict(DOWNX=down[0], DOWNY=down[1], **common, ROWS=DOWN_ROWS, BLOCK_C=block_c, BLOCK_X=block_x,
                     num_warps=block_x // 32))
    phy, phx = up[1] // math.gcd(up[1], down[1]), up[0] // math.gcd(up[0], down[0])
    block_x = min(64, next_power_of_2(cdiv(Wo, phx)))
    per_thread = PER_THREAD[phy * phx > 1 and max(phy, phx) <= 2]
    block_y = min(128 * per_thread // block_x, next_power_of_2(cdiv(Ho, phy)))
    num_warps = max(1, block_y * block_x // (32 * per_thread))
    n_ty, n_tx = cdiv(cdiv(Ho, phy), block_y), cdiv(cdiv(Wo, phx), block_x)
    _check_grid(N * C * n_ty * n_tx)
    return ("upfirdn2d_kernel", (N * C * n_ty * n_tx,), (C, H, W, Ho, Wo, n_tx, n_ty * n_tx, *x_strides, *out_strides),
            dict(UPX=up[0], UPY=up[1], DOWNX=down[0], DOWNY=down[1], **common, BLOCK_Y=block_y, BLOCK_X=block_x,
                 num_warps=num_warps))


def launch(p: tuple, x, f, out, gain: float) -> None:
    """Run a :func:`plan` on x, f (contiguous) and out, whose shapes and strides it was made for."""
    name, grid, args, kw = p
    globals()[name][grid](x, f, out, *args, gain, **kw)  # looked up per call: the benchmark stubs the kernels


def upfirdn2d(x, f, out, up, down, pad0, flip_filter, gain):
    """Launch upfirdn2d on x, f (contiguous) and out (arguments as :func:`plan`'s)."""
    launch(plan(x.shape, x.stride(), f.shape, out.shape, out.stride(), up, down, pad0, flip_filter), x, f, out, gain)
