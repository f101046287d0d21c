"""Triton kernels of the penalty family (see gankern/ops/penalty.py for the meaning of each op).

Every kernel sees its tensors as N rows of D elements: row i is sample i, whose D elements lie contiguously at
offset i * D (contiguous or channels_last memory; a norm or an elementwise op does not care about the order inside a
row). Row-chunk kernels run on a grid (N, S) with S = cdiv(D, CHUNK); sums are taken in ACC (fp32, or fp64 for
fp64 inputs). fp32 / fp16 / bf16 / fp64 tensors.

Floors (bytes, elsize b): norm_partial N*D*b (g read once); norm_backward 2*N*D*b (g read, dg written);
lerp 3*N*D*b (real, fake read, x_hat written); rowdot 2*N*D*b (both inputs read).
"""
import triton
import triton.language as tl

from ._host import cdiv

BLOCK = 1024            # elements per loop step
ITERS = 8               # loop steps per program
CHUNK = BLOCK * ITERS   # elements of one row per program
_FIN_ROWS = 64          # norm_finish: rows per step
_FIN_PARTS = 16         # norm_finish: partial sums per step


@triton.jit
def rowdot_partial_kernel(a, b, part, D, S, ACC: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """part[i, s] = sum over chunk s of row i of a * b.  a, b: (N, D) (b may be a: squared norms); part: (N, S)."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    base = row.to(tl.int64) * D
    acc = tl.zeros([BLOCK], dtype=ACC)
    start = chunk * (BLOCK * ITERS)
    for e0 in range(start, tl.minimum(start + BLOCK * ITERS, D), BLOCK):
        e = e0 + tl.arange(0, BLOCK)
        m = e < D
        x = tl.load(a + base + e, mask=m, other=0.0).to(ACC)
        y = tl.load(b + base + e, mask=m, other=0.0).to(ACC)
        acc += x * y
    tl.store(part + row * S + chunk, tl.sum(acc, axis=0))


@triton.jit
def norm_finish_kernel(part, sqnorm, loss, center, N, S, ACC: tl.constexpr, ROWS: tl.constexpr,
                       PARTS: tl.constexpr):
    """One program. sqnorm[i] = sum_s part[i, s]  (N,);  loss = mean_i (sqrt(sqnorm[i]) - center)^2  ()."""
    total = tl.zeros([ROWS], dtype=ACC)
    for r0 in range(0, N, ROWS):
        r = r0 + tl.arange(0, ROWS)
        # a (ROWS, PARTS) accumulator reduced once after the loop: a row sum inside the loop crashes Triton 3.6's
        # TritonGPUOptimizeThreadLocality pass for sm_90 (fp32, S divisible by 16; found by gankern._aot)
        acc = tl.zeros([ROWS, PARTS], dtype=ACC)
        for p0 in range(0, S, PARTS):
            p = p0 + tl.arange(0, PARTS)
            m = (r[:, None] < N) & (p[None, :] < S)
            acc += tl.load(part + r[:, None] * S + p[None, :], mask=m, other=0.0)
        s = tl.sum(acc, axis=1)
        tl.store(sqnorm + r, s, mask=r < N)
        d = tl.sqrt(s) - center
        total += tl.where(r < N, d * d, 0.0)
    tl.store(loss, tl.sum(total, axis=0) / N)


@triton.jit
def norm_backward_kernel(g, sqnorm, gloss, gsq, dg, center, N, D, HAS_GLOSS: tl.constexpr, HAS_GSQ: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """dg[i] = k_i g[i], k_i = 2 gloss / N (1 - center / ||g_i||) + 2 gsq[i], 1 / ||g_i|| read as 0 where g_i = 0;
    a term whose incoming gradient is absent (HAS_GLOSS / HAS_GSQ false: pointer unused) is 0.
    g, dg: (N, D); sqnorm, gsq: (N,); gloss: ()."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    k = 0.0
    if HAS_GLOSS:
        n = tl.sqrt(tl.load(sqnorm + row).to(ACC))
        inv = tl.where(n > 0, 1.0 / tl.where(n > 0, n, 1.0), 0.0)
        k += 2.0 * tl.load(gloss).to(ACC) / N * (1.0 - center * inv)
    if HAS_GSQ:
        k += 2.0 * tl.load(gsq + row).to(ACC)
    base = row.to(tl.int64) * D
    start = chunk * (BLOCK * ITERS)
    for e0 in range(start, tl.minimum(start + BLOCK * ITERS, D), BLOCK):
        e = e0 + tl.arange(0, BLOCK)
        m = e < D
        x = tl.load(g + base + e, mask=m, other=0.0).to(ACC)
        tl.store(dg + base + e, (x * k).to(dg.dtype.element_ty), mask=m)


@triton.jit
def lerp_kernel(real, fake, eps, out, D, ACC: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """out[i] = eps[i] real[i] + (1 - eps[i]) fake[i].  real, fake, out: (N, D); eps: (N,)."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    t = tl.load(eps + row).to(ACC)
    base = row.to(tl.int64) * D
    start = chunk * (BLOCK * ITERS)
    for e0 in range(start, tl.minimum(start + BLOCK * ITERS, D), BLOCK):
        e = e0 + tl.arange(0, BLOCK)
        m = e < D
        x = tl.load(real + base + e, mask=m, other=0.0).to(ACC)
        y = tl.load(fake + base + e, mask=m, other=0.0).to(ACC)
        tl.store(out + base + e, (t * x + (1.0 - t) * y).to(out.dtype.element_ty), mask=m)


def _grid(n, d):
    return (n, parts(d))


def parts(d):
    """Row chunks (partial sums per row) of a row of d elements."""
    return cdiv(d, CHUNK)


def rowdot_partial(a, b, part, acc):
    """a, b: (N, ...) with each row's D elements contiguous at i * D (no view needed); part: (N, parts(D)) in the
    sum dtype."""
    n = a.shape[0]
    d = a.numel() // n
    rowdot_partial_kernel[_grid(n, d)](a, b, part, d, part.shape[1], ACC=acc, BLOCK=BLOCK, ITERS=ITERS)


def norm_finish(part, sqnorm, loss, center, acc):
    norm_finish_kernel[(1,)](part, sqnorm, loss, center, part.shape[0], part.shape[1], ACC=acc, ROWS=_FIN_ROWS,
                             PARTS=_FIN_PARTS)


def norm_backward(g, sqnorm, gloss, gsq, dg, center, acc):
    """g, dg: rows as in rowdot_partial; gloss () or None, gsq (N,) or None: the incoming gradients of the penalty
    and of the squared norms."""
    n = g.shape[0]
    d = g.numel() // n
    norm_backward_kernel[_grid(n, d)](g, sqnorm, g if gloss is None else gloss, g if gsq is None else gsq, dg, center,
                                      n, d, HAS_GLOSS=gloss is not None, HAS_GSQ=gsq is not None, ACC=acc,
                                      BLOCK=BLOCK, ITERS=ITERS)


def lerp(real, fake, eps, out, acc):
    """real, fake, out: rows as in rowdot_partial; eps (N,)."""
    n = real.shape[0]
    d = real.numel() // n
    lerp_kernel[_grid(n, d)](real, fake, eps, out, d, ACC=acc, BLOCK=BLOCK, ITERS=ITERS)
