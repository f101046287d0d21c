"""Triton kernels of the modulation family: fused bias + activation (value, first and second derivative), AdaIN and
instance norm + activation (forward and backward: one pair of kernels), the modulated convolution's output epilogue
(demodulation, bias, noise, activation) and its demodulation coefficients.

Activation codes (``ACT``) follow the table in gankern/ops/modulation.py and the gk::Act enum of
csrc/include/gankern/modulation.h. Everything is computed in fp32; loads and stores are in the tensors' dtypes.

Floors (elements of memory traffic per element of x / y): bias_act forward 2, backward 3, double backward 4;
adain / instance_norm forward 2 (x read once when a plane fits one tile; 3 otherwise), backward 3 (4 otherwise);
modulated-conv epilogue forward 2 (y read, out written; the noise map is read once per channel block), backward 3
(y and dout read, dy written).
"""
import triton
import triton.language as tl

from ._host import cdiv, next_power_of_2

BIAS_ACT_BLOCK = 1024   # bias_act: elements per program
INDEX32_LIMIT = 2**31   # bias_act: 64-bit offsets for tensors at least this large


@triton.jit
def _log1p(e):
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))


@triton.jit
def _tanh(v):
    e = tl.exp(-2.0 * tl.abs(v))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(v < 0, -t, t)


@triton.jit
def act_eval(v, alpha, ACT: tl.constexpr, ORDER: tl.constexpr):
    """Activation ACT at v (ORDER 0), or its first (1) or second (2) derivative; fp32 in, fp32 out."""
    one = tl.full(v.shape, 1.0, tl.float32)
    zero = tl.zeros(v.shape, tl.float32)
    pos = v > 0
    if ACT == 0:  # linear
        r = v if ORDER == 0 else (one if ORDER == 1 else zero)
    elif ACT == 1:  # relu
        r = tl.where(v <= 0, zero, v) if ORDER == 0 else (tl.where(pos, one, zero) if ORDER == 1 else zero)
    elif ACT == 2:  # lrelu
        r = tl.where(pos, v, v * alpha) if ORDER == 0 else (tl.where(pos, one, one * alpha) if ORDER == 1 else zero)
    elif ACT == 3:  # tanh
        t = _tanh(v)
        r = t if ORDER == 0 else ((1.0 - t * t) if ORDER == 1 else -2.0 * t * (1.0 - t * t))
    elif ACT == 4:  # sigmoid
        s = tl.sigmoid(v)
        r = s if ORDER == 0 else (s * (1.0 - s) if ORDER == 1 else s * (1.0 - s) * (1.0 - 2.0 * s))
    elif ACT == 5 or ACT == 6:  # elu, selu
        scale = 1.0507009873554805 if ACT == 6 else 1.0
        a = 1.6732632423543772 if ACT == 6 else 1.0
        en = tl.exp(tl.where(pos, zero, v))  # not tl.minimum: on a GPU it drops NaN
        if ORDER == 0:
            r = scale * tl.where(pos, v, a * (en - 1.0))
        elif ORDER == 1:
            r = scale * tl.where(pos, one, a * en)
        else:
            r = scale * tl.where(pos, zero, a * en)
    elif ACT == 7:  # softplus (torch's threshold 20: linear above)
        big = v > 20.0
        s = tl.sigmoid(v)
        if ORDER == 0:
            r = tl.where(big, v, _log1p(tl.exp(tl.where(big, 20.0, v))))
        elif ORDER == 1:
            r = tl.where(big, one, s)
        else:
            r = tl.where(big, zero, s * (1.0 - s))
    else:  # swish
        s = tl.sigmoid(v)
        if ORDER == 0:
            r = v * s
        elif ORDER == 1:
            r = s * (1.0 + v * (1.0 - s))
        else:
            r = s * (1.0 - s) * (2.0 + v * (1.0 - 2.0 * s))
    return r


@triton.jit
def _act_grad_factor(v, alpha, gain, clamp, ACT: tl.constexpr, ORDER: tl.constexpr):
    """gain * f^(ORDER)(v), zero where the clamp cut the output (|gain f(v)| > clamp)."""
    y = act_eval(v, alpha, ACT, 0) * gain
    keep = (clamp < 0) | (tl.abs(y) <= clamp)
    return tl.where(keep, act_eval(v, alpha, ACT, ORDER) * gain, 0.0)


@triton.jit
def _act_out(v, alpha, gain, clamp, ACT: tl.constexpr):
    y = act_eval(v, alpha, ACT, 0) * gain
    # comparisons, not tl.minimum / tl.maximum (which drop NaN on a GPU): NaN stays NaN, as in torch's clamp
    return tl.where((clamp >= 0) & (y < -clamp), -clamp, tl.where((clamp >= 0) & (y > clamp), clamp, y))


@triton.jit
def bias_act_kernel(x, b, g, g2, out, n, C, stride_dim, alpha, gain, clamp, HAS_B: tl.constexpr,
                    MODE: tl.constexpr, ACT: tl.constexpr, BLOCK: tl.constexpr, I64: tl.constexpr):
    """Elementwise over the n elements of x (memory order), v = x + b[(offset // stride_dim) % C]:
    MODE 0: out = clamp(gain f(v)); 1: out = g * gain f'(v) * keep; 2: out = g * g2 * gain f''(v) * keep.
    x, g, g2, out: same strides (n elements); b: (C,)."""
    pid = tl.program_id(0).to(tl.int64) if I64 else tl.program_id(0)  # 32-bit division when n fits
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    v = tl.load(x + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        v += tl.load(b + (offs // stride_dim) % C, mask=mask, other=0.0).to(tl.float32)
    if MODE == 0:
        r = _act_out(v, alpha, gain, clamp, ACT)
    else:
        r = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32) * _act_grad_factor(v, alpha, gain, clamp, ACT, MODE)
        if MODE == 2:
            r *= tl.load(g2 + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + offs, r.to(out.dtype.element_ty), mask=mask)


def bias_act(x, b, g, g2, out, C, stride_dim, mode, act, alpha, gain, clamp):
    n = out.numel()
    grid = (cdiv(n, BIAS_ACT_BLOCK),)
    bias_act_kernel[grid](x, x if b is None else b, x if g is None else g, x if g2 is None else g2, out, n, C,
                          stride_dim, alpha, gain, clamp, HAS_B=b is not None, MODE=mode, ACT=act,
                          BLOCK=BIAS_ACT_BLOCK, I64=n + BIAS_ACT_BLOCK >= INDEX32_LIMIT)


# ----------------------------------------------------------------------------------------------------------------
# AdaIN and instance norm (one pair of kernels): y = f((x - mean) * rstd * gamma + beta) per (n, c) plane, f the
# activation ACT (linear for AdaIN). x, y, dy, dx: (N, C, HW) read through strides (sxn, sxc, sxp) (contiguous NCHW:
# (C HW, HW, 1); channels_last: (HW C, 1, C)); gamma, beta: (N, C) for AdaIN (sgn = C) or (C,) for instance norm's
# per-channel affine (sgn = 0), absent without HAS_W / HAS_B (gamma 1, beta 0); dgamma, dbeta, mean, rstd: (N, C)
# contiguous fp32. One program per (n, block of channels).
# ONE_PASS: the whole row fits the tile (HW <= BLOCK_HW), so x (and dy) are read once; else twice.

ADAIN_ONE_PASS_MAX_HW = 2048  # rows up to this many pixels (rounded up to a power of 2) are read once
ADAIN_ONE_PASS_TILE = 4096    # elements of a one-pass tile (BLOCK_C * BLOCK_HW)
ADAIN_TWO_PASS_TILE = {False: (4, 512), True: (32, 64)}  # (BLOCK_C, BLOCK_HW) by channels_last


@triton.jit
def _plane_tile(pid, C, sxn, sxc, BLOCK_C: tl.constexpr):
    """(n, channels, channel mask, offsets of the channels' planes) of program pid."""
    n_cblocks = tl.cdiv(C, BLOCK_C)
    n = pid // n_cblocks
    c = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    row = n.to(tl.int64) * sxn + c.to(tl.int64) * sxc  # [BLOCK_C]
    return n, c, cmask, row


@triton.jit
def _norm_affine(gamma, beta, n, c, cmask, sgn, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """(gamma, beta) of the channels c of sample n, fp32 [BLOCK_C] (1 and 0 when absent)."""
    g = tl.full([BLOCK_C], 1.0, tl.float32)
    bt = tl.zeros([BLOCK_C], tl.float32)
    if HAS_W:
        g = tl.load(gamma + n * sgn + c, mask=cmask, other=0.0).to(tl.float32)
    if HAS_B:
        bt = tl.load(beta + n * sgn + c, mask=cmask, other=0.0).to(tl.float32)
    return g, bt


@triton.jit
def adain_fwd_kernel(x, gamma, beta, y, mean_out, rstd_out, C, HW, sxn, sxc, sxp, sgn, eps, alpha,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr, ONE_PASS: tl.constexpr):
    """y = f((x - mean) * rstd * gamma + beta) per (n, c) over HW; writes mean, rstd (fp32)."""
    n, c, cmask, row = _plane_tile(tl.program_id(0), C, sxn, sxc, BLOCK_C)
    p = tl.arange(0, BLOCK_HW)
    g, bt = _norm_affine(gamma, beta, n, c, cmask, sgn, HAS_W, HAS_B, BLOCK_C)
    if ONE_PASS:
        m = cmask[:, None] & (p < HW)[None, :]
        off = row[:, None] + p[None, :].to(tl.int64) * sxp
        v = tl.load(x + off, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(v, axis=1) / HW
        d = tl.where(m, v - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(d * d, axis=1) / HW + eps)
        out = act_eval(d * (rstd * g)[:, None] + bt[:, None], alpha, ACT, 0)
        tl.store(y + off, out.to(y.dtype.element_ty), mask=m)
    else:
        # sums shifted by each row's first element (no cancellation when |mean| >> std)
        k = tl.load(x + row, mask=cmask, other=0.0).to(tl.float32)
        s1 = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        s2 = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        for p0 in range(0, HW, BLOCK_HW):
            m = cmask[:, None] & (p0 + p < HW)[None, :]
            v = tl.load(x + row[:, None] + (p0 + p)[None, :].to(tl.int64) * sxp, mask=m, other=0.0).to(tl.float32)
            d = tl.where(m, v - k[:, None], 0.0)
            s1 += d
            s2 += d * d
        m1 = tl.sum(s1, axis=1) / HW
        mean = k + m1
        rstd = tl.rsqrt(tl.maximum(tl.sum(s2, axis=1) / HW - m1 * m1, 0.0) + eps)
        for p0 in range(0, HW, BLOCK_HW):
            m = cmask[:, None] & (p0 + p < HW)[None, :]
            off = row[:, None] + (p0 + p)[None, :].to(tl.int64) * sxp
            v = tl.load(x + off, mask=m, other=0.0).to(tl.float32)
            out = act_eval((v - mean[:, None]) * (rstd * g)[:, None] + bt[:, None], alpha, ACT, 0)
            tl.store(y + off, out.to(y.dtype.element_ty), mask=m)
    tl.store(mean_out + n * C + c, mean, mask=cmask)
    tl.store(rstd_out + n * C + c, rstd, mask=cmask)


@triton.jit
def _norm_grad_tile(x, dy, off, m, mean, rstd, g, bt, alpha, ACT: tl.constexpr):
    """(xhat, dv) on one tile: dv = dy * f'(xhat * gamma + beta), both 0 outside the mask m."""
    xh = tl.where(m, (tl.load(x + off, mask=m, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None], 0.0)
    gy = tl.load(dy + off, mask=m, other=0.0).to(tl.float32)
    if ACT == 1:  # torch's relu backward tests its output (v <= 0): a NaN v passes the gradient, as in the ref
        gy = tl.where(m & (xh * g[:, None] + bt[:, None] <= 0), 0.0, gy)
    elif ACT != 0:
        gy = tl.where(m, gy * act_eval(xh * g[:, None] + bt[:, None], alpha, ACT, 1), 0.0)
    return xh, gy


@triton.jit
def adain_bwd_kernel(x, gamma, beta, mean_in, rstd_in, dy, dx, dgamma, dbeta, C, HW, sxn, sxc, sxp, sgn, alpha,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr, ONE_PASS: tl.constexpr):
    """With dv = dy * f'(v): dbeta = sum dv, dgamma = sum dv xhat, dx = gamma rstd (dv - dbeta / HW - xhat dgamma /
    HW) per (n, c); dgamma, dbeta: (N, C) per-sample sums."""
    n, c, cmask, row = _plane_tile(tl.program_id(0), C, sxn, sxc, BLOCK_C)
    p = tl.arange(0, BLOCK_HW)
    g, bt = _norm_affine(gamma, beta, n, c, cmask, sgn, HAS_W, HAS_B, BLOCK_C)
    mean = tl.load(mean_in + n * C + c, mask=cmask, other=0.0)
    rstd = tl.load(rstd_in + n * C + c, mask=cmask, other=0.0)
    # gamma factored out of the sums: an Inf gamma gives NaN, as dxhat = dv * gamma minus its mean does in the ref
    gr = tl.where(tl.abs(g) < float("inf"), g * rstd, float("nan"))
    if ONE_PASS:
        m = cmask[:, None] & (p < HW)[None, :]
        off = row[:, None] + p[None, :].to(tl.int64) * sxp
        xh, gy = _norm_grad_tile(x, dy, off, m, mean, rstd, g, bt, alpha, ACT)
        sdy = tl.sum(gy, axis=1)
        sdyx = tl.sum(gy * xh, axis=1)
        out = gr[:, None] * (gy - (sdy / HW)[:, None] - xh * (sdyx / HW)[:, None])
        tl.store(dx + off, out.to(dx.dtype.element_ty), mask=m)
    else:
        a1 = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        a2 = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
        for p0 in range(0, HW, BLOCK_HW):
            m = cmask[:, None] & (p0 + p < HW)[None, :]
            off = row[:, None] + (p0 + p)[None, :].to(tl.int64) * sxp
            xh, gy = _norm_grad_tile(x, dy, off, m, mean, rstd, g, bt, alpha, ACT)
            a1 += gy
            a2 += gy * xh
        sdy = tl.sum(a1, axis=1)
        sdyx = tl.sum(a2, axis=1)
        for p0 in range(0, HW, BLOCK_HW):
            m = cmask[:, None] & (p0 + p < HW)[None, :]
            off = row[:, None] + (p0 + p)[None, :].to(tl.int64) * sxp
            xh, gy = _norm_grad_tile(x, dy, off, m, mean, rstd, g, bt, alpha, ACT)
            out = gr[:, None] * (gy - (sdy / HW)[:, None] - xh * (sdyx / HW)[:, None])
            tl.store(dx + off, out.to(dx.dtype.element_ty), mask=m)
    tl.store(dgamma + n * C + c, sdyx, mask=cmask)
    tl.store(dbeta + n * C + c, sdy, mask=cmask)


def _adain_blocks(C, HW, channels_last):
    """(BLOCK_C, BLOCK_HW, ONE_PASS) for a (., C, HW) problem."""
    hw2 = next_power_of_2(HW)
    if hw2 <= ADAIN_ONE_PASS_MAX_HW:
        return max(1, min(next_power_of_2(C), ADAIN_ONE_PASS_TILE // hw2)), hw2, True
    return (*ADAIN_TWO_PASS_TILE[channels_last], False)


_NORM_PLANS: dict = {}  # (x shape, x strides, flags, tile settings) -> launch
PLAN_CACHE_SIZE = 4096  # entries per launch-plan cache (a few per layer of a model; emptied when full)


def _remember(cache: dict, key, value):
    """cache[key] = value (the cache emptied first when full); value."""
    if len(cache) >= PLAN_CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value


def _norm_launch(x, gamma, beta, per_sample, act, channels_last):
    """(grid, (C, HW, sxn, sxc, sxp, sgn), constexprs) of one forward or backward launch (cached per shape and
    tile settings, which tests change)."""
    key = (x.shape, x.stride(), gamma is None, beta is None, per_sample, act, channels_last, ADAIN_ONE_PASS_MAX_HW,
           ADAIN_ONE_PASS_TILE, ADAIN_TWO_PASS_TILE[channels_last])
    launch = _NORM_PLANS.get(key)
    if launch is None:
        N, C, H, W = x.shape
        sxn, sxc, _, sxp = x.stride()
        block_c, block_hw, one_pass = _adain_blocks(C, H * W, channels_last)
        consts = dict(HAS_W=gamma is not None, HAS_B=beta is not None, ACT=act, BLOCK_C=block_c,
                      BLOCK_HW=block_hw, ONE_PASS=one_pass)
        launch = _remember(_NORM_PLANS, key, ((N * cdiv(C, block_c),),
                                              (C, H * W, sxn, sxc, sxp, C if per_sample else 0), consts))
    return launch


def adain_fwd(x, gamma, beta, y, mean, rstd, eps, channels_last, per_sample=True, act=0, alpha=0.0):
    """AdaIN (per_sample: gamma, beta (N, C)) or instance norm (gamma, beta (C,) or None) + activation code act."""
    grid, sizes, consts = _norm_launch(x, gamma, beta, per_sample, act, channels_last)
    adain_fwd_kernel[grid](x, x if gamma is None else gamma, x if beta is None else beta, y, mean, rstd, *sizes, eps,
                           alpha, **consts)


def adain_bwd(x, gamma, mean, rstd, dy, dx, dgamma, dbeta, channels_last, beta=None, per_sample=True, act=0,
              alpha=0.0):
    """The backward of :func:`adain_fwd` (beta is read only for a non-linear act); dgamma, dbeta: (N, C) sums."""
    beta = beta if act else None
    grid, sizes, consts = _norm_launch(x, gamma, beta, per_sample, act, channels_last)
    adain_bwd_kernel[grid](x, x if gamma is None else gamma, x if beta is None else beta, mean, rstd, dy, dx, dgamma,
                           dbeta, *sizes, alpha, **consts)


# ----------------------------------------------------------------------------------------------------------------
# Modulated convolution epilogue: out = clamp(gain f(v)), v = y * d[n, o] + bias[o] + noise[n, p] * strength.
# y, out, dout, dy: (N, O, HW) by strides (syn, syc, syp) (contiguous or channels_last); d, sums: (N, O) fp32;
# bias: (O,); noise: (N, HW) by strides (snn, 1) (snn = 0 broadcasts one map); strength: (O,) by stride ssc
# (ssc = 0: one strength for all channels).
# One program per (n, block of channels), looping over the pixels.

EPI_TILE = {False: (4, 256), True: (32, 32)}  # (BLOCK_C, BLOCK_HW) by channels_last


@triton.jit
def _epi_v(y, d, bias, noise, strength, n, c, cmask, row, p, m, C, HW, syp, snn, ssc, HAS_D: tl.constexpr,
           HAS_B: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK_HW: tl.constexpr):
    """(offsets, y tile, pre-activation v tile, noise tile) at pixels p of the rows `row` (mask m)."""
    off = row[:, None] + p[None, :].to(tl.int64) * syp
    yv = tl.load(y + off, mask=m, other=0.0).to(tl.float32)
    v = yv
    if HAS_D:
        v = v * tl.load(d + n * C + c, mask=cmask, other=0.0)[:, None]
    if HAS_B:
        v += tl.load(bias + c, mask=cmask, other=0.0).to(tl.float32)[:, None]
    nz = tl.zeros([1, BLOCK_HW], tl.float32)
    if HAS_NOISE:
        nz += tl.load(noise + n.to(tl.int64) * snn + p, mask=p < HW, other=0.0).to(tl.float32)[None, :]
        v += nz * tl.load(strength + c * ssc, mask=cmask, other=0.0).to(tl.float32)[:, None]
    return off, yv, v, nz


@triton.jit
def modconv_epilogue_kernel(y, d, bias, noise, strength, out, C, HW, syn, syc, syp, snn, ssc, alpha, gain, clamp,
                            HAS_D: tl.constexpr, HAS_B: tl.constexpr, HAS_NOISE: tl.constexpr, ACT: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """out = clamp(gain f(v)) (see above)."""
    n, c, cmask, row = _plane_tile(tl.program_id(0), C, syn, syc, BLOCK_C)
    for p0 in range(0, HW, BLOCK_HW):
        p = p0 + tl.arange(0, BLOCK_HW)
        m = cmask[:, None] & (p < HW)[None, :]
        off, yv, v, nz = _epi_v(y, d, bias, noise, strength, n, c, cmask, row, p, m, C, HW, syp, snn, ssc, HAS_D,
                                HAS_B, HAS_NOISE, BLOCK_HW)
        tl.store(out + off, _act_out(v, alpha, gain, clamp, ACT).to(out.dtype.element_ty), mask=m)


@triton.jit
def modconv_epilogue_bwd_kernel(y, d, bias, noise, strength, dout, dy, sums, C, HW, NC, syn, syc, syp, snn, ssc,
                                alpha, gain, clamp, HAS_D: tl.constexpr, HAS_B: tl.constexpr, HAS_NOISE: tl.constexpr,
                                ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """dv = dout * gain f'(v) * keep; dy = dv * d; sums[0, n, o] = sum_p dv * y (-> dd), sums[1] = sum_p dv
    (-> dbias), sums[2] = sum_p dv * noise (-> dstrength). sums: (3, N, C) fp32 (NC = N * C)."""
    n, c, cmask, row = _plane_tile(tl.program_id(0), C, syn, syc, BLOCK_C)
    s_y = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    s_dv = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    s_nz = tl.zeros([BLOCK_C, BLOCK_HW], tl.float32)
    for p0 in range(0, HW, BLOCK_HW):
        p = p0 + tl.arange(0, BLOCK_HW)
        m = cmask[:, None] & (p < HW)[None, :]
        off, yv, v, nz = _epi_v(y, d, bias, noise, strength, n, c, cmask, row, p, m, C, HW, syp, snn, ssc, HAS_D,
                                HAS_B, HAS_NOISE, BLOCK_HW)
        g = tl.load(dout + off, mask=m, other=0.0).to(tl.float32)
        dv = tl.where(m, g * _act_grad_factor(v, alpha, gain, clamp, ACT, 1), 0.0)
        s_y += dv * yv
        s_dv += dv
        s_nz += dv * nz
        if HAS_D:
            dv = dv * tl.load(d + n * C + c, mask=cmask, other=0.0)[:, None]
        tl.store(dy + off, dv.to(dy.dtype.element_ty), mask=m)
    nc = n * C + c
    tl.store(sums + nc, tl.sum(s_y, axis=1), mask=cmask)
    tl.store(sums + NC + nc, tl.sum(s_dv, axis=1), mask=cmask)
    tl.store(sums + 2 * NC + nc, tl.sum(s_nz, axis=1), mask=cmask)


_EPI_PLANS: dict = {}  # (y shape, y strides, snn, ssc, channels_last, flags, act) -> _epi_args' result


def _epi_args(y, d, bias, noise, strength, act, channels_last):
    """(grid, (C, HW), (syn, syc, syp, snn, ssc), constexprs) of one launch (cached per shape and flags)."""
    snn = 0 if noise is None else noise.stride(0)
    ssc = 0 if strength is None or strength.numel() == 1 else 1
    key = (y.shape, y.stride(), snn, ssc, channels_last, d is None, bias is None, noise is None, act)
    args = _EPI_PLANS.get(key)
    if args is None:
        N, C, H, W = y.shape
        block_c, block_hw = EPI_TILE[channels_last]
        syn, syc, _, syp = y.stride()
        args = _remember(_EPI_PLANS, key, ((N * cdiv(C, block_c),), (C, H * W), (syn, syc, syp, snn, ssc),
                                           dict(HAS_D=d is not None, HAS_B=bias is not None,
                                                HAS_NOISE=noise is not None, ACT=act, BLOCK_C=block_c,
                                                BLOCK_HW=block_hw)))
    return args


def modconv_epilogue(y, d, bias, noise, strength, out, act, alpha, gain, clamp, channels_last):
    grid, sizes, strides, consts = _epi_args(y, d, bias, noise, strength, act, channels_last)
    modconv_epilogue_kernel[grid](y, y if d is None else d, y if bias is None else bias,
                                  y if noise is None else noise, y if strength is None else strength, out, *sizes,
                                  *strides, alpha, gain, clamp, **consts)


def modconv_epilogue_bwd(y, d, bias, noise, strength, dout, dy, sums, act, alpha, gain, clamp, channels_last):
    grid, sizes, strides, consts = _epi_args(y, d, bias, noise, strength, act, channels_last)
    modconv_epilogue_bwd_kernel[grid](y, y if d is None else d, y if bias is None else bias,
                                      y if noise is None else noise, y if strength is None else strength, dout, dy,
                                      sums, *sizes, sizes[0] * y.shape[0], *strides, alpha, gain, clamp, **consts)


# ----------------------------------------------------------------------------------------------------------------
# Demodulation coefficients d[n, o] = rsqrt(sum_i s[n, i]^2 q[o, i] + eps), q[o, i] = sum_k w[o, i, k]^2: each program
# a (BLOCK_N, BLOCK_O) tile of d over one slice of I, w read once per block of samples. A grid of (sample blocks x
# output-channel blocks) alone is 32 programs at N = 32, O = 512 (132 SMs on an H100/H200), so I is split until the
# grid has DEMOD_MIN_PROGRAMS programs: each slice writes fp32 partial sums, and a second small kernel adds them in
# a fixed order (deterministic) and takes the rsqrt. Floor: w and s read, d written.

DEMOD_BLOCK_N = 16
DEMOD_BLOCK_O = 32
DEMOD_BLOCK_I = 32
DEMOD_MIN_PROGRAMS = 264  # two programs per SM of a 132-SM GPU
DEMOD_FINISH_BLOCK = 1024


@triton.jit
def _demod_rsqrt(a, eps):
    a = a + eps
    return tl.where(a == float("inf"), float("nan"), tl.rsqrt(a))  # an Inf weight or style: NaN (see the op)


@triton.jit
def demod_kernel(w, s, d, part, N, O, I, KK, I_SLICE, eps, BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr,
                 BLOCK_I: tl.constexpr, PARTIAL: tl.constexpr):
    """w: (O, I, KK) contiguous; s: (N, I) contiguous; program (i, j, k): d[n, o] of its tile over inputs
    [k I_SLICE, (k + 1) I_SLICE) (I_SLICE a multiple of BLOCK_I): without PARTIAL, d (N, O) fp32 itself (one
    slice); with it, the partial sums to part[k] (part: (slices, N, O) fp32)."""
    nn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    oo = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    i_lo = tl.program_id(2) * I_SLICE
    acc = tl.zeros([BLOCK_N, BLOCK_O], tl.float32)
    for i0 in range(i_lo, tl.minimum(i_lo + I_SLICE, I), BLOCK_I):
        ii = i0 + tl.arange(0, BLOCK_I)
        wm = (oo < O)[:, None] & (ii < I)[None, :]
        q = tl.zeros([BLOCK_O, BLOCK_I], tl.float32)
        for k in range(0, KK):
            wv = tl.load(w + (oo[:, None].to(tl.int64) * I + ii[None, :]) * KK + k, mask=wm, other=0.0).to(tl.float32)
            q += wv * wv
        sv = tl.load(s + nn[:, None].to(tl.int64) * I + ii[None, :], mask=(nn < N)[:, None] & (ii < I)[None, :],
                     other=0.0).to(tl.float32)
        acc += tl.dot(sv * sv, tl.trans(q), input_precision="ieee")
    om = (nn < N)[:, None] & (oo < O)[None, :]
    if not PARTIAL:
        tl.store(d + nn[:, None] * O + oo[None, :], _demod_rsqrt(acc, eps), mask=om)
    else:
        tl.store(part + tl.program_id(2) * N * O + nn[:, None] * O + oo[None, :], acc, mask=om)


@triton.jit
def demod_finish_kernel(part, d, NO, SPLIT, eps, BLOCK: tl.constexpr):
    """d = rsqrt(sum_k part[k] + eps) over the NO = N * O elements (part: (SPLIT, N, O) fp32)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NO
    a = tl.zeros([BLOCK], tl.float32)
    for k in range(SPLIT):
        a += tl.load(part + k * NO + offs, mask=mask, other=0.0)
    tl.store(d + offs, _demod_rsqrt(a, eps), mask=mask)


def demod_split(N, O, I):
    """(number of I slices, inputs per slice) so that the grid has about DEMOD_MIN_PROGRAMS programs."""
    tiles = cdiv(N, DEMOD_BLOCK_N) * cdiv(O, DEMOD_BLOCK_O)
    i_blocks = cdiv(I, DEMOD_BLOCK_I)
    per = cdiv(i_blocks, max(1, min(i_blocks, cdiv(DEMOD_MIN_PROGRAMS, tiles)))) * DEMOD_BLOCK_I
    return cdiv(I, per), per


_DEMOD_PLANS: dict = {}  # (N, O, I, KK, DEMOD_MIN_PROGRAMS) -> (split, per, grid)


def demodulation(w, s, d, eps):
    """d (N, O) fp32 from w (O, I, kh, kw) and s (N, I), both contiguous."""
    O, I, kh, kw = w.shape
    N = s.shape[0]
    key = (N, O, I, kh * kw, DEMOD_MIN_PROGRAMS)
    plan = _DEMOD_PLANS.get(key)
    if plan is None:
        split, per = demod_split(N, O, I)
        plan = _remember(_DEMOD_PLANS, key, (split, per, (cdiv(N, DEMOD_BLOCK_N), cdiv(O, DEMOD_BLOCK_O), split)))
    split, per, grid = plan
    part = d if split == 1 else d.new_empty(split, N, O)
    demod_kernel[grid](w, s, d, part, N, O, I, kh * kw, per, eps, BLOCK_N=DEMOD_BLOCK_N,
                       BLOCK_O=DEMOD_BLOCK_O, BLOCK_I=DEMOD_BLOCK_I, PARTIAL=split > 1)
    if split > 1:
        demod_finish_kernel[(cdiv(N * O, DEMOD_FINISH_BLOCK),)](part, d, N * O, split, eps,
                                                                        BLOCK=DEMOD_FINISH_BLOCK)
