"""Triton kernels of the modulation family: fused bias + activation (value, first and second derivative), AdaIN
(forward and backward), and the modulated convolution's output epilogue (demodulation, bias, noise, activation).

Activation codes (``ACT``) follow the table in gankern/ops/modulation.py and the gk::Act enum of
csrc/include/gankern/modulation.h. Everything is computed in fp32; loads and stores are in the tensors' dtypes.
"""
import triton
import triton.language as tl

BIAS_ACT_BLOCK = 1024   # bias_act: elements per program
ADAIN_BLOCK_C = 4       # adain: channels per program (contiguous x) ...
ADAIN_BLOCK_CL = 32     # ... (channels_last x)
ADAIN_BLOCK_HW = 256    # adain: pixels per loop step
EPI_BLOCK_HW = 256      # modconv epilogue: pixels per loop step


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
        r = tl.where(pos, v, zero) if ORDER == 0 else (tl.where(pos, one, zero) if ORDER == 1 else zero)
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
        en = tl.exp(tl.minimum(v, 0.0))
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
            r = tl.where(big, v, _log1p(tl.exp(tl.minimum(v, 20.0))))
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
    return tl.where(clamp >= 0, tl.minimum(tl.maximum(y, -clamp), clamp), y)


@triton.jit
def bias_act_kernel(x, b, g, g2, out, n, C, stride_dim, alpha, gain, clamp, HAS_B: tl.constexpr,
                    MODE: tl.constexpr, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """Elementwise over the n elements of x (memory order), v = x + b[(offset // stride_dim) % C]:
    MODE 0: out = clamp(gain f(v)); 1: out = g * gain f'(v) * keep; 2: out = g * g2 * gain f''(v) * keep.
    x, g, g2, out: same strides (n elements); b: (C,)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
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
    grid = (triton.cdiv(n, BIAS_ACT_BLOCK),)
    bias_act_kernel[grid](x, x if b is None else b, x if g is None else g, x if g2 is None else g2, out, n, C,
                          stride_dim, alpha, gain, clamp, HAS_B=b is not None, MODE=mode, ACT=act,
                          BLOCK=BIAS_ACT_BLOCK)
