"""Penalty family: every backend against plain-autograd oracles (values, gradients w.r.t. the penalized gradient
and w.r.t. D's / G's parameters), gradcheck and gradgradcheck in float64, layouts, dtypes, the path-length buffer,
torch.compile, and bad input. Triton runs in the interpreter on CPU tensors; the family has no CUDA kernels."""
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gankern
from gankern.kernels import penalty as kernels
from gankern.nn import PathLengthRegularizer
from gankern.ops import bias_act
from gankern.ops.penalty import (_penalty_norm, grad_norm_penalty, gradient_penalty, interpolate,
                                 path_length_penalty, r1_penalty)

from conftest import assert_close_scaled, gpu_rtol, poison_allocator

BACKENDS = ("ref", "triton")


@pytest.fixture
def poisoned(monkeypatch):
    """Every buffer the ops allocate starts as NaN, so an element a kernel forgets to write fails the test."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t
    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


# ----------------------------------------------------------------------------------------------------------------
# plain-autograd oracles

def oracle_norm_penalty(g, center):
    return (g.flatten(1).double().norm(dim=1) - center).pow(2).mean()


def oracle_r1(D, x, *args):
    (g,) = torch.autograd.grad(D(x, *args).sum(), x, create_graph=True)
    return g.pow(2).flatten(1).sum(1).mean()


def oracle_gp(D, real, fake, center, eps, *args):
    e = eps.view([-1] + [1] * (real.dim() - 1))
    x_hat = (e * real + (1 - e) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat, *args).sum(), x_hat, create_graph=True)
    return (g.flatten(1).norm(dim=1) - center).pow(2).mean()


def oracle_pl(G, ws, noise, pl_mean, decay, through_mean=True):
    """StyleGAN2 as the official TensorFlow code and StyleGAN2-ADA write it: pl_mean updated first, and the penalty
    differentiated through the update (no stop-gradient on it); through_mean=False: the update held constant."""
    img = G(ws)
    (g,) = torch.autograd.grad((img * noise).sum() / (img.shape[2] * img.shape[3]) ** 0.5, ws, create_graph=True)
    lengths = g.square().sum(2).mean(1).sqrt()
    batch_mean = lengths.mean() if through_mean else lengths.mean().detach()
    new_mean = pl_mean + decay * (batch_mean - pl_mean)
    return (lengths - new_mean).pow(2).mean(), lengths, new_mean.detach()


class SmallD(nn.Module):
    """Two stages of [3x3 conv, activation, 2x2 avg-pool] and a linear head; conditional with a class projection.
    ``fused`` runs gankern's bias_act for bias + LeakyReLU (the composite path of the R1 benchmark)."""

    def __init__(self, ch=3, res=8, width=4, num_classes=0, fused=False):
        super().__init__()
        self.fused = fused
        self.convs = nn.ModuleList([nn.Conv2d(ch, width, 3, padding=1, bias=False),
                                    nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)])
        self.biases = nn.ParameterList([nn.Parameter(torch.randn(c) * 0.1) for c in (width, 2 * width)])
        feat = 2 * width * (res // 4) ** 2
        self.head = nn.Linear(feat, 1)
        self.embed = nn.Embedding(num_classes, feat) if num_classes else None

    def forward(self, x, y=None):
        for conv, b in zip(self.convs, self.biases):
            x = bias_act(conv(x), b, act="lrelu", alpha=0.2, gain=1.0) if self.fused else \
                F.leaky_relu(conv(x) + b[:, None, None], 0.2)
            x = F.avg_pool2d(x, 2)
        h = x.flatten(1)
        out = self.head(h)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1, keepdim=True)
        return out


def param_grads(module):
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


def assert_close_lists(a, b, **tol):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


# ----------------------------------------------------------------------------------------------------------------
# the fused norm penalty

def _layouts(shape):
    g = torch.randn(shape)
    yield "contiguous", g
    if len(shape) == 4:
        yield "channels_last", g.contiguous(memory_format=torch.channels_last)
    yield "transposed", torch.randn(shape[::-1]).transpose(0, -1)


# row lengths below one block, across block and chunk boundaries (CHUNK = 8192), single-sample and single-element rows
SHAPES = [(5, 3, 7, 9), (3, 8193), (2, 3, 61, 71), (1, 1), (7, 1)]


@pytest.mark.parametrize("center", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_norm_penalty_matches_oracle(name, shape, center, poisoned):
    for layout, g0 in _layouts(shape):
        g = g0.detach().requires_grad_(True)
        with gankern.use_backend(name):
            loss = grad_norm_penalty(g, center)
        gl = torch.rand(()) + 0.5
        (dg,) = torch.autograd.grad(loss, g, gl)
        gw = g0.detach().double().requires_grad_(True)
        want = oracle_norm_penalty(gw, center)
        (dw,) = torch.autograd.grad(want, gw, gl.double())
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
        assert dg.shape == g.shape
        if layout == "channels_last":  # the gradient keeps the layout (written in place of the row view)
            assert dg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(dg.double(), dw, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_norm_penalty_kernel_dtypes(dtype, poisoned):
    g = torch.randn(6, 3, 11, 13).to(dtype).requires_grad_(True)
    with gankern.use_backend("triton"):
        loss = grad_norm_penalty(g, 1.0)
    (dg,) = torch.autograd.grad(loss, g)
    gw = g.detach().double().requires_grad_(True)
    want = oracle_norm_penalty(gw, 1.0)
    (dw,) = torch.autograd.grad(want, gw)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and dg.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-3, atol=1e-5)
    torch.testing.assert_close(loss.double(), want, **tol)
    torch.testing.assert_close(dg.double(), dw, **tol)


def test_zero_gradient_rows_have_zero_penalty_gradient():
    g = torch.randn(4, 10, dtype=torch.float64)
    g[1] = 0
    for name in BACKENDS:
        gg = g.clone().requires_grad_(True)
        with gankern.use_backend(name):
            loss = grad_norm_penalty(gg, 1.0)
        (dg,) = torch.autograd.grad(loss, gg)
        assert torch.isfinite(dg).all() and (dg[1] == 0).all()
        torch.testing.assert_close(loss, oracle_norm_penalty(g, 1.0))


@pytest.mark.parametrize("center", [0.0, 1.0])
@pytest.mark.parametrize("name", BACKENDS)
def test_norm_penalty_gradcheck_gradgradcheck_float64(name, center):
    """Both outputs of the op (the penalty and the squared norms) and the backward op's own gradient."""
    g = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64)

    def f(g):
        loss, sq = _penalty_norm(g, center, name)
        return loss + (w * sq).sum()
    assert torch.autograd.gradcheck(f, (g,))
    assert torch.autograd.gradgradcheck(f, (g,))
    with gankern.use_backend(name):
        assert torch.autograd.gradgradcheck(lambda g: grad_norm_penalty(g, center), (g,))


# ----------------------------------------------------------------------------------------------------------------
# R1

@pytest.mark.parametrize("name", BACKENDS)
def test_r1_matches_oracle_values_and_d_parameter_gradients_float64(name):
    torch.manual_seed(1)
    D = SmallD(res=8).double()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with gankern.use_backend(name):
        got = r1_penalty(D(x), x)
    got.backward()
    g_got = param_grads(D)
    D.zero_grad()
    want = oracle_r1(D, x)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert_close_lists(g_got, param_grads(D), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_r1_gradcheck_wrt_d_parameters_float64(name):
    torch.manual_seed(2)
    D = SmallD(res=4, width=2).double()
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    names = [n for n, _ in D.named_parameters()]

    def f(*ps):
        xx = x.clone().requires_grad_(True)
        out = torch.func.functional_call(D, dict(zip(names, ps)), (xx,))
        with gankern.use_backend(name):
            return r1_penalty(out, xx)
    assert torch.autograd.gradcheck(f, tuple(p.detach().requires_grad_(True) for p in D.parameters()), fast_mode=True)


@pytest.mark.parametrize("name", BACKENDS)
def test_r1_with_fused_bias_act_d_float32_channels_last(name):
    """The benchmark's composite path: bias_act's fused second-order gradients under the penalty's double backward."""
    torch.manual_seed(3)
    D = SmallD(res=8, fused=True)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with gankern.use_backend(name):
        got = r1_penalty(D(x), x)
        got.backward()
    g_got = param_grads(D)
    D64 = SmallD(res=8, fused=False).double()
    D64.load_state_dict(D.state_dict())
    x64 = x.detach().double().requires_grad_(True)
    want = oracle_r1(D64, x64)   # the same network in torch ops
    want.backward()
    g_want = param_grads(D64)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    assert_close_lists([g.double() for g in g_got], g_want, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# WGAN-GP

@pytest.mark.parametrize("center", [1.0, 0.0])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("name", BACKENDS)
def test_gradient_penalty_matches_oracle_float64(name, conditional, center):
    torch.manual_seed(4)
    D = SmallD(res=8, num_classes=5 if conditional else 0).double()
    real = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    fake = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    args = (torch.randint(0, 5, (6,)),) if conditional else ()
    with gankern.use_backend(name):
        got = gradient_penalty(D, real, fake, center, *args, generator=torch.Generator().manual_seed(7))
    got.backward()
    g_got = param_grads(D)
    D.zero_grad()
    eps = torch.rand(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    want = oracle_gp(D, real, fake, center, eps, *args)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert_close_lists(g_got, param_grads(D), rtol=1e-9, atol=1e-12)


def test_gradient_penalty_generator_is_reproducible_and_drawn_per_call():
    D = SmallD(res=8)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    a = gradient_penalty(D, real, fake, generator=gen)
    b = gradient_penalty(D, real, fake, generator=gen)
    c = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    assert a.item() == c.item() and a.item() != b.item()


@pytest.mark.parametrize("name", BACKENDS)
def test_gradient_penalty_gradcheck_wrt_d_parameters_float64(name):
    torch.manual_seed(5)
    D = SmallD(res=4, width=2).double()
    real, fake = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.randn(3, 3, 4, 4, dtype=torch.float64)
    names = [n for n, _ in D.named_parameters()]

    def f(*ps):
        Dp = lambda x: torch.func.functional_call(D, dict(zip(names, ps)), (x,))  # noqa: E731
        with gankern.use_backend(name):
            return gradient_penalty(Dp, real, fake, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.autograd.gradcheck(f, tuple(p.detach().requires_grad_(True) for p in D.parameters()), fast_mode=True)


@pytest.mark.parametrize("name", BACKENDS)
def test_interpolate_matches_and_gradchecks(name, poisoned):
    real = torch.randn(5, 3, 9, 11)
    fake = torch.randn(5, 3, 9, 11).contiguous(memory_format=torch.channels_last)   # a different layout from real
    eps = torch.rand(5)
    with gankern.use_backend(name):
        got = interpolate(real, fake, eps)
    e = eps.view(-1, 1, 1, 1)
    torch.testing.assert_close(got, e * real + (1 - e) * fake, rtol=1e-6, atol=1e-6)
    args = [torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    args.append(torch.rand(3, dtype=torch.float64, requires_grad=True))
    with gankern.use_backend(name):
        assert torch.autograd.gradcheck(interpolate, tuple(args))
        assert torch.autograd.gradgradcheck(interpolate, tuple(args))


# ----------------------------------------------------------------------------------------------------------------
# path length

class SmallG(nn.Module):
    """ws (N, L, w_dim) -> img (N, 3, res, res): one affine per w, summed, then a nonlinearity (so the Jacobian
    depends on ws and the penalty has a non-trivial gradient w.r.t. G's parameters)."""

    def __init__(self, L=3, w_dim=4, res=5):
        super().__init__()
        self.res = res
        self.fc = nn.Linear(L * w_dim, 3 * res * res)

    def forward(self, ws):
        return torch.tanh(self.fc(ws.flatten(1))).view(-1, 3, self.res, self.res)


@pytest.mark.parametrize("through_mean", [True, False], ids=["official", "held-mean"])
@pytest.mark.parametrize("name", BACKENDS)
def test_path_length_matches_oracle_over_steps_float64(name, through_mean):
    torch.manual_seed(6)
    G = SmallG().double()
    reg = PathLengthRegularizer(decay=0.3, through_mean=through_mean).double()
    pl_mean = torch.zeros((), dtype=torch.float64)
    for step in range(3):
        ws = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
        noise = torch.randn(4, 3, 5, 5, dtype=torch.float64)
        G.zero_grad()
        with gankern.use_backend(name):
            got = reg(G(ws), ws, noise=noise)
        got.backward()
        g_got = param_grads(G)
        G.zero_grad()
        want, _, pl_mean = oracle_pl(G, ws, noise, pl_mean, 0.3, through_mean)
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(reg.pl_mean, pl_mean, rtol=1e-12, atol=0)
        assert_close_lists(g_got, param_grads(G), rtol=1e-9, atol=1e-12)


def test_path_length_float32_triton_and_two_dim_ws_and_generator():
    torch.manual_seed(7)
    G = nn.Sequential(nn.Linear(6, 3 * 4 * 4), nn.Tanh(), nn.Unflatten(1, (3, 4, 4)))
    ws = torch.randn(5, 6, requires_grad=True)
    outs = []
    for name in BACKENDS:
        pl_mean = torch.zeros(())
        with gankern.use_backend(name):
            pen, lengths = path_length_penalty(G(ws), ws, pl_mean, generator=torch.Generator().manual_seed(1))
        outs.append((pen, lengths, pl_mean))
    noise = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    (g,) = torch.autograd.grad((G(ws) * noise).sum() / 4.0, ws)
    want_len = g.norm(dim=1)
    for pen, lengths, pl_mean in outs:
        torch.testing.assert_close(lengths, want_len, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pl_mean, 0.01 * want_len.mean(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(pen, (want_len - 0.01 * want_len.mean()).pow(2).mean(), rtol=1e-5, atol=1e-6)


def test_path_length_regularizer_buffer_survives_checkpoints():
    G = SmallG()
    reg = PathLengthRegularizer()
    ws = torch.randn(2, 3, 4, requires_grad=True)
    reg(G(ws), ws)
    assert reg.pl_mean.item() > 0 and "pl_mean" in reg.state_dict()
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    buf.seek(0)
    fresh = PathLengthRegularizer()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.pl_mean.item() == reg.pl_mean.item()
    assert "decay=0.01" in repr(fresh)
    fresh.reset_parameters()
    assert fresh.pl_mean.item() == 0


# ----------------------------------------------------------------------------------------------------------------
# torch.compile, backends, bad input

@pytest.mark.parametrize("name", BACKENDS)
def test_torch_compile_fullgraph_traces_through_the_ops(name):
    torch._dynamo.reset()

    def f(g, real, fake, eps):
        return grad_norm_penalty(g * 2, 1.0) + interpolate(real, fake, eps).square().mean()
    g = torch.randn(3, 5, 7, requires_grad=True)
    real, fake, eps = torch.randn(3, 4), torch.randn(3, 4), torch.rand(3)
    with gankern.use_backend(name):
        got = torch.compile(f, fullgraph=True, backend="aot_eager")(g, real, fake, eps)
        (dg,) = torch.autograd.grad(got, g)
        want = f(g, real, fake, eps)
    (dw,) = torch.autograd.grad(want, g)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(dg, dw)


def test_forced_cuda_backend_says_why():
    with gankern.use_backend("cuda"), pytest.raises(gankern.BackendUnavailable, match="Triton kernels only"):
        grad_norm_penalty(torch.randn(2, 3))


def _bad_calls(n, m):
    """name -> a call with one bad input (batch sizes n != m)."""
    D = SmallD(res=4, width=2)
    x = torch.randn(n, 3, 4, 4, requires_grad=True)
    ws = torch.randn(n, 2, 3, requires_grad=True)
    img = torch.randn(n, 3, 4, 4)
    return {
        "norm_not_tensor": lambda: grad_norm_penalty([1.0, 2.0]),
        "norm_int": lambda: grad_norm_penalty(torch.ones(n, 3, dtype=torch.int64)),
        "norm_center": lambda: grad_norm_penalty(torch.randn(n, 3), -1.0),
        "norm_empty": lambda: grad_norm_penalty(torch.randn(n, 0)),
        "r1_batch": lambda: r1_penalty(torch.randn(m, 1, requires_grad=True), x),
        "r1_no_grad_x": lambda: r1_penalty(D(x), x.detach()),
        "r1_unused_x": lambda: r1_penalty(torch.randn(n, 1, requires_grad=True), x),
        "gp_shapes": lambda: gradient_penalty(D, torch.randn(n, 3, 4, 4), torch.randn(m, 3, 4, 4)),
        "gp_dtypes": lambda: gradient_penalty(D, torch.randn(n, 3, 4, 4), torch.randn(n, 3, 4, 4).double()),
        "gp_not_callable": lambda: gradient_penalty(3, torch.randn(n, 3, 4, 4), torch.randn(n, 3, 4, 4)),
        "gp_center": lambda: gradient_penalty(D, torch.randn(n, 3, 4, 4), torch.randn(n, 3, 4, 4), float("nan")),
        "gp_generator": lambda: gradient_penalty(D, torch.randn(n, 3, 4, 4), torch.randn(n, 3, 4, 4), generator=7),
        "gp_d_ignores_x": lambda: gradient_penalty(lambda x: torch.ones(n, 1, requires_grad=True),
                                                   torch.randn(n, 3, 4, 4), torch.randn(n, 3, 4, 4)),
        "lerp_eps": lambda: interpolate(torch.randn(n, 3), torch.randn(n, 3), torch.rand(m)),
        "lerp_eps_not_tensor": lambda: interpolate(torch.randn(n, 3), torch.randn(n, 3), 0.5),
        "lerp_dtypes": lambda: interpolate(torch.randn(n, 3), torch.randn(n, 3).half(), torch.rand(n)),
        "pl_mean_not_tensor": lambda: path_length_penalty(img, ws, 0.0),
        "pl_batch": lambda: path_length_penalty(torch.randn(m, 3, 4, 4), ws, torch.zeros(())),
        "pl_ws_no_grad": lambda: path_length_penalty(img, ws.detach(), torch.zeros(())),
        "pl_mean_shape": lambda: path_length_penalty(img, ws, torch.zeros(1)),
        "pl_decay": lambda: path_length_penalty(img, ws, torch.zeros(()), 1.5),
        "pl_noise": lambda: path_length_penalty(img, ws, torch.zeros(()), noise=torch.randn(n, 3, 4, 5)),
        "pl_img_rank": lambda: path_length_penalty(torch.randn(n, 48), ws, torch.zeros(())),
        "pl_module_decay": lambda: PathLengthRegularizer(decay=-0.1),
    }


BAD_CASES = sorted(_bad_calls(2, 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(BAD_CASES), n=st.integers(1, 4), extra=st.integers(1, 3),
       name=st.sampled_from(BACKENDS))
def test_bad_input_raises_clear_error_before_any_launch(case, n, extra, name, monkeypatch):
    def no_launch(*a, **k):
        raise AssertionError("a kernel was launched for bad input")
    # a D that ignores its input is only seen after D ran on the interpolates (one lerp launch)
    with monkeypatch.context() as mp:
        for fn in ("rowdot_partial", "norm_finish", "norm_backward") + (() if case == "gp_d_ignores_x" else ("lerp",)):
            mp.setattr(kernels, fn, no_launch)
        call = _bad_calls(n, n + extra)[case]
        with gankern.use_backend(name), pytest.raises((TypeError, ValueError)) as err:
            call()
    msg = str(err.value)
    assert any(word in msg for word in ("must", "does not", "is empty", "but")), msg


def test_benchmark_d_is_gpu_md_r1_discriminator_and_fused_equals_torch():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_penalty.py")
    spec = importlib.util.spec_from_file_location("bench_penalty", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    full = mod.R1Discriminator()
    assert [c.out_channels for c in full.convs] == [128, 128, 256, 256, 512, 512, 512, 512]
    assert full.head.in_features == 512 * 4 * 4
    torch.manual_seed(8)
    eager = mod.R1Discriminator((4, 8, 8, 8), 16, fused=False)
    for b in eager.biases:
        nn.init.normal_(b)
    ours = mod.R1Discriminator((4, 8, 8, 8), 16, fused=True)
    ours.load_state_dict(eager.state_dict())
    assert ours.fused
    real, fake = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    with gankern.use_backend("triton"):
        got = mod.d_step(ours, real, fake, r1_penalty, None)
    want = mod.d_step(eager, real, fake, mod._torch_r1, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_close_lists(param_grads(ours), param_grads(eager), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu, on the device machine; bench/gpu_check.sh runs these)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_kernels_match_reference(dtype):
    for shape, cl in (((33, 3, 67, 65), True), ((5, 100003), False), ((1, 1), False)):
        g = torch.randn(shape, device="cuda").to(dtype)
        if cl:
            g = g.contiguous(memory_format=torch.channels_last)
        g.requires_grad_(True)
        real, fake = torch.randn(shape, device="cuda").to(dtype), torch.randn(shape, device="cuda").to(dtype)
        eps = torch.rand(shape[0], device="cuda")
        poison_allocator(8 * g.numel() * 4)
        with gankern.use_backend("triton"):
            loss = grad_norm_penalty(g, 1.0)
            x_hat = interpolate(real, fake, eps.to(dtype))
        (dg,) = torch.autograd.grad(loss, g)
        gw = g.detach().double().requires_grad_(True)
        want = oracle_norm_penalty(gw, 1.0)
        (dw,) = torch.autograd.grad(want, gw)
        # the norms: fp32 sums of squares over up to 100003 elements of g (in the dtype); the loss in fp32; dg and
        # x_hat computed in fp32 and stored in the dtype: one rounding (two allowed)
        rtol = gpu_rtol(dtype, roundings=2, acc_len=math.prod(shape[1:]))
        assert_close_scaled(loss, want, rtol, "loss")
        assert_close_scaled(dg, dw, rtol, "dg")
        e = eps.to(dtype).double().view([-1] + [1] * (len(shape) - 1))
        assert_close_scaled(x_hat, e * real.double() + (1 - e) * fake.double(), rtol, "x_hat")


@pytest.mark.gpu
@pytest.mark.parametrize("name", BACKENDS)
def test_gpu_r1_and_gp_with_fused_d_match_torch(name):
    torch.manual_seed(9)
    D = SmallD(res=16, width=8, fused=True).cuda()
    D64 = SmallD(res=16, width=8, fused=False).cuda().double()
    D64.load_state_dict(D.state_dict())
    x = torch.randn(16, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_(True)
    fake = torch.randn_like(x)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), gankern.use_backend(name):
        r1 = r1_penalty(D(x), x)
        gp = gradient_penalty(D, x.detach(), fake, 1.0, generator=torch.Generator("cuda").manual_seed(1))
    x64 = x.detach().double().requires_grad_(True)
    eps = torch.rand(16, generator=torch.Generator("cuda").manual_seed(1), device="cuda").double()
    torch.testing.assert_close(r1.double(), oracle_r1(D64, x64), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gp.double(), oracle_gp(D64, x64.detach(), fake.double(), 1.0, eps), rtol=1e-4, atol=1e-6)
