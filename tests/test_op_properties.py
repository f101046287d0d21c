"""Properties every public op holds on every backend (issue 12's silent-wrong classes):

1. layout: each tensor argument, passed contiguous, non-contiguous (a strided view) or expanded (a stride-0 view),
   gives the reference's result on contiguous copies of the same values (forward and first-order gradients), or is
   rejected with an error that names the argument (arguments the op updates in place);
2. NaN / Inf: a NaN, +Inf or -Inf at a random element of a floating argument comes out where the reference puts it
   (same NaN and Inf positions, same finite values elsewhere).

Sizes and the poisoned element are drawn by hypothesis. Triton runs in the interpreter and CUDA in the simulation on
CPU tensors (conftest.backend_ctx)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import gankern.metrics as metrics
from gankern import ops
from gankern.ops import fid, resample, spectral_norm
from gankern.ops.modulation import ACTIVATIONS, demodulation_coefficients

from conftest import backend_ctx


@dataclass
class Spec:
    """One public op: ``make(draw)`` -> dict of arguments (tensors and others); ``call(**args)`` -> a tensor, a
    float or a tuple/list of them; ``grad``: the argument names to differentiate (first order);
    ``expand``: per argument, the dims its expanded layout broadcasts (default: dim 0);
    ``in_place``: arguments the op updates in place (a non-contiguous one must be refused, naming it);
    ``no_nan``: arguments where a NaN / Inf must be refused (inputs that the op checks, e.g. covariances)."""
    make: Callable
    call: Callable
    backends: tuple[str, ...]
    grad: tuple[str, ...] = ()
    expand: dict = field(default_factory=dict)
    in_place: tuple[str, ...] = ()
    no_nan: tuple[str, ...] = ()
    tol: float = 2e-5


ALL = ("ref", "triton", "cuda")
TRITON = ("ref", "triton")


def sizes(draw, lo=1, hi=5, k=1):
    return [draw(st.integers(lo, hi)) for _ in range(k)]


def _bias_act(draw):
    n, c, h = sizes(draw, 1, 5, 3)
    return dict(x=torch.randn(n, c, h) * 2, b=torch.randn(c), dim=1)


def _bias_act_all(x, b, dim):
    """Every activation, every other one clamped (NaN handling differs per activation and in the clamp)."""
    return [ops.bias_act(x, b, dim, act=a, clamp=0.8 if i % 2 else None) for i, a in enumerate(sorted(ACTIVATIONS))]


def _adain(draw):
    n, c = sizes(draw, 1, 3, 2)
    h, w = sizes(draw, 2, 5, 2)
    return dict(x=torch.randn(n, c, h, w), gamma=torch.randn(n, c), beta=torch.randn(n, c))


def _instance_norm(draw):
    n, c = sizes(draw, 1, 3, 2)
    h, w = sizes(draw, 1, 5, 2)
    return dict(x=torch.randn(n, c, h + (h * w < 2), w), weight=torch.randn(c), bias=torch.randn(c),
                act=draw(st.sampled_from(["linear", "relu", "lrelu"])))


def _modconv(draw):
    n, i, o = sizes(draw, 1, 3, 3)
    h, w = sizes(draw, 3, 6, 2)
    up = draw(st.sampled_from([1, 2]))
    k = 3
    ho, wo = resample.conv2d_resample_size(h, w, k, k, resample.setup_filter([1, 3, 3, 1]) if up > 1 else None, up,
                                           1, k // 2)
    return dict(x=torch.randn(n, i, h, w), weight=torch.randn(o, i, k, k), styles=torch.randn(n, i) + 1.5,
                bias=torch.randn(o), noise=torch.randn(n, 1, ho, wo), noise_strength=torch.randn(o),
                up=up, act=draw(st.sampled_from(["lrelu", "linear", "relu"])), clamp=draw(st.sampled_from([None, 2.0])))


def _noise_bias_act(draw):
    n, c = sizes(draw, 1, 3, 2)
    h, w = sizes(draw, 2, 6, 2)
    return dict(x=torch.randn(n, c, h, w), noise=torch.randn(draw(st.sampled_from([1, n])), 1, h, w),
                noise_strength=torch.randn(c), b=torch.randn(c), act=draw(st.sampled_from(["lrelu", "relu"])))


def _demod(draw):
    n, i, o = sizes(draw, 1, 5, 3)
    return dict(weight=torch.randn(o, i, 3, 3), styles=torch.randn(n, i))


def _upfirdn(draw):
    n, c = sizes(draw, 1, 2, 2)
    h, w = sizes(draw, 3, 7, 2)
    sep = draw(st.booleans())
    return dict(x=torch.randn(n, c, h, w), f=torch.rand(4) if sep else torch.rand(3, 4),
                up=draw(st.sampled_from([1, 2])), down=draw(st.sampled_from([1, 2])), padding=[2, 1, 1, 2])


def _conv_resample(draw):
    n, i, o = sizes(draw, 1, 3, 3)
    h, w = sizes(draw, 4, 7, 2)
    return dict(x=torch.randn(n, i, h, w), w=torch.randn(o, i, 3, 3), f=resample.setup_filter([1, 3, 3, 1]),
                up=draw(st.sampled_from([1, 2])), down=draw(st.sampled_from([1, 2])), padding=1)


def _mb_disc(draw):
    n, a, b, c = sizes(draw, 1, 5, 4)
    return dict(f=torch.randn(n, a) * 0.3, T=torch.randn(a, b * c) * 0.3, B=b, C=c)


def _mb_pairs(draw):
    n, b, c = sizes(draw, 1, 5, 3)
    return dict(M=torch.randn(n, b, c) * 0.5)


def _mb_std(draw):
    g, m, f = draw(st.sampled_from([1, 2, 4])), *sizes(draw, 1, 2, 2)
    c, h, w = f * draw(st.integers(1, 3)), *sizes(draw, 1, 4, 2)
    return dict(x=torch.randn(g * m, c, h, w), group_size=g, num_channels=f)


def _grad_norm(draw):
    n, c, h = sizes(draw, 1, 4, 3)
    return dict(g=torch.randn(n, c, h, 3), center=draw(st.sampled_from([0.0, 1.0])))


def _interp(draw):
    n, c, h = sizes(draw, 1, 4, 3)
    return dict(real=torch.randn(n, c, h, 2), fake=torch.randn(n, c, h, 2), eps=torch.rand(n))


def _r1(draw):
    n, c, h = sizes(draw, 1, 4, 3)
    return dict(x=torch.randn(n, c, h, 3), w=torch.randn(c, h, 3))


def _gp(draw):
    n, c, h = sizes(draw, 1, 4, 3)
    return dict(real=torch.randn(n, c, h, 2), fake=torch.randn(n, c, h, 2), w=torch.randn(c, h, 2))


def _pl(draw):
    n, l, d = sizes(draw, 1, 3, 3)
    c, h = sizes(draw, 1, 3, 2)
    return dict(ws=torch.randn(n, l, d), A=torch.randn(d, c * h * 3), noise=torch.randn(n, c, h, 3),
                pl_mean=torch.tensor(0.5))


def _cov(d, rank, gen):
    a = torch.randn(d, rank, dtype=torch.float64, generator=gen)
    return a @ a.T


def _tsp(draw):
    d = draw(st.integers(2, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return dict(sigma1=_cov(d, d + 1, gen), sigma2=_cov(d, draw(st.integers(1, d + 1)), gen))


def _fd(draw):
    d = draw(st.integers(2, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return dict(mu1=torch.randn(d, dtype=torch.float64), sigma1=_cov(d, d + 1, gen), mu2=torch.randn(d),
                sigma2=_cov(d, d + 2, gen).float())


def _kid(draw):
    n, d = sizes(draw, 4, 9, 2)
    return dict(feats_real=torch.randn(n, d), feats_fake=torch.randn(n + 1, d) + 0.3)


def _stats(draw):
    n, d = sizes(draw, 2, 9, 2)
    return dict(feats=torch.randn(n, d))


def _sn(draw):
    h, w = sizes(draw, 2, 7, 2)
    u, v = F.normalize(torch.randn(h), dim=0), F.normalize(torch.randn(w * 3), dim=0)
    return dict(weight=torch.randn(h, w, 3), u=u, v=v)


def _stats_call(feats):
    mu, sigma = metrics.FeatureStats().update(feats).mean_cov()
    return mu, sigma


SPECS: dict[str, Spec] = {
    "bias_act": Spec(_bias_act, _bias_act_all, ALL, grad=("x", "b")),
    "adain": Spec(_adain, ops.adain, TRITON, grad=("x", "gamma", "beta"), tol=1e-4),
    "instance_norm": Spec(_instance_norm, ops.instance_norm, TRITON, grad=("x", "weight", "bias"), tol=1e-4),
    "modulated_conv2d": Spec(
        _modconv, lambda x, weight, styles, bias, noise, noise_strength, up, act, clamp: ops.modulated_conv2d(
            x, weight, styles, up=up, padding=1, bias=bias, noise=noise, noise_strength=noise_strength, act=act,
            clamp=clamp),
        TRITON, grad=("x", "weight", "styles", "bias", "noise_strength"), expand={"noise": (0, 2)}, tol=1e-4),
    "noise_bias_act": Spec(_noise_bias_act, ops.noise_bias_act, TRITON, grad=("x", "noise_strength", "b")),
    "demodulation_coefficients": Spec(_demod, demodulation_coefficients, TRITON, grad=("weight", "styles"),
                                      tol=1e-4),
    "upfirdn2d": Spec(_upfirdn, ops.upfirdn2d, TRITON, grad=("x",), no_nan=("f",)),
    "conv2d_resample": Spec(_conv_resample, resample.conv2d_resample, TRITON, grad=("x", "w"), no_nan=("f",),
                            tol=1e-4),
    "minibatch_discrimination": Spec(_mb_disc, ops.minibatch_discrimination, ALL, grad=("f", "T"), tol=1e-4),
    "minibatch_discrimination_pairs": Spec(_mb_pairs, ops.minibatch_discrimination_pairs, ALL, grad=("M",),
                                           tol=1e-4),
    "minibatch_stddev": Spec(_mb_std, ops.minibatch_stddev, ALL, grad=("x",), tol=1e-4),
    "grad_norm_penalty": Spec(_grad_norm, ops.grad_norm_penalty, TRITON, grad=("g",)),
    "interpolate": Spec(_interp, lambda real, fake, eps: ops.penalty.interpolate(real, fake, eps), TRITON,
                        grad=("real", "fake", "eps")),
    "r1_penalty": Spec(_r1, lambda x, w: ops.r1_penalty((x.square() * w).flatten(1).sum(1), x), TRITON,
                       grad=("x", "w"), tol=1e-4),
    "gradient_penalty": Spec(
        _gp, lambda real, fake, w: ops.gradient_penalty(lambda xh: (xh.square() * w).flatten(1).sum(1), real, fake,
                                                        generator=torch.Generator(real.device).manual_seed(0)),
        TRITON, grad=("w",), tol=1e-4),
    "path_length_penalty": Spec(
        _pl, lambda ws, A, noise, pl_mean: ops.path_length_penalty(
            torch.tanh(ws.mean(1) @ A).view(noise.shape), ws, pl_mean, noise=noise),
        TRITON, grad=("ws", "A"), in_place=("pl_mean",), tol=1e-4),
    "trace_sqrt_product": Spec(_tsp, fid.trace_sqrt_product, ("ref",), expand={"sigma1": (0, 1), "sigma2": (0, 1)},
                               no_nan=("sigma1", "sigma2"), tol=1e-9),
    "frechet_distance": Spec(_fd, metrics.frechet_distance, ("ref",), expand={"sigma1": (0, 1), "sigma2": (0, 1)},
                             no_nan=("mu1", "sigma1", "mu2", "sigma2"), tol=1e-6),
    "kid": Spec(_kid, lambda feats_real, feats_fake: metrics.kid(feats_real, feats_fake, 3, 4), TRITON,
                no_nan=("feats_real", "feats_fake"), tol=1e-9),
    "FeatureStats": Spec(_stats, _stats_call, ("ref",), tol=1e-6),
    "spectral_normalize_all": Spec(
        _sn, lambda weight, u, v: spectral_norm.spectral_normalize_all([weight], [u], [v]), ALL, grad=("weight",),
        in_place=("weight", "u", "v"), tol=1e-4),
}


# ----------------------------------------------------------------------------------------------------------------
# layouts

def _noncontig(t: torch.Tensor) -> torch.Tensor:
    """The same values in a view with a stride of 2 along the last dim (a 0-dim tensor: none)."""
    if t.dim() == 0:
        return t
    buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype, device=t.device)
    buf[..., ::2] = t
    return buf[..., ::2]


def _expanded(t: torch.Tensor, dims) -> torch.Tensor:
    """t's first slice along ``dims`` broadcast over them (stride 0): other values, the same for every backend."""
    dims = [d for d in dims if d < t.dim() and t.shape[d] > 1]
    if not dims:
        return t
    idx = tuple(slice(0, 1) if d in dims else slice(None) for d in range(t.dim()))
    return t[idx].expand(t.shape)


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return [out if isinstance(out, torch.Tensor) else torch.tensor(out, dtype=torch.float64)]


def _run(spec: Spec, backend: str, args: dict, views: dict, grads: bool = True):
    """Call the op under ``backend`` with ``views`` (functions of leaves) and return (outputs, gradients)."""
    leaves = {k: (v.detach().clone().requires_grad_(k in spec.grad) if isinstance(v, torch.Tensor) else v)
              for k, v in args.items()}
    call = {k: (views[k](v) if k in views else v) for k, v in leaves.items()}
    with backend_ctx(backend):
        outs = _outputs(spec.call(**call))
        live = [o for o in outs if o.requires_grad]
        grads = []
        if live and spec.grad and grads:
            ws = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i), dtype=o.dtype).to(o.device)
                  for i, o in enumerate(live)]
            grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(live, ws)), [leaves[k] for k in spec.grad],
                                        allow_unused=True, materialize_grads=True)
    return [o.detach() for o in outs], [g.detach() for g in grads]


def _close(got, want, tol, what):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g.to(w.dtype), w, rtol=tol, atol=tol, equal_nan=True,
                                   msg=lambda m: f"{what}, output {i}: {m}")


def _cases():
    return [pytest.param(op, b, id=f"{op}-{b}") for op, spec in SPECS.items() for b in spec.backends]


# no shrinking: a failure names the op, backend, argument and layout, and shrinking the draws takes minutes
PROPERTY_SETTINGS = settings(max_examples=2, deadline=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _make(spec: Spec, data, device: str) -> dict:
    """The op's arguments, with torch's generator seeded from the draw (a failure's printed draws reproduce it)."""
    torch.manual_seed(data.draw(st.integers(0, 2**31 - 1), label="torch seed"))
    return _on(spec.make(data.draw), device)


def _on(args: dict, device: str) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


@pytest.mark.parametrize("op,backend", _cases())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_tensor_argument_in_every_layout_matches_reference(op, backend, data):
    check_layouts(op, backend, data, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("op,backend", _cases())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_gpu_every_tensor_argument_in_every_layout_matches_reference(op, backend, data):
    check_layouts(op, backend, data, "cuda")


def check_layouts(op, backend, data, device):
    spec = SPECS[op]
    args = _make(spec, data, device)
    for name, t in args.items():
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            continue
        for layout, view in (("non-contiguous", _noncontig),
                             ("expanded", lambda v, n=name: _expanded(v, spec.expand.get(n, (0,))))):
            views = {name: view}
            if name in spec.in_place:
                with pytest.raises((ValueError, TypeError), match=name):
                    _run(spec, backend, args, views)
                continue
            got = _run(spec, backend, args, views)
            # the reference on contiguous copies of the same values
            ref = _run(spec, "ref", args, {name: lambda v, f=view: f(v).contiguous()})
            what = f"{op} on {backend}, {name} {layout}"
            _close(got[0], ref[0], spec.tol, what + " (values)")
            _close(got[1], ref[1], spec.tol, what + " (gradients)")


# the Triton interpreter's numpy warns on the NaN / Inf arithmetic these tests ask for
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("op,backend", _cases())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_nan_and_inf_come_out_where_the_reference_puts_them(op, backend, data):
    check_nan_inf(op, backend, data, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("op,backend", _cases())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_gpu_nan_and_inf_come_out_where_the_reference_puts_them(op, backend, data):
    """On the GPU too: tl.minimum / tl.maximum and fminf / fmaxf drop NaN there, not in the interpreter."""
    check_nan_inf(op, backend, data, "cuda")


def check_nan_inf(op, backend, data, device):
    spec = SPECS[op]
    args = _make(spec, data, device)
    for name, t in args.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0 or name in spec.in_place:
            continue
        value = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label=f"{name} value")
        pos = data.draw(st.integers(0, t.numel() - 1), label=f"{name} position")
        bad = t.clone()
        bad.view(-1)[pos] = value
        poisoned = dict(args, **{name: bad})
        if name in spec.no_nan:
            with pytest.raises(ValueError, match="non-finite|NaN|inf"):
                _run(spec, backend, poisoned, {})
            continue
        got = _run(spec, backend, poisoned, {}, grads=False)[0]
        want = _run(spec, "ref", poisoned, {}, grads=False)[0]
        what = f"{op} on {backend}, {value} in {name}[{pos}]"
        for i, (g, w) in enumerate(zip(got, want)):
            assert torch.equal(g.isnan(), w.isnan()), f"{what}, output {i}: NaN at {g.isnan().nonzero().tolist()}, " \
                f"reference at {w.isnan().nonzero().tolist()}"
            assert torch.equal(g.isposinf(), w.isposinf()) and torch.equal(g.isneginf(), w.isneginf()), \
                f"{what}, output {i}: Inf positions differ"
        _close(got, want, spec.tol, what)

