"""Triton kernel of the resample family: upfirdn2d (upsample by zero insertion, pad/crop, FIR filter, downsample),
evaluated directly per output pixel: only the filter taps that land on non-inserted input pixels are visited
(ceil(fh / up_y) * ceil(fw / up_x) taps). Floor: read x once, write the output once.
"""
import triton
import triton.language as tl

from ._host import cdiv

BLOCK_Y = 8    # output rows per program
BLOCK_X = 32   # output columns per program


@triton.jit
def upfirdn2d_kernel(x, f, out, C, H, W, Ho, Wo, fh, fw, sxn, sxc, sxh, sxw, son, soc, soh, sow, gain,
                     UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr, px0, py0,
                     SEPARABLE: tl.constexpr, FLIP: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """out[n, c, oy, ox] = gain * sum_{ky, kx} t[ky, kx] * X(oy * DOWNY + ky - py0, ox * DOWNX + kx - px0), where
    X(qy, qx) = x[n, c, qy / UPY, qx / UPX] when both divide exactly and land inside x, else 0, and the correlation
    taps t are the filter f flipped in both axes when FLIP (a true convolution), else f itself; a SEPARABLE f is
    (fw,) with t[ky, kx] = f[ky] f[kx], else (fh, fw) contiguous.
    x: (N, C, H, W) by strides sx*; out: (N, C, Ho, Wo) by strides so*. Grid: (N * C, row tiles * column tiles)."""
    nc = tl.program_id(0)
    n = nc // C
    c = nc % C
    n_tx = tl.cdiv(Wo, BLOCK_X)
    oy = (tl.program_id(1) // n_tx) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (tl.program_id(1) % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    # first tap whose input position is a multiple of UP (the others hit inserted zeros)
    ky0 = ((py0 - oy * DOWNY) % UPY + UPY) % UPY
    kx0 = ((px0 - ox * DOWNX) % UPX + UPX) % UPX
    x_base = x + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    acc = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    for j in range(0, tl.cdiv(fh, UPY)):
        ky = ky0 + j * UPY
        iy = (oy * DOWNY + ky - py0) // UPY  # exact division
        my = (ky < fh) & (iy >= 0) & (iy < H)
        for i in range(0, tl.cdiv(fw, UPX)):
            kx = kx0 + i * UPX
            ix = (ox * DOWNX + kx - px0) // UPX
            mx = (kx < fw) & (ix >= 0) & (ix < W)
            m = my[:, None] & mx[None, :]
            fy = fh - 1 - ky if FLIP else ky
            fx = fw - 1 - kx if FLIP else kx
            if SEPARABLE:
                tap = tl.load(f + fy, mask=my, other=0.0).to(tl.float32)[:, None] * \
                    tl.load(f + fx, mask=mx, other=0.0).to(tl.float32)[None, :]
            else:
                tap = tl.load(f + fy[:, None] * fw + fx[None, :], mask=m, other=0.0).to(tl.float32)
            v = tl.load(x_base + iy[:, None].to(tl.int64) * sxh + ix[None, :].to(tl.int64) * sxw, mask=m, other=0.0)
            acc += tap * v.to(tl.float32)
    om = (oy < Ho)[:, None] & (ox < Wo)[None, :]
    o_ptr = out + n.to(tl.int64) * son + c.to(tl.int64) * soc + oy[:, None].to(tl.int64) * soh + ox[None, :] * sow
    tl.store(o_ptr, (acc * gain).to(out.dtype.element_ty), mask=om)


def upfirdn2d(x, f, out, up, down, pad0, flip_filter, gain):
    """f: (fh, fw) or separable (ft,), contiguous; flip_filter as in gankern.ops.resample.upfirdn2d."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2:]
    fh, fw = (f.shape[0], f.shape[0]) if f.dim() == 1 else f.shape
    grid = (N * C, cdiv(Ho, BLOCK_Y) * cdiv(Wo, BLOCK_X))
    upfirdn2d_kernel[grid](x, f, out, C, H, W, Ho, Wo, fh, fw, *x.stride(), *out.stride(), gain, UPX=up[0],
                           UPY=up[1], DOWNX=down[0], DOWNY=down[1], px0=pad0[0], py0=pad0[1], SEPARABLE=f.dim() == 1,
                           FLIP=not flip_filter, BLOCK_Y=BLOCK_Y, BLOCK_X=BLOCK_X)
