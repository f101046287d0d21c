"""Gradient penalties: R1/R2 (Mescheder et al. 2018), WGAN-GP (Gulrajani et al. 2017) and StyleGAN2's path length.

Every penalty here is a function of g, the per-sample gradient of a network's output w.r.t. its input (taken with
``create_graph=True``, so the penalty is differentiable w.r.t. the network's parameters). The fused op is

    grad_norm_penalty(g, center) = mean_i (||g_i||_2 - center)^2,    g: (N, ...), g_i = g[i] flattened,

whose center 0 is R1's mean_i ||g_i||^2 and whose center 1 is WGAN-GP's term. Its forward reads g once (partial
sums of squares per row chunk, then one small program that sums them, forms the penalty and keeps ||g_i||^2); its
backward reads g once and writes dg once: dg_i = 2 gl / N (1 - center / ||g_i||) g_i (gl: the incoming gradient).
That backward is itself a registered op whose own gradient is made of differentiable torch ops, so the penalty has
gradients of every order (gradgradcheck), and the double backward of D that the penalty's gradient flows into sees
one fused pass. WGAN-GP's interpolation x_hat = eps * real + (1 - eps) * fake is one pass (reads real and fake, writes
x_hat); path length's noise product sum(img * noise) / sqrt(H W) is one read of img and noise.

Floors (bytes, fp32, n = N * D elements of g): penalty forward 4n, backward 8n, interpolation 12n, noise product 8n.
Speed: not measured on a GPU yet (bench/bench_penalty.py).

Lazy regularization (StyleGAN2): compute a penalty every k-th D step only and scale it by k
(``loss = gamma / 2 * k * r1_penalty(d_out, x)`` on steps where ``step % k == 0``); nothing here keeps state between
steps except :class:`gankern.nn.PathLengthRegularizer`'s running mean. R2 is ``r1_penalty`` on fakes.

Backends: ref (eager torch) and triton (fp32 / fp16 / bf16 / fp64; sums in fp32, fp64 for fp64; the center reaches
the kernel as an fp32 scalar, exact for the usual 0 and 1). This family has no
CUDA C++ kernels: each op is a bandwidth-bound pass that Triton already makes one pass; the cost of an R1 step is the
double backward through D. Default on CUDA tensors: triton.
"""
from __future__ import annotations

import math

import torch

from .. import _backend, _validate
from ._launch import fused_op

PREFERENCE = ("triton",)
_KERNEL_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
KERNEL_DTYPES = {"triton": _KERNEL_FLOATS}

__all__ = ["grad_norm_penalty", "r1_penalty", "gradient_penalty", "path_length_penalty", "interpolate"]


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are taken and penalties returned in: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dense_rows(t: torch.Tensor) -> torch.Tensor:
    """t (N, ...) itself when each sample's elements lie contiguously at offset i * D (contiguous or channels_last
    memory), else a contiguous copy. Norms and elementwise ops do not depend on the order inside a sample."""
    if t.is_contiguous():
        return t
    n, d = t.shape[0], t.numel() // t.shape[0]
    cl = (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)) or \
        (t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d))
    if cl and (n == 1 or t.stride(0) == d):
        return t
    return t.contiguous()


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t laid out in memory as ref (same strides)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def _safe_inv(n: torch.Tensor) -> torch.Tensor:
    """1 / n, with 0 where n == 0 (the gradient of ||g|| at g = 0 is taken as 0, as torch's norm does)."""
    pos = n > 0
    return torch.where(pos, 1.0 / torch.where(pos, n, torch.ones_like(n)), torch.zeros_like(n))


def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """sqrt(s) with gradient 0 (not inf) at s == 0."""
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


class _Triton:
    _k = None

    @classmethod
    def k(cls):
        if cls._k is None:
            import triton.language as tl
            from ..kernels import penalty
            cls._k = penalty
            cls.tl_acc = {torch.float32: tl.float32, torch.float64: tl.float64}
        return cls._k


# ----------------------------------------------------------------------------------------------------------------
# gankern::penalty_norm  (loss, sqnorm) = (mean_i (||g_i|| - center)^2, ||g_i||^2)

def _norm_ref(g2, center):
    s = g2.to(_acc(g2.dtype)).pow(2).sum(1)
    return (s.sqrt() - center).pow(2).mean(), s


def _norm_triton(g, center):
    """g: (N, ...) dense rows (_dense_rows)."""
    k = _Triton.k()
    acc = _acc(g.dtype)
    n = g.shape[0]
    part = torch.empty(n, k.parts(g.numel() // n), device=g.device, dtype=acc)
    k.rowdot_partial(g, g, part, _Triton.tl_acc[acc])
    s = torch.empty(n, device=g.device, dtype=acc)
    loss = torch.empty((), device=g.device, dtype=acc)
    k.norm_finish(part, s, loss, center, _Triton.tl_acc[acc])
    return loss, s


def _norm_impl(g: torch.Tensor, center: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "ref":
        return _norm_ref(g.reshape(g.shape[0], -1), center)
    return _norm_triton(_dense_rows(g), center)


def _norm_fake(g, center, backend):
    acc = _acc(g.dtype)
    return g.new_empty((), dtype=acc), g.new_empty(g.shape[0], dtype=acc)


def _norm_setup(ctx, inputs, output):
    g, center, backend = inputs
    ctx.save_for_backward(g, output[1])
    ctx.center, ctx.backend = center, backend
    ctx.set_materialize_grads(False)   # an unused output's gradient stays None: no zero tensor, no term


def _norm_grad(ctx, gloss, gsq):
    g, s = ctx.saved_tensors
    return _penalty_norm_backward(g, s, gloss, gsq, ctx.center, ctx.backend), None, None


_penalty_norm = fused_op("penalty_norm", _norm_impl, _norm_fake, _norm_setup, _norm_grad)


# ----------------------------------------------------------------------------------------------------------------
# gankern::penalty_norm_backward  dg_i = k_i g_i,  k_i = 2 gl / N (1 - center / ||g_i||) + 2 gsq_i
# (gl and gsq may be None: that term is 0)

def _norm_coef(g_rows, gl, gsq, center, inv):
    """k_i of the backward (N,): the penalty's term when gl is given, the squared norms' term when gsq is."""
    k = torch.zeros(g_rows.shape[0], dtype=inv.dtype, device=inv.device)
    if gl is not None:
        k = k + 2 * gl / g_rows.shape[0] * (1 - center * inv)
    if gsq is not None:
        k = k + 2 * gsq
    return k


def _norm_backward_ref(g, s, gloss, gsq, center):
    k = _norm_coef(g, gloss, gsq, center, _safe_inv(s.sqrt()))
    return (g.to(k.dtype) * k.view([-1] + [1] * (g.dim() - 1))).to(g.dtype)


def _norm_backward_triton(g, s, gloss, gsq, center):
    k = _Triton.k()
    g = _dense_rows(g)
    dg = torch.empty_like(g)
    k.norm_backward(g, s, gloss, gsq, dg, center, _Triton.tl_acc[s.dtype])
    return dg


def _norm_backward_impl(g: torch.Tensor, sqnorm: torch.Tensor, gloss: torch.Tensor | None,
                           gsq: torch.Tensor | None, center: float, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _norm_backward_ref(g, sqnorm, gloss, gsq, center)
    return _norm_backward_triton(g, sqnorm.contiguous(), gloss, None if gsq is None else gsq.contiguous(), center)


def _norm_backward_fake(g, sqnorm, gloss, gsq, center, backend):
    return torch.empty_like(g)


def _norm_backward_setup(ctx, inputs, output):
    g, _, gloss, gsq, center, _ = inputs
    ctx.save_for_backward(g, gloss, gsq)
    ctx.center = center
    ctx.set_materialize_grads(False)


def _norm_backward_grad(ctx, v):
    """Gradient of dg = k(g) g w.r.t. g, gl and gsq, in differentiable torch ops (so every order exists), with
    ||g_i|| recomputed from g: d/dg <v, dg> = k v + g * 2 gl center <g_i, v_i> / (N ||g_i||^3)."""
    g, gl, gsq = ctx.saved_tensors
    if v is None:
        return None, None, None, None, None, None
    c, n_rows = ctx.center, g.shape[0]
    acc = _acc(g.dtype)
    g2, v2 = g.reshape(n_rows, -1).to(acc), v.reshape(n_rows, -1).to(acc)
    inv = _safe_inv(_safe_sqrt(g2.pow(2).sum(1)))
    gv = (g2 * v2).sum(1)                                     # <g_i, v_i>  (N,)
    dg = _norm_coef(g2, gl, gsq, c, inv)[:, None] * v2
    dgl = None
    if gl is not None:
        dg = dg + g2 * (2 * gl * c / n_rows * inv.pow(3) * gv)[:, None]
        dgl = (2 / n_rows * (1 - c * inv) * gv).sum()
    return dg.view(g.shape).to(g.dtype), None, dgl, None if gsq is None else 2 * gv, None, None


_penalty_norm_backward = fused_op("penalty_norm_backward", _norm_backward_impl, _norm_backward_fake,
                                  _norm_backward_setup, _norm_backward_grad)


# ----------------------------------------------------------------------------------------------------------------
# gankern::penalty_lerp  x_hat = eps * real + (1 - eps) * fake, eps per sample

def _lerp_ref(real, fake, eps):
    e = eps.to(_acc(real.dtype)).view([-1] + [1] * (real.dim() - 1))
    return (e * real + (1 - e) * fake).to(real.dtype)


def _lerp_triton(real, fake, eps):
    k = _Triton.k()
    real = _dense_rows(real)
    fake = _like(fake, real)
    out = torch.empty_like(real)
    k.lerp(real, fake, eps.contiguous(), out, _Triton.tl_acc[_acc(real.dtype)])
    return out


def _lerp_impl(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "ref":
        return _lerp_ref(real, fake, eps)
    return _lerp_triton(real, fake, eps)


def _lerp_fake(real, fake, eps, backend):
    return torch.empty_like(real)


def _lerp_setup(ctx, inputs, output):
    real, fake, eps, _ = inputs
    ctx.save_for_backward(real, fake, eps)


def _lerp_grad(ctx, gout):
    real, fake, eps = ctx.saved_tensors
    e = eps.view([-1] + [1] * (real.dim() - 1))
    d_eps = None
    if ctx.needs_input_grad[2]:
        d_eps = (gout * (real - fake)).reshape(real.shape[0], -1).sum(1).to(eps.dtype)
    return gout * e, gout * (1 - e), d_eps, None


_penalty_lerp = fused_op("penalty_lerp", _lerp_impl, _lerp_fake, _lerp_setup, _lerp_grad)


# ----------------------------------------------------------------------------------------------------------------
# gankern::penalty_noise_dot  y = scale * sum(img * noise)

def _noise_dot_ref(img, noise, scale):
    acc = _acc(img.dtype)
    return (img.to(acc) * noise.to(acc)).sum() * scale


def _noise_dot_triton(img, noise, scale):
    k = _Triton.k()
    acc = _acc(img.dtype)
    img = _dense_rows(img)
    n = img.shape[0]
    part = torch.empty(n, k.parts(img.numel() // n), device=img.device, dtype=acc)
    k.rowdot_partial(img, _like(noise, img), part, _Triton.tl_acc[acc])
    return part.sum() * scale


def _noise_dot_impl(img: torch.Tensor, noise: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    return (_noise_dot_ref if backend == "ref" else _noise_dot_triton)(img, noise, scale)


def _noise_dot_fake(img, noise, scale, backend):
    return img.new_empty((), dtype=_acc(img.dtype))


def _noise_dot_setup(ctx, inputs, output):
    img, noise, scale, _ = inputs
    ctx.save_for_backward(img, noise)
    ctx.scale = scale


def _noise_dot_grad(ctx, gout):
    img, noise = ctx.saved_tensors
    d_img = (noise * (gout * ctx.scale)).to(img.dtype) if ctx.needs_input_grad[0] else None
    d_noise = (img * (gout * ctx.scale)).to(noise.dtype) if ctx.needs_input_grad[1] else None
    return d_img, d_noise, None, None


_penalty_noise_dot = fused_op("penalty_noise_dot", _noise_dot_impl, _noise_dot_fake, _noise_dot_setup,
                               _noise_dot_grad)


# ----------------------------------------------------------------------------------------------------------------
# public API

def _backend_for(t: torch.Tensor) -> str:
    if _backend.forced_backend() == "cuda":
        raise _backend.BackendUnavailable(
            "gankern backend 'cuda' was asked for but cannot run: the penalty family has Triton kernels only "
            "(use 'triton' or 'ref')")
    return _backend.select(t.device, t.dtype, PREFERENCE, KERNEL_DTYPES)


def _center(center) -> float:
    if isinstance(center, bool) or not isinstance(center, (int, float)) or not math.isfinite(center) or center < 0:
        raise ValueError(f"center must be a finite float >= 0, got {center!r}")
    return float(center)


def _batch(name: str, t, floats=True) -> torch.Tensor:
    _validate.tensor(name, t, dtypes=_validate.FLOATS if floats else None)
    if t.dim() < 1 or t.shape[0] < 1:
        raise ValueError(f"{name} must have a batch dimension of at least 1 sample, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    return t


def grad_norm_penalty(g: torch.Tensor, center: float = 0.0) -> torch.Tensor:
    """mean_i (||g_i||_2 - center)^2 in one fused pass, differentiable to every order.

    Args:
        g: (N, ...) per-sample gradients (contiguous or channels_last stay in place).
        center: 0 gives R1's mean squared norm, 1 WGAN-GP's term.
    Returns:
        () in float32 (float64 for float64 g).
    """
    _batch("g", g)
    return _penalty_norm(g, _center(center), _backend_for(g))[0]


def _input_grad(out: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True, allow_unused=True)
    if g is None:
        raise ValueError(f"{what} does not depend on its input: there is no gradient to penalize")
    return g


def r1_penalty(d_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """R1 (on reals) or R2 (on fakes): mean_i ||grad_x sum(d_out)_i||^2; multiply by gamma / 2 for the loss.

    Args:
        d_out: (N, ...) D's output on x (any trailing shape; summed), computed with grad enabled.
        x: (N, ...) D's input, with ``requires_grad=True``.
    Returns:
        () float32 (float64 for float64 x), differentiable w.r.t. D's parameters.
    """
    _batch("d_out", d_out)
    _batch("x", x)
    if d_out.shape[0] != x.shape[0]:
        raise ValueError(f"d_out and x must have the same batch size, got {d_out.shape[0]} and {x.shape[0]}")
    if not x.requires_grad:
        raise ValueError("x must have requires_grad=True (set it before running D on x)")
    if not d_out.requires_grad:
        raise ValueError("d_out does not require grad: run D on x with grad enabled")
    return grad_norm_penalty(_input_grad(d_out, x, "d_out"), 0.0)


def _generator(generator, device: torch.device):
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the inputs are on {device}")
    return generator


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_hat = eps * real + (1 - eps) * fake per sample, one fused pass; differentiable in real, fake and eps.

    Args:
        real, fake: (N, ...) of one shape, dtype and device; eps: (N,) (e.g. uniform in [0, 1)).
    """
    _batch("real", real)
    _batch("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    _validate.tensor("eps", eps, ndim=1)
    device = _validate.same_device(real=real, fake=fake, eps=eps)
    _validate.tensor("fake", fake, dtypes=(real.dtype,))
    if eps.shape[0] != real.shape[0]:
        raise ValueError(f"eps must have one value per sample ({real.shape[0]}), got shape {tuple(eps.shape)}")
    return _penalty_lerp(real, fake, eps, _backend_for(real))


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, center: float = 1.0, *d_args,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean_i (||grad D(x_hat)_i||_2 - center)^2 at x_hat = eps * real + (1 - eps) * fake.

    Args:
        D: any callable, ``D(x_hat, *d_args)`` (extra arguments such as class labels are passed through).
        real, fake: (N, ...) of one shape, dtype and device; both are detached (the penalty is a function of D).
        center: 1 (Gulrajani et al.) or 0 (zero-centered variant).
        generator: the torch.Generator (on real's device) that draws eps ~ U[0, 1) per sample.
    Returns:
        () float32 (float64 for float64 inputs), differentiable w.r.t. D's parameters.
    """
    if not callable(D):
        raise TypeError(f"D must be callable (a module or function), got {type(D).__name__}")
    _batch("real", real)
    _batch("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    device = _validate.same_device(real=real, fake=fake)
    if fake.dtype != real.dtype:
        raise TypeError(f"real and fake must have the same dtype, got {real.dtype} and {fake.dtype}")
    c = _center(center)
    backend = _backend_for(real)
    eps = torch.rand(real.shape[0], generator=_generator(generator, device), device=device, dtype=real.dtype)
    with torch.enable_grad():
        x_hat = _penalty_lerp(real.detach(), fake.detach(), eps, backend).requires_grad_(True)
        out = D(x_hat, *d_args)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise ValueError("D(x_hat, *d_args) must return a tensor that depends on x_hat")
        g = _input_grad(out, x_hat, "D's output")
        return _penalty_norm(g, c, backend)[0]


def path_length_penalty(img: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float = 0.01, *,
                        noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                        through_mean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path length penalty; updates the running mean ``pl_mean`` in place.

    lengths_i = sqrt(mean_l ||d (sum(img * noise) / sqrt(H W)) / d ws[i, l]||^2), noise ~ N(0, 1) per pixel;
    m = pl_mean + decay * (mean_i lengths_i - pl_mean) (stored into pl_mean); penalty = mean_i (lengths_i - m)^2.
    The gradient goes through m, which depends on this batch's lengths (official TensorFlow StyleGAN2 and
    StyleGAN2-ADA: a (1 - decay / N) factor on the mean's part); ``through_mean=False`` holds m constant instead.
    Multiply by pl_weight (2) and the lazy interval (4).

    Args:
        img: (N, C, H, W) generator output, computed from ws with grad enabled.
        ws: (N, L, w_dim) or (N, w_dim) latents that img depends on (requires_grad).
        pl_mean: () float tensor, the running mean (a buffer: see gankern.nn.PathLengthRegularizer).
        noise: (N, C, H, W) to use instead of drawing (tests); generator: draws the noise (on img's device).
        through_mean: differentiate through the updated mean (default, official) or hold it constant.
    Returns:
        (penalty (), lengths (N,)), float32 (float64 for float64 img).
    """
    _batch("img", img)
    _validate.tensor("img", img, ndim=4)
    _batch("ws", ws)
    _validate.tensor("ws", ws, ndim=(2, 3))
    _validate.tensor("pl_mean", pl_mean, ndim=0, dtypes=(torch.float32, torch.float64))
    device = _validate.same_device(img=img, ws=ws, pl_mean=pl_mean)
    if ws.shape[0] != img.shape[0]:
        raise ValueError(f"img and ws must have the same batch size, got {img.shape[0]} and {ws.shape[0]}")
    if not ws.requires_grad:
        raise ValueError("ws must have requires_grad=True (set it before running G on ws)")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
        raise ValueError(f"decay must be a float in [0, 1], got {decay!r}")
    if noise is None:
        noise = torch.randn(img.shape, generator=_generator(generator, device), device=device, dtype=img.dtype)
    else:
        _validate.tensor("noise", noise, dtypes=(img.dtype,), device=device)
        if noise.shape != img.shape:
            raise ValueError(f"noise must have img's shape {tuple(img.shape)}, got {tuple(noise.shape)}")
    backend = _backend_for(img)
    with torch.enable_grad():
        y = _penalty_noise_dot(img, noise, 1.0 / math.sqrt(img.shape[2] * img.shape[3]), backend)
        g = _input_grad(y, ws, "img")
        s = _penalty_norm(g, 0.0, backend)[1]                       # ||g_i||^2 over all of ws[i]  (N,)
        lengths = _safe_sqrt(s / (ws.shape[1] if ws.dim() == 3 else 1))
        mean = pl_mean.detach().to(lengths.dtype).lerp(lengths.mean(), float(decay))
        with torch.no_grad():
            pl_mean.copy_(mean)
        return (lengths - (mean if through_mean else mean.detach())).pow(2).mean(), lengths
