"""Triton kernels of the augment family (see gankern/ops/augment.py for the meaning of each op).

affine_grid_sample: F.grid_sample(x, F.affine_grid(theta, ...)) (bilinear, zeros padding, align_corners=False)
with the sampling positions computed in the kernel from theta: no (N, Ho, Wo, 2) grid (nor the (N, Ho, Wo, 3) base
grid that F.affine_grid builds) is written or read. The forward gathers the 4 neighbours of each position; the
backward (the adjoint, linear in dy) scatters dy times the same weights with fp32 atomics into a zeroed buffer.
color_transform: y[n, :3] = M[n, :3, :3] @ x[n, :3] + M[n, :3, 3] per pixel (C = 3), or for C = 1 the luma form
y = x * mean_c(sum_k M[n, c, :3]) + mean_c(M[n, c, 3]), in one pass (read x once, write y once).

Floors (bytes, elsize b, fp32 for the backward buffer): affine_grid_sample forward N*C*(Ho*Wo)*b written plus about
as much read (4 neighbours of nearby positions share cache lines); backward N*C*Hi*Wi*4 zeroed + atomics of
4*N*C*Ho*Wo; color_transform 2*N*C*H*W*b.
"""
import triton
import triton.language as tl

from ._host import cdiv, next_power_of_2

INT32_MAX = 2 ** 31 - 1
SAMPLE_TILE = 512    # output positions per program of the sampling kernels (BLOCK_Y x BLOCK_X)
COLOR_BLOCK = 1024   # pixels per program of the color kernel


@triton.jit
def _positions(theta, n, stn, str_, stc, oy, ox, Hi, Wi, Ho, Wo):
    """The bilinear footprint of output positions (oy (BY,), ox (BX,)) of image n: (x0, y0) the upper-left input
    pixel (int32, -2 when off the image), the weights (wx0, wx1, wy0, wy1) fp32 and `finite` (false where theta
    gives a NaN / Inf position). theta (N, 2, 3) by strides (stn, str_, stc). As F.affine_grid + F.grid_sample with
    align_corners=False: normalized output centres xn = (2 ox + 1 - Wo) / Wo, (gx, gy) = theta @ (xn, yn, 1),
    input position ix = ((gx + 1) Wi - 1) / 2."""
    t = theta + n.to(tl.int64) * stn
    t00 = tl.load(t).to(tl.float32)
    t01 = tl.load(t + stc).to(tl.float32)
    t02 = tl.load(t + 2 * stc).to(tl.float32)
    t10 = tl.load(t + str_).to(tl.float32)
    t11 = tl.load(t + str_ + stc).to(tl.float32)
    t12 = tl.load(t + str_ + 2 * stc).to(tl.float32)
    xn = ((2 * ox + 1 - Wo).to(tl.float32) / Wo)[None, :]
    yn = ((2 * oy + 1 - Ho).to(tl.float32) / Ho)[:, None]
    ix = ((t00 * xn + t01 * yn + t02 + 1.0) * Wi - 1.0) * 0.5
    iy = ((t10 * xn + t11 * yn + t12 + 1.0) * Hi - 1.0) * 0.5
    finite = (tl.abs(ix) < float("inf")) & (tl.abs(iy) < float("inf"))
    # positions off the image by more than a pixel (and NaN) read nothing: clamped before the int conversion
    inside = (ix > -2.0) & (ix < Wi + 1.0) & (iy > -2.0) & (iy < Hi + 1.0)
    ix = tl.where(inside, ix, -2.0)
    iy = tl.where(inside, iy, -2.0)
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    return fx.to(tl.int32), fy.to(tl.int32), fx + 1.0 - ix, ix - fx, fy + 1.0 - iy, iy - fy, finite


@triton.jit
def affine_grid_sample_kernel(x, theta, out, C, Hi, Wi, Ho, Wo, n_tx, n_tiles, sxn, sxc, sxh, sxw, stn, str_, stc,
                              son, soc, soh, sow, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """out[n, c, oy, ox] = sum of the 4 bilinear neighbours x[n, c, y0 + a, x0 + b] inside x, times their weights
    (NaN where the position is not finite).
    x: (N, C, Hi, Wi) by strides sx*; theta: (N, 2, 3) fp32 by strides st*; out: (N, C, Ho, Wo) by strides so*.
    Grid: (N * n_tiles,): each program one image, one tile of BLOCK_Y x BLOCK_X outputs (n_tx tiles along x), all
    channels (the positions computed once)."""
    pid = tl.program_id(0)
    n = pid // n_tiles
    tile = pid % n_tiles
    oy = (tile // n_tx) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (tile % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    x0, y0, wx0, wx1, wy0, wy1, finite = _positions(theta, n, stn, str_, stc, oy, ox, Hi, Wi, Ho, Wo)
    mx0 = (x0 >= 0) & (x0 < Wi)
    mx1 = (x0 >= -1) & (x0 < Wi - 1)
    my0 = (y0 >= 0) & (y0 < Hi)
    my1 = (y0 >= -1) & (y0 < Hi - 1)
    off = y0.to(tl.int64) * sxh + x0.to(tl.int64) * sxw           # (BY, BX) offset of the upper-left neighbour
    o_off = (oy.to(tl.int64) * soh)[:, None] + (ox.to(tl.int64) * sow)[None, :]
    o_mask = (oy < Ho)[:, None] & (ox < Wo)[None, :]
    x_img = x + n.to(tl.int64) * sxn
    o_img = out + n.to(tl.int64) * son
    o_c = o_img + o_off
    for c in range(C):  # channel pointers advanced, not c * stride: no int32 product to overflow
        v00 = tl.load(x_img + off, mask=o_mask & my0 & mx0, other=0.0).to(tl.float32)
        v01 = tl.load(x_img + off + sxw, mask=o_mask & my0 & mx1, other=0.0).to(tl.float32)
        v10 = tl.load(x_img + off + sxh, mask=o_mask & my1 & mx0, other=0.0).to(tl.float32)
        v11 = tl.load(x_img + off + sxh + sxw, mask=o_mask & my1 & mx1, other=0.0).to(tl.float32)
        acc = v00 * (wx0 * wy0) + v01 * (wx1 * wy0) + v10 * (wx0 * wy1) + v11 * (wx1 * wy1)
        acc = tl.where(finite, acc, float("nan"))
        tl.store(o_c, acc.to(out.dtype.element_ty), mask=o_mask)
        x_img += sxc
        o_c += soc


@triton.jit
def affine_grid_sample_grad_kernel(dy, theta, dx, C, Hi, Wi, plane, Ho, Wo, n_tx, n_tiles, syn, syc, syh, syw, stn,
                                   str_, stc, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """The adjoint of affine_grid_sample_kernel: dx[n, c, y0 + a, x0 + b] += weight * dy[n, c, oy, ox] for the
    neighbours inside dx (fp32 atomics; positions that are not finite add nothing).
    dy: (N, C, Ho, Wo) by strides sy*; theta: (N, 2, 3) fp32; dx: (N, C, Hi, Wi) fp32, contiguous, zeroed;
    plane = Hi * Wi.
    Grid: as affine_grid_sample_kernel's."""
    pid = tl.program_id(0)
    n = pid // n_tiles
    tile = pid % n_tiles
    oy = (tile // n_tx) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (tile % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    x0, y0, wx0, wx1, wy0, wy1, finite = _positions(theta, n, stn, str_, stc, oy, ox, Hi, Wi, Ho, Wo)
    o_mask = (oy < Ho)[:, None] & (ox < Wo)[None, :] & finite
    mx0 = (x0 >= 0) & (x0 < Wi)
    mx1 = (x0 >= -1) & (x0 < Wi - 1)
    my0 = (y0 >= 0) & (y0 < Hi)
    my1 = (y0 >= -1) & (y0 < Hi - 1)
    off = y0.to(tl.int64) * Wi + x0
    y_off = (oy.to(tl.int64) * syh)[:, None] + (ox.to(tl.int64) * syw)[None, :]
    y_c = dy + n.to(tl.int64) * syn + y_off
    dc = dx + n.to(tl.int64) * C * plane
    for c in range(C):
        g = tl.load(y_c, mask=o_mask, other=0.0).to(tl.float32)
        tl.atomic_add(dc + off, g * (wx0 * wy0), mask=o_mask & my0 & mx0)
        tl.atomic_add(dc + off + 1, g * (wx1 * wy0), mask=o_mask & my0 & mx1)
        tl.atomic_add(dc + off + Wi, g * (wx0 * wy1), mask=o_mask & my1 & mx0)
        tl.atomic_add(dc + off + Wi + 1, g * (wx1 * wy1), mask=o_mask & my1 & mx1)
        y_c += syc
        dc += plane


@triton.jit
def _pixel_offsets(p, W, sh, sw, FLAT: tl.constexpr):
    """In-plane offsets of flat pixel indices p (h * W + w): p * sw when rows follow each other at that stride
    (FLAT), else h * sh + w * sw."""
    if FLAT:
        return p.to(tl.int64) * sw
    return (p // W).to(tl.int64) * sh + (p % W).to(tl.int64) * sw


@triton.jit
def color_transform_kernel(x, M, out, HW, W, n_tiles, sxn, sxc, sxh, sxw, smn, smr, smc, son, soc, soh, sow,
                           RGB: tl.constexpr, BIAS: tl.constexpr, X_FLAT: tl.constexpr, BLOCK: tl.constexpr):
    """RGB: out[n, r] = sum_k M[n, r, k] x[n, k] (+ M[n, r, 3] when BIAS), r, k < 3; else (C = 1)
    out[n, 0] = x[n, 0] * sum_{r, k < 3} M[n, r, k] / 3 (+ sum_{r < 3} M[n, r, 3] / 3 when BIAS).
    x: (N, C, H, W) by strides sx* (X_FLAT: pixel p at p * sxw); M: (N, >= 3, >= 3 or 4) fp32 by strides sm*;
    out: (N, C, H, W) by strides so*, pixel p at p * sow (contiguous or channels_last).
    Grid: (N * n_tiles,): each program BLOCK pixels of one image, every channel."""
    pid = tl.program_id(0)
    n = pid // n_tiles
    p = (pid % n_tiles) * BLOCK + tl.arange(0, BLOCK)
    mask = p < HW
    x_off = _pixel_offsets(p, W, sxh, sxw, X_FLAT) + n.to(tl.int64) * sxn
    o_off = p.to(tl.int64) * sow + n.to(tl.int64) * son
    m = M + n.to(tl.int64) * smn
    if RGB:
        x0 = tl.load(x + x_off, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(x + x_off + sxc, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x + x_off + 2 * sxc, mask=mask, other=0.0).to(tl.float32)
        for r in tl.static_range(3):
            mr = m + r * smr
            y = tl.load(mr).to(tl.float32) * x0 + tl.load(mr + smc).to(tl.float32) * x1 \
                + tl.load(mr + 2 * smc).to(tl.float32) * x2
            if BIAS:
                y += tl.load(mr + 3 * smc).to(tl.float32)
            tl.store(out + o_off + r * soc, y.to(out.dtype.element_ty), mask=mask)
    else:
        s = 0.0
        b = 0.0
        for r in tl.static_range(3):
            for k in tl.static_range(3):
                s += tl.load(m + r * smr + k * smc).to(tl.float32)
            if BIAS:
                b += tl.load(m + r * smr + 3 * smc).to(tl.float32)
        y = tl.load(x + x_off, mask=mask, other=0.0).to(tl.float32) * (s / 3.0)
        if BIAS:
            y += b / 3.0
        tl.store(out + o_off, y.to(out.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------- launchers


def _sample_grid(Ho: int, Wo: int) -> tuple[int, int, int]:
    """(BLOCK_Y, BLOCK_X, n_tx): tiles of SAMPLE_TILE positions, BLOCK_X fitted to narrow outputs."""
    block_x = min(64, max(16, next_power_of_2(Wo)))
    return SAMPLE_TILE // block_x, block_x, cdiv(Wo, block_x)


def _check_programs(programs: int) -> None:
    if programs > INT32_MAX:
        raise ValueError(f"augment: {programs} programs, over the grid's 2^31 (split the batch)")


def affine_grid_sample(x, theta, out):
    """x (N, C, Hi, Wi) any strides; theta (N, 2, 3) fp32; out (N, C, Ho, Wo)."""
    N, C, Hi, Wi = x.shape
    Ho, Wo = out.shape[2:]
    by, bx, n_tx = _sample_grid(Ho, Wo)
    n_tiles = cdiv(Ho, by) * n_tx
    _check_programs(N * n_tiles)
    affine_grid_sample_kernel[(N * n_tiles,)](x, theta, out, C, Hi, Wi, Ho, Wo, n_tx, n_tiles, *x.stride(),
                                              *theta.stride(), *out.stride(), BLOCK_Y=by, BLOCK_X=bx, num_warps=4)


def affine_grid_sample_grad(dy, theta, dx):
    """dy (N, C, Ho, Wo) any strides; theta (N, 2, 3) fp32; dx (N, C, Hi, Wi) fp32 contiguous, zeroed (adds to
    it)."""
    N, C, Ho, Wo = dy.shape
    Hi, Wi = dx.shape[2:]
    by, bx, n_tx = _sample_grid(Ho, Wo)
    n_tiles = cdiv(Ho, by) * n_tx
    _check_programs(N * n_tiles)
    affine_grid_sample_grad_kernel[(N * n_tiles,)](dy, theta, dx, C, Hi, Wi, Hi * Wi, Ho, Wo, n_tx, n_tiles,
                                                   *dy.stride(), *theta.stride(), BLOCK_Y=by, BLOCK_X=bx, num_warps=4)


def _flat(t) -> bool:
    """Whether t's rows follow each other in memory at its column stride (pixel p at p * stride(3))."""
    return t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


def color_transform(x, M, out, bias: bool):
    """x (N, C, H, W) any strides, C in (1, 3); M (N, >= 3, 4) fp32 any strides; out like x, contiguous or
    channels_last."""
    N, C, H, W = x.shape
    n_tiles = cdiv(H * W, COLOR_BLOCK)
    _check_programs(N * n_tiles)
    color_transform_kernel[(N * n_tiles,)](x, M, out, H * W, W, n_tiles, *x.stride(), *M.stride(), *out.stride(),
                                           RGB=C == 3, BIAS=bias, X_FLAT=_flat(x), BLOCK=COLOR_BLOCK,
                                           num_warps=4)
