"""Modulation family: bias_act, adain and modulated_conv2d on every backend against their reference twins (values,
first and second-order gradients), torch.compile, and bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gankern
import gankern._sim as sim
from gankern.nn.modulation import AdaIN
from gankern.ops.modulation import (ACTIVATIONS, adain, adain_ref, bias_act, bias_act_ref, demodulation_coefficients,
                                    modulated_conv2d, modulated_conv2d_ref, noise_bias_act)

from conftest import CPU_BACKENDS, assert_close_scaled, backend_ctx, gpu_rtol, poison_allocator

KERNELS = ("triton", "cuda")


# Each kernel backend once; the simulated CUDA kernels under the forward and the reverse thread order.
KERNEL_RUNS = [("triton", 0), ("cuda", 0), ("cuda", 1)]


@pytest.fixture(params=KERNEL_RUNS, ids=["triton", "cuda-fwd", "cuda-rev"])
def kernel(request):
    """(backend, schedule): forces nothing; sets the order of the simulated CUDA threads for the test."""
    name, schedule = request.param
    sim.set_schedule(schedule, 0)
    yield name
    sim.set_schedule(0, 0)


def grads_up_to_second_order(fn, x, b, w, u, v):
    """y = fn(x, b); first-order grads of <y, w> w.r.t. x, b; second-order grads of <gx, u> + <gb, v> w.r.t. x, b
    and w (the last one exercises the d(dy) path of the backward)."""
    x, b, w = (t.detach().clone().requires_grad_(True) for t in (x, b, w))
    y = fn(x, b)
    gx, gb = torch.autograd.grad((y * w).sum(), (x, b), create_graph=True)
    loss2 = (gx * u).sum() + (gb * v).sum()
    second = torch.autograd.grad(loss2, (x, b, w), allow_unused=True, materialize_grads=True)
    return (y, gx, gb) + tuple(second)


# ----------------------------------------------------------------------------------------------------------------
# bias_act

# (shape, dim, channels_last): odd sizes, bias along the first / middle / last dim, a channels_last 4-d input.
BIAS_ACT_CASES = [((3, 5, 7), 1, False), ((37,), 0, False), ((2, 3, 5, 4), 1, True), ((4, 3, 6), 2, False)]
# (alpha, gain, clamp): table defaults, and explicit values with a clamp that cuts some outputs.
BIAS_ACT_PARAMS = [(None, None, None), (0.3, 0.7, 0.4)]


@pytest.mark.parametrize("params", BIAS_ACT_PARAMS, ids=["defaults", "alpha-gain-clamp"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_matches_reference_to_second_order(kernel, act, params):
    name = kernel
    alpha, gain, clamp = params
    for shape, dim, channels_last in BIAS_ACT_CASES:
        x = torch.randn(shape) * 2
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        b = torch.randn(shape[dim])
        w, u, v = torch.randn(shape), torch.randn(shape), torch.randn(shape[dim])

        with backend_ctx(name):  # the backward passes launch kernels too
            got = grads_up_to_second_order(lambda x, b: bias_act(x, b, dim, act, alpha, gain, clamp), x, b, w, u, v)
        want = grads_up_to_second_order(lambda x, b: bias_act_ref(x, b, dim, act, alpha, gain, clamp), x, b, w, u, v)
        for label, g, r in zip(("y", "dx", "db", "d2x", "d2b", "d2w"), got, want):
            torch.testing.assert_close(g, r, rtol=2e-5, atol=2e-5, msg=lambda m: f"{label} ({shape}): {m}")
        if channels_last:
            assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_bias_act_triton_64bit_offsets(monkeypatch):
    """The path for tensors of 2^31 elements and more, run on a small one."""
    from gankern.kernels import modulation as k
    monkeypatch.setattr(k, "INDEX32_LIMIT", 0)
    x, b, dy = torch.randn(3, 7, 5), torch.randn(7), torch.randn(3, 7, 5)
    x.requires_grad_(True)
    with backend_ctx("triton"):
        y = bias_act(x, b, act="swish")
        (gx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().clone().requires_grad_(True)
    yr = bias_act_ref(xr, b, act="swish")
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(gx, torch.autograd.grad(yr, xr, dy)[0])


@pytest.mark.parametrize("name", KERNELS)
def test_bias_act_half_precision_and_no_bias(name):
    x = torch.randn(3, 17, 5).half()
    b = torch.randn(17).half()
    with backend_ctx(name):
        y = bias_act(x, b, act="swish", clamp=1.5)
        y_nob = bias_act(x, act="tanh")
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), bias_act_ref(x.float(), b.float(), act="swish", clamp=1.5),
                               rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(y_nob.float(), torch.tanh(x.float()), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", KERNELS)
def test_bias_act_non_dense_input_and_empty_batch(name):
    x = torch.randn(4, 6, 5)[:, ::2]  # strided view: gets a dense copy
    b = torch.randn(3)
    with backend_ctx(name):
        y = bias_act(x, b, act="elu", gain=1.3)
        empty = bias_act(torch.randn(0, 3, 5), b)
    torch.testing.assert_close(y, bias_act_ref(x, b, act="elu", gain=1.3), rtol=1e-5, atol=1e-6)
    assert empty.shape == (0, 3, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", KERNELS)
def test_bias_act_vector_and_misaligned_paths(name, dtype):
    """x, dy and the outputs 16-byte aligned: the CUDA kernel's vector path (channels changing inside a vector) and
    its scalar tail; the same values one element past an aligned address: the scalar path throughout."""
    n = 2 * 3 * 11 * 5  # not a multiple of 8
    for offset in (0, 1):
        x = torch.randn(n + 8, dtype=dtype)[offset:offset + n].view(2, 3, 11, 5)
        dy = torch.randn(n + 8, dtype=dtype)[offset:offset + n].view(2, 3, 11, 5)
        assert (x.data_ptr() % 16 != 0) == bool(offset)
        b = torch.randn(11, dtype=dtype)
        xg = x.clone().requires_grad_(True)
        with backend_ctx(name):
            y = bias_act(x, b, 2, "lrelu", clamp=1.0)
            (gx,) = torch.autograd.grad(bias_act(xg, b, 2, "swish"), xg, dy)
        xr = x.float().requires_grad_(True)
        (gr,) = torch.autograd.grad(bias_act_ref(xr, b.float(), 2, "swish"), xr, dy.float())
        tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(y.float(), bias_act_ref(x.float(), b.float(), 2, "lrelu", clamp=1.0), **tol)
        torch.testing.assert_close(gx.float(), gr, **tol)


def test_bias_act_reference_meaning():
    """The table's defaults: act linear (StyleGAN2-ADA's default); lrelu slope 0.2 with gain sqrt(2); clamp after
    the gain."""
    x, b = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    v = x + b[:, None]
    torch.testing.assert_close(bias_act_ref(x, b), v)
    torch.testing.assert_close(bias_act_ref(x, b, act="lrelu"), F.leaky_relu(v, 0.2) * math.sqrt(2))
    torch.testing.assert_close(bias_act_ref(x, b, act="relu", clamp=0.5), (F.relu(v) * math.sqrt(2)).clamp(max=0.5))
    torch.testing.assert_close(bias_act_ref(x, None, act="linear"), x)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_reference_gradcheck_float64(act):
    x = (torch.randn(3, 4, 5, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    # Keep pre-activations away from kinks (0 for relu-like, the clamp boundary) so finite differences are valid.
    with torch.no_grad():
        v = x + b[:, None]
        x += torch.where(v.abs() < 0.1, 0.3 * torch.sign(v + 1e-3), torch.zeros_like(v))

    def fn(x, b):
        return bias_act_ref(x, b, act=act, gain=1.1)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("name", KERNELS)
def test_bias_act_third_order_says_not_implemented(name):
    x = torch.randn(2, 3, requires_grad=True)
    with backend_ctx(name):
        y = bias_act(x, torch.randn(3), act="tanh")
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.sum(), x, create_graph=True)
        with pytest.raises(NotImplementedError, match="third-order"):
            torch.autograd.grad(ggx.sum(), x)


def test_bias_act_torch_compile_fullgraph():
    torch._dynamo.reset()
    x = torch.randn(3, 6, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    with backend_ctx("triton"):
        compiled = torch.compile(lambda x, b: bias_act(x, b, act="swish", clamp=1.0), fullgraph=True,
                                 backend="aot_eager")
        y = compiled(x, b)
        y.square().sum().backward()
    x2, b2 = x.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    y2 = bias_act_ref(x2, b2, act="swish", clamp=1.0)
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.grad, b2.grad, rtol=1e-5, atol=1e-6)


def test_bias_act_forced_backend_that_cannot_run_says_why():
    with backend_ctx("triton"):
        with pytest.raises(gankern.BackendUnavailable, match="take torch.float32"):
            bias_act(torch.randn(2, 3, dtype=torch.float64))
    with gankern.use_backend("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="needs CUDA tensors"):
            bias_act(torch.randn(2, 3))


BIAS_ACT_BAD = {
    "unknown act": dict(act="gelu2"),
    "b wrong length": dict(b="short"),
    "b 2-d": dict(b="2d"),
    "bad dim": dict(dim=5),
    "negative clamp": dict(clamp=-1.0),
    "nan gain": dict(gain=float("nan")),
    "string alpha": dict(alpha="0.2"),
    "int x": dict(x="int"),
    "x not a tensor": dict(x="list"),
    "b on another dtype family": dict(b="int"),
    "b on another device": dict(b="meta"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(BIAS_ACT_BAD)), n=st.integers(1, 4), c=st.integers(2, 6),
       name=st.sampled_from(CPU_BACKENDS))
def test_bias_act_bad_input_raises_before_launch(case, n, c, name):
    x, b = torch.randn(n, c, 3), torch.randn(c)
    kwargs = dict(BIAS_ACT_BAD[case])
    x = {"int": x.long(), "list": x.tolist()}.get(kwargs.pop("x", None), x)
    b = {"short": b[:-1], "2d": b[:, None], "int": b.long(), "meta": b.to("meta")}.get(kwargs.pop("b", None), b)
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            bias_act(x, b, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# adain

# (N, C, H, W): odd sizes, a plane of 2 pixels, more channels than one tile holds.
ADAIN_SHAPES = [(2, 3, 5, 7), (3, 5, 1, 2), (1, 37, 3, 3)]


@pytest.fixture(params=["one-pass", "two-pass"])
def adain_tiles(request, monkeypatch):
    """Run the one-pass kernels, or the two-pass ones with small tiles so that the pixel loops take several steps."""
    from gankern.kernels import modulation as k
    if request.param == "two-pass":
        monkeypatch.setattr(k, "ADAIN_ONE_PASS_MAX_HW", 1)
        monkeypatch.setattr(k, "ADAIN_TWO_PASS_TILE", {False: (2, 4), True: (4, 2)})
    return request.param


def adain_grads(fn, x, gamma, beta, w, u):
    x, gamma, beta, w = (t.detach().clone().requires_grad_(True) for t in (x, gamma, beta, w))
    y = fn(x, gamma, beta)
    gx, ggamma, gbeta = torch.autograd.grad((y * w).sum(), (x, gamma, beta), create_graph=True)
    loss2 = (gx * u).sum() + ggamma.square().sum() + (gbeta * gamma).sum()
    second = torch.autograd.grad(loss2, (x, gamma, w), allow_unused=True, materialize_grads=True)
    return (y, gx, ggamma, gbeta) + tuple(second)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_adain_matches_reference_to_second_order(adain_tiles, channels_last):
    for shape in ADAIN_SHAPES:
        x = torch.randn(shape) * 3 + 10  # a mean far from 0: the two-pass statistics must not cancel
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        gamma, beta = torch.randn(shape[:2]), torch.randn(shape[:2])
        w, u = torch.randn(shape), torch.randn(shape)
        with backend_ctx("triton"):
            got = adain_grads(adain, x, gamma, beta, w, u)
        want = adain_grads(adain_ref, x, gamma, beta, w, u)
        truth = adain_grads(adain_ref, *(t.double() for t in (x, gamma, beta, w, u)))
        for label, g, r, t in zip(("y", "dx", "dgamma", "dbeta", "d2x", "d2gamma", "d2w"), got, want, truth):
            # against the fp64 truth: fp32 rounding is amplified by 1 / std on planes of 2 pixels with |mean| >>
            # std (the fp32 reference itself errs by ~1e-3 in the second order there, and the kernel and the
            # reference then differ by more than 1e-4 for some draws); the kernel may err by 1e-4 more than twice
            # the fp32 reference's own error
            ref_err = float((r.detach().double() - t.detach()).abs().max())
            torch.testing.assert_close(g.double(), t, rtol=1e-4, atol=1e-4 + 2 * ref_err,
                                       msg=lambda m: f"{label} ({shape}): {m}")
        assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_adain_half_precision_and_empty_batch():
    x = torch.randn(2, 6, 9, 5).half()
    gamma, beta = torch.randn(2, 6), torch.randn(2, 6)
    with backend_ctx("triton"):
        y = adain(x, gamma, beta)
        empty = adain(torch.randn(0, 6, 3, 3), torch.randn(0, 6), torch.randn(0, 6))
    assert y.dtype == torch.float16 and empty.shape == (0, 6, 3, 3)
    torch.testing.assert_close(y.float(), adain_ref(x.float(), gamma, beta), rtol=2e-3, atol=2e-3)


def test_adain_reference_meaning_and_gradcheck_float64():
    x = torch.randn(2, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    mean = x.mean((2, 3), keepdim=True)
    var = x.var((2, 3), unbiased=False, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(adain_ref(x, gamma, beta), want)
    assert torch.autograd.gradcheck(adain_ref, (x, gamma, beta))
    assert torch.autograd.gradgradcheck(adain_ref, (x, gamma, beta))


def test_adain_module_styles_and_compile():
    torch._dynamo.reset()
    torch.manual_seed(0)
    mod = AdaIN(6, 8)
    x, w = torch.randn(3, 6, 5, 4), torch.randn(3, 8)
    gamma, beta = mod.affine(w).chunk(2, dim=1)
    torch.testing.assert_close(mod(x, w), adain_ref(x, gamma, beta))
    with torch.no_grad():  # fresh parameters: the style starts as gamma = 1, beta = 0
        torch.testing.assert_close(mod.affine.bias, torch.cat([torch.ones(6), torch.zeros(6)]))
    with backend_ctx("triton"):
        compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x, w), adain_ref(x, gamma, beta), rtol=1e-4, atol=1e-4)
    assert "num_features=6" in repr(mod)


def test_adain_forced_cuda_says_why():
    x = torch.randn(1, 2, 3, 3)
    with backend_ctx("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="Triton kernels only"):
            adain(x, torch.randn(1, 2), torch.randn(1, 2))


ADAIN_BAD = {
    "N mismatch": lambda x, g, b: (x, g[:-1], b[:-1]),
    "C mismatch": lambda x, g, b: (x, g[:, :-1], b),
    "3-d x": lambda x, g, b: (x[0], g, b),
    "1-d gamma": lambda x, g, b: (x, g[0], b),
    "one pixel": lambda x, g, b: (x[:, :, :1, :1], g, b),
    "int x": lambda x, g, b: (x.long(), g, b),
    "beta not a tensor": lambda x, g, b: (x, g, 1.0),
    "gamma on another device": lambda x, g, b: (x, g.to("meta"), b),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(ADAIN_BAD)), n=st.integers(2, 3), c=st.integers(2, 5),
       name=st.sampled_from(("ref", "triton")), eps_bad=st.booleans())
def test_adain_bad_input_raises_before_launch(case, n, c, name, eps_bad):
    x, g, b = torch.randn(n, c, 3, 4), torch.randn(n, c), torch.randn(n, c)
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            adain(*ADAIN_BAD[case](x, g, b))
        if eps_bad:
            with pytest.raises(ValueError, match="eps"):
                adain(x, g, b, eps=0.0)


# ----------------------------------------------------------------------------------------------------------------
# modulated_conv2d

# kwargs of modulated_conv2d: StyleGAN2's 3x3 layer (demodulation, bias, noise, lrelu), its upsampling layer (true
# convolution), a downsampling one, a 1x1 toRGB-style layer without demodulation with a clamp, and an even kernel
# with explicit asymmetric padding.
MODCONV_CASES = {
    "3x3": dict(k=3, demodulate=True, act="lrelu", noise=True, bias=True),
    "up": dict(k=3, up=2, flip_weight=False, act="lrelu", noise=True, bias=True),
    "down": dict(k=3, down=2, act="swish", bias=True),
    "1x1": dict(k=1, demodulate=False, act="linear", bias=True, clamp=0.5),
    "2x2": dict(k=2, padding=[1, 0, 0, 1], act="tanh", noise=True, per_channel_strength=True),
}


def modconv_inputs(case, N=2, I=3, O=5, H=7, W=6, channels_last=False):
    kw = dict(MODCONV_CASES[case])
    k = kw.pop("k")
    kw.setdefault("padding", k // 2)  # the same size (S2A's default padding is 0)
    x = torch.randn(N, I, H, W)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, styles = torch.randn(O, I, k, k), torch.randn(N, I) + 1
    if kw.pop("bias", False):
        kw["bias"] = torch.randn(O)
    if kw.pop("noise", False):
        from gankern.ops.resample import conv2d_resample_size, setup_filter
        f = setup_filter([1, 3, 3, 1]) if kw.get("up", 1) > 1 or kw.get("down", 1) > 1 else None
        Ho, Wo = conv2d_resample_size(H, W, k, k, f, kw.get("up", 1), kw.get("down", 1),
                                      kw["padding"])
        kw["noise"] = torch.randn(N, 1, Ho, Wo)
        kw["noise_strength"] = torch.randn(O) if kw.pop("per_channel_strength", False) else torch.tensor(0.7)
    return x, weight, styles, kw


def modconv_grads(fn, x, weight, styles, kw, w_out):
    """Values, first-order grads w.r.t. (x, weight, styles, bias, strength), and a path-length-like second order:
    the gradient w.r.t. styles, differentiated again w.r.t. (weight, x)."""
    x, weight, styles = (t.detach().clone().requires_grad_(True) for t in (x, weight, styles))
    kw = dict(kw)
    extra = [k for k in ("bias", "noise_strength") if k in kw]
    for k in extra:
        kw[k] = kw[k].detach().clone().requires_grad_(True)
    y = fn(x, weight, styles, **kw)
    ins = (x, weight, styles) + tuple(kw[k] for k in extra)
    first = torch.autograd.grad((y * w_out).sum(), ins, create_graph=True)
    second = torch.autograd.grad(first[2].square().sum() + first[0].square().sum(), (weight, x), allow_unused=True,
                                 materialize_grads=True)
    return (y,) + first + second


@pytest.mark.parametrize("case", sorted(MODCONV_CASES))
def test_modulated_conv2d_matches_reference_to_second_order(case):
    x, weight, styles, kw = modconv_inputs(case, channels_last=case == "3x3")
    y_shape = modulated_conv2d_ref(x, weight, styles, **kw).shape
    w_out = torch.randn(y_shape)
    want = modconv_grads(modulated_conv2d_ref, x, weight, styles, kw, w_out)
    with backend_ctx("triton"):
        got = modconv_grads(modulated_conv2d, x, weight, styles, kw, w_out)
    labels = ("y", "dx", "dweight", "dstyles", "dbias/dstrength", "dstrength", "d2weight", "d2x")
    for label, g, r in zip(labels, got, want):
        torch.testing.assert_close(g, r, rtol=2e-4, atol=2e-4, msg=lambda m: f"{label}: {m}")


@pytest.fixture(params=["one-slice", "default", "slice-per-block"])
def demod_slices(request, monkeypatch):
    """The demodulation kernel over I in one slice (d written directly), the default split, or one slice per block
    of I (the partial sums added by the second kernel)."""
    from gankern.kernels import modulation as k
    monkeypatch.setattr(k, "DEMOD_MIN_PROGRAMS", {"one-slice": 1, "default": k.DEMOD_MIN_PROGRAMS,
                                                  "slice-per-block": 10 ** 6}[request.param])
    return request.param


def test_demodulation_grid_fills_132_sms():
    """StyleGAN2's N = 32, I = O = 512: 32 tiles of d, so I is split until the grid fills the 132 SMs of an H100 /
    H200 (about two programs per SM); slices are whole blocks of I and cover it; large batches need no split."""
    from gankern.kernels import modulation as k
    slices, per = k.demod_split(32, 512, 512)
    tiles = math.ceil(32 / k.DEMOD_BLOCK_N) * math.ceil(512 / k.DEMOD_BLOCK_O)
    assert tiles == 32 and tiles * slices >= 132 and per % k.DEMOD_BLOCK_I == 0 and (slices - 1) * per < 512 <= \
        slices * per
    assert k.demod_split(4096, 512, 512)[0] == 1


@pytest.mark.parametrize("k", [1, 3])
def test_demodulation_kernel_matches_reference_to_second_order(k, demod_slices):
    weight, styles = torch.randn(37, 45, k, k), torch.randn(19, 45)  # more than one tile of N, O and I

    def grads(fn):
        w, s = weight.clone().requires_grad_(True), styles.clone().requires_grad_(True)
        d = fn(w, s)
        gw, gs = torch.autograd.grad((d * torch.linspace(-1, 1, d.numel()).view(d.shape)).sum(), (w, s),
                                     create_graph=True)
        return (d, gw, gs) + torch.autograd.grad(gw.square().sum() + gs.square().sum(), (w, s))

    with backend_ctx("triton"):
        got = grads(demodulation_coefficients)
    want = grads(lambda w, s: (w[None] * s[:, None, :, None, None]).square().sum((2, 3, 4)).add(1e-8).rsqrt())
    for label, g, r in zip(("d", "dw", "ds", "d2w", "d2s"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5, msg=lambda m: f"{label}: {m}")
    weight[3, 5, 0, 0] = float("inf")  # an Inf weight: NaN for output channel 3 (see the op), in every slicing
    styles[7, 44] = float("nan")       # a NaN style: NaN for sample 7
    with backend_ctx("triton"):
        d = demodulation_coefficients(weight, styles)
    with backend_ctx("ref"):
        torch.testing.assert_close(d, demodulation_coefficients(weight, styles), rtol=1e-4, atol=1e-5,
                                   equal_nan=True)
    assert d[:, 3].isnan().all() and d[7].isnan().all() and d.isfinite().sum() == 18 * 36


def test_modulated_conv2d_half_precision():
    x, weight, styles, kw = modconv_inputs("2x2")
    half = {k: (v.half() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    with backend_ctx("triton"):
        y = modulated_conv2d(x.half(), weight.half(), styles.half(), **half)
    assert y.dtype == torch.float16
    want = modulated_conv2d_ref(x.half().float(), weight.half().float(), styles.half().float(),
                                **{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in half.items()})
    torch.testing.assert_close(y.float(), want, rtol=1e-2, atol=1e-2)


def test_modulated_conv2d_reference_is_per_sample_convolution():
    """The grouped formulation equals a loop of ordinary convolutions with per-sample demodulated weights."""
    x, weight, styles = torch.randn(3, 4, 6, 5, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64), \
        torch.randn(3, 4, dtype=torch.float64)
    got = modulated_conv2d_ref(x, weight, styles, padding=1)
    for n in range(3):
        w = weight * styles[n][None, :, None, None]
        w = w / torch.sqrt((w ** 2).sum((1, 2, 3), keepdim=True) + 1e-8)
        torch.testing.assert_close(got[n:n + 1], F.conv2d(x[n:n + 1], w, padding=1))
    torch.testing.assert_close(demodulation_coefficients(weight, styles),
                               (weight[None] * styles[:, None, :, None, None]).square().sum((2, 3, 4)).add(1e-8)
                               .rsqrt().float())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("name,value", [("weight", math.inf), ("weight", -math.inf), ("styles", math.inf)])
@pytest.mark.parametrize("io", [(1, 1), (2, 3)], ids=["depthwise", "grouped"])
def test_modulated_conv2d_inf_weight_with_padding_is_nan_where_reference_puts_it(name, value, io):
    """An Inf weight or style makes its output channels NaN everywhere, padded border included (Inf * d = Inf * 0
    taps meet the zero padding). Regression (test_op_properties' nan_and_inf, N = 2, I = O = 1, padding 1): the
    reference's grouped convolution with one input and one output channel per group is torch's depthwise kernel,
    which skips padded taps, so the reference left the border finite where the Triton path put NaN."""
    i, o = io
    x, weight, styles = torch.randn(2, i, 3, 3), torch.randn(o, i, 3, 3), torch.randn(2, i) + 1.5
    bad = {"weight": weight, "styles": styles}[name].clone()
    bad.view(-1)[0] = value
    args = {"x": x, "weight": weight, "styles": styles, name: bad}
    want = modulated_conv2d_ref(**args, padding=1, bias=torch.zeros(o))
    nan_channels = want.isnan().flatten(2).all(2)
    assert nan_channels.any() and torch.equal(want.isnan().flatten(2).any(2), nan_channels)
    with backend_ctx("triton"):
        got = modulated_conv2d(**args, padding=1, bias=torch.zeros(o))
    assert torch.equal(got.isnan(), want.isnan())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, equal_nan=True)


def test_modulated_conv2d_reference_gradcheck_float64():
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, weight, styles):
        return modulated_conv2d_ref(x, weight, styles, act="softplus")

    assert torch.autograd.gradcheck(fn, (x, weight, styles))
    assert torch.autograd.gradgradcheck(fn, (x, weight, styles))


def test_modulated_conv2d_shared_noise_float_strength_and_empty_batch():
    x, weight, styles, kw = modconv_inputs("3x3")
    kw["noise"] = kw["noise"][:1]
    kw["noise_strength"] = 0.3
    with backend_ctx("triton"):
        y = modulated_conv2d(x, weight, styles, **kw)
        empty = modulated_conv2d(x[:0], weight, styles[:0], **{k: v for k, v in kw.items() if k != "noise"
                                                                and k != "noise_strength"})
    torch.testing.assert_close(y, modulated_conv2d_ref(x, weight, styles, **kw), rtol=1e-4, atol=1e-4)
    assert empty.shape == (0, 5, 7, 6)


def test_modulated_conv2d_torch_compile_fullgraph():
    torch._dynamo.reset()
    x, weight, styles, kw = modconv_inputs("3x3")
    with backend_ctx("triton"):
        compiled = torch.compile(lambda x, w, s: modulated_conv2d(x, w, s, **kw), fullgraph=True,
                                 backend="aot_eager")
        y = compiled(x, weight, styles)
    torch.testing.assert_close(y, modulated_conv2d_ref(x, weight, styles, **kw), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strength", ["scalar", "per-channel"])
def test_noise_bias_act_matches_reference_to_second_order(strength):
    x = torch.randn(2, 5, 4, 7).to(memory_format=torch.channels_last)
    noise, b = torch.randn(1, 1, 4, 7), torch.randn(5)
    s0 = torch.randn(5) if strength == "per-channel" else torch.tensor(0.4)

    def grads(fn):
        xx, bb, ss = (t.clone().requires_grad_(True) for t in (x, b, s0))
        y = fn(xx, noise, ss, bb, act="softplus", gain=1.2)
        g = torch.autograd.grad(y.square().sum(), (xx, bb, ss), create_graph=True)
        return (y,) + g + torch.autograd.grad(g[0].square().sum() + g[2].sum(), (xx, ss))

    with backend_ctx("triton"):
        got = grads(noise_bias_act)
    with backend_ctx("ref"):
        want = grads(noise_bias_act)
    want_y = bias_act_ref(x + noise * s0.reshape(1, -1, 1, 1), b, act="softplus", gain=1.2)
    torch.testing.assert_close(want[0], want_y)
    for label, g, r in zip(("y", "dx", "db", "dstrength", "d2x", "d2strength"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4, msg=lambda m: f"{label}: {m}")


def _opcheck_cases():
    from gankern.ops import modulation as m
    x, dy = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5, requires_grad=True)
    b, gamma, beta = torch.randn(3, requires_grad=True), torch.randn(2, 3), torch.randn(2, 3)
    d = torch.rand(2, 3) + 0.5
    noise, strength = torch.randn(2, 1, 4, 5), torch.tensor(0.3, requires_grad=True)
    act = ("swish", 0.0, 1.4, 0.8, "triton")
    with torch.no_grad():
        _, mean, rstd = m._adain_op(x, gamma, beta, 1e-5, "triton")
    return {
        "bias_act": (m._bias_act_op, (x, b, 1) + act),
        "bias_act_grad": (m._bias_act_grad_op, (dy, x, b, 1) + act),
        "bias_act_grad2": (m._bias_act_grad2_op, (dy, dy, x, b, 1) + act),  # no third order: no autograd check
        "adain": (m._adain_op, (x, gamma, beta, 1e-5, "triton")),
        "adain_backward": (m._adain_backward_op, (x, gamma, mean, rstd, dy, 1e-5, "triton")),
        "demodulation": (m._demodulation_op, (torch.randn(5, 3, 3, 3, requires_grad=True), gamma, 1e-8, "triton")),
        "modconv_epilogue": (m._epilogue_op, (x, d, b, noise, strength) + act),
        "modconv_epilogue_backward": (m._epilogue_backward_op, (x, d, b, noise, strength, dy) + act),
    }


@pytest.mark.parametrize("op", ["bias_act", "bias_act_grad", "bias_act_grad2", "adain", "adain_backward",
                                "demodulation", "modconv_epilogue", "modconv_epilogue_backward"])
def test_custom_op_registrations_pass_opcheck(op):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration and AOT dispatch of each
    gankern:: custom op, run through the Triton kernels."""
    fn, args = _opcheck_cases()[op]
    utils = ("test_schema", "test_faketensor") if op == "bias_act_grad2" else \
        ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(fn.op, args, test_utils=utils)


NOISE_BAD = {
    "no noise": dict(noise=None),
    "noise of other size": dict(noise="wrong"),
    "noise requires grad": dict(noise="grad"),
    "strength of 2 channels": dict(noise_strength="two"),
    "strength a string": dict(noise_strength="0.1"),
    "strength NaN": dict(noise_strength="nan"),
    "strength Inf": dict(noise_strength="inf"),
    "b wrong length": dict(b="short"),
    "3-d x": dict(x="3d"),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(NOISE_BAD)), c=st.integers(3, 5), name=st.sampled_from(("ref", "triton")))
def test_noise_bias_act_bad_input_raises_before_launch(case, c, name):
    x, noise, b = torch.randn(2, c, 4, 5), torch.randn(2, 1, 4, 5), torch.randn(c)
    kw = dict(NOISE_BAD[case])
    x = {"3d": x[0]}.get(kw.pop("x", None), x)
    noise = {"wrong": torch.randn(2, 1, 5, 4), "grad": noise.clone().requires_grad_(True), None: None}.get(
        kw.pop("noise", "keep"), noise)
    strength = {"two": torch.ones(2), "0.1": "0.1", "nan": math.nan, "inf": math.inf}.get(
        kw.pop("noise_strength", None), 0.5)
    b = {"short": b[:-1]}.get(kw.pop("b", None), b)
    with backend_ctx(name):
        noise_bias_act(torch.randn(2, c, 4, 5), torch.randn(2, 1, 4, 5), 0.5, torch.randn(c))  # the valid call runs
        with pytest.raises((ValueError, TypeError)):
            noise_bias_act(x, noise, strength, b)


DEMOD_BAD = {
    "I mismatch": lambda w, s: (w, s[:, :-1]),
    "3-d weight": lambda w, s: (w[0], s),
    "1-d styles": lambda w, s: (w, s[0]),
    "int weight": lambda w, s: (w.long(), s),
    "styles on another device": lambda w, s: (w, s.to("meta")),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(DEMOD_BAD)), i=st.integers(2, 5), name=st.sampled_from(("ref", "triton")))
def test_demodulation_bad_input_raises_before_launch(case, i, name):
    w, s = torch.randn(3, i, 3, 3), torch.randn(2, i)
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            demodulation_coefficients(*DEMOD_BAD[case](w, s))
        with pytest.raises(ValueError, match="eps"):
            demodulation_coefficients(w, s, eps=-1.0)


MODCONV_BAD = {
    "N mismatch": dict(styles="short"),
    "I mismatch": dict(weight="wrong I"),
    "3-d weight": dict(weight="3d"),
    "up 0": dict(up=0),
    "down 1.5": dict(down=1.5),
    "noise wrong size": dict(noise="wrong"),
    "strength without noise": dict(noise_strength=0.5),
    "bias wrong length": dict(bias="short"),
    "unknown act": dict(act="mish2"),
    "int x": dict(x="int"),
    "zero eps": dict(eps=0.0),
    "strength of 2 channels": dict(noise="ok", noise_strength="two"),
    "styles on another device": dict(styles="meta"),
    "NaN strength": dict(noise="ok", noise_strength=float("nan")),
    "noise needing grad with a strength": dict(noise="grad", noise_strength=0.5),
    "noise of 3 dims": dict(noise="3d"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(MODCONV_BAD)), n=st.integers(2, 3), i=st.integers(1, 4),
       name=st.sampled_from(("ref", "triton")))
def test_modulated_conv2d_bad_input_raises_before_launch(case, n, i, name):
    x, weight, styles = torch.randn(n, i, 5, 5), torch.randn(3, i, 3, 3), torch.randn(n, i)
    kw = dict(MODCONV_BAD[case])
    kw.setdefault("padding", 1)
    x = {"int": x.long()}.get(kw.pop("x", None), x)
    styles = {"short": styles[:-1], "meta": styles.to("meta")}.get(kw.pop("styles", None), styles)
    weight = {"wrong I": torch.randn(3, i + 1, 3, 3), "3d": weight[0]}.get(kw.pop("weight", None), weight)
    kw["bias"] = {"short": torch.randn(2)}.get(kw.pop("bias", None), torch.randn(3))
    kw["noise"] = {"wrong": torch.randn(n, 1, 4, 5), "ok": torch.randn(n, 1, 5, 5), "3d": torch.randn(1, 5, 5),
                   "grad": torch.randn(n, 1, 5, 5, requires_grad=True)}.get(kw.get("noise"))
    if kw.get("noise_strength") == "two":
        kw["noise_strength"] = torch.ones(2)
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            modulated_conv2d(x, weight, styles, **kw)


# ----------------------------------------------------------------------------------------------------------------
# StyleGAN2-ADA's signatures, defaults, noise forms and fp16 numerics (issue 17). The oracle is S2A's formulation as
# read in its training/networks.py: per-sample weights w * s, demodulated, one grouped convolution, then + noise.


def s2a_modconv64(x, weight, styles, noise=None, padding=0, demodulate=True):
    N = x.shape[0]
    w = weight[None].double() * styles.double()[:, None, :, None, None]  # [N, O, I, kh, kw]
    if demodulate:
        w = w * (w.square().sum([2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    y = F.conv2d(x.double().reshape(1, -1, *x.shape[2:]), w.reshape(-1, *weight.shape[1:]), padding=padding,
                 groups=N)
    y = y.reshape(N, -1, *y.shape[2:])
    return y if noise is None else y + noise.double()


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_bias_act_takes_s2a_defaults_and_impl(name):
    """S2A's ToRGB calls bias_act(x, b, clamp=...) with no act: linear, gain 1."""
    x, b = torch.randn(2, 3, 4, 5) * 3, torch.randn(3)
    with backend_ctx(name):
        torch.testing.assert_close(bias_act(x, b), x + b[:, None, None])
        torch.testing.assert_close(bias_act(x, b, clamp=1.0), (x + b[:, None, None]).clamp(-1, 1))
        for impl in ("cuda", "ref"):
            torch.testing.assert_close(bias_act(x, b, 1, "lrelu", None, None, None, impl),
                                       F.leaky_relu(x + b[:, None, None], 0.2) * math.sqrt(2))
        with pytest.raises(ValueError, match="impl"):
            bias_act(x, b, impl="plugin")
    assert bias_act_ref(x, b).equal(x + b[:, None, None])


@pytest.mark.parametrize("name", ["ref", "triton"])
@pytest.mark.parametrize("form", ["random", "const", "none"])
def test_modulated_conv2d_s2a_positional_call_and_noise_forms(name, form):
    """S2A's call: modulated_conv2d(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
    flip_weight, fused_modconv), its noise already times a learnable strength (so it requires grad), (N, 1, H, W)
    for noise_mode="random", (H, W) for "const"."""
    N, I, O, H, W = 3, 4, 5, 6, 7
    x, weight, styles = torch.randn(N, I, H, W), torch.randn(O, I, 3, 3), torch.randn(N, I) + 1
    strength = torch.tensor(0.3, requires_grad=True)
    base = {"random": torch.randn(N, 1, H, W), "const": torch.randn(H, W), "none": None}[form]
    for fused in (True, False):
        with backend_ctx(name):
            noise = None if base is None else base * strength
            y = modulated_conv2d(x, weight, styles, noise, 1, 1, 1, None, True, True, fused)
        want = s2a_modconv64(x, weight, styles, None if noise is None else noise.detach(), padding=1)
        torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)
        if noise is not None:  # the strength learns: d sum(y * g) / d strength = sum(g * base) over channels
            g = torch.randn(y.shape)
            (got,) = torch.autograd.grad((y * g).sum(), strength)
            torch.testing.assert_close(got, (g * base.expand(N, 1, H, W)).sum(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ref", "triton"])
def test_modulated_conv2d_fp16_large_activations_and_styles_stay_finite_and_right(name):
    """S2A's fp16 layers: |x| up to 256 and styles in the hundreds overflow fp16 without S2A's pre-normalization
    (inf/NaN on the kernels, zeros on the reference before the fix); with it the fp16 result is the fp64 one to
    fp16 accuracy (demodulation makes the output O(|x|))."""
    g = torch.Generator().manual_seed(3)
    N, I, O, H = 2, 16, 8, 6
    x = (torch.rand(N, I, H, H, generator=g) * 512 - 256).half()
    weight = torch.randn(O, I, 3, 3, generator=g)
    styles = torch.randn(N, I, generator=g) * 300
    with backend_ctx(name):
        y = modulated_conv2d(x, weight, styles, padding=1)
    assert y.dtype == torch.float16 and bool(torch.isfinite(y).all())
    want = s2a_modconv64(x, weight, styles, padding=1)
    scale = want.abs().max()
    torch.testing.assert_close(y.double() / scale, want / scale, rtol=0, atol=5e-3)


# ----------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu, on the device machine; bench/gpu_check.sh runs these): float64 reference on the same inputs

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _assert_close_f64(got, want, rtol):
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close_scaled(g, w, rtol, f"output {i}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("act", ["lrelu", "swish", "tanh"])
def test_gpu_bias_act_matches_reference(name, dtype, act):
    shape = (3, 67, 9, 11)
    x = (torch.randn(shape, device="cuda") * 2).to(dtype).to(memory_format=torch.channels_last)
    b, w, u, v = (torch.randn(s, device="cuda").to(dtype) for s in (67, shape, shape, 67))
    poison_allocator(4 * x.numel() * 8)
    with gankern.use_backend(name):
        got = grads_up_to_second_order(lambda x, b: bias_act(x, b, act=act, clamp=1.5), x, b, w, u, v)
    want = grads_up_to_second_order(lambda x, b: bias_act_ref(x, b, act=act, clamp=1.5),
                                    *(t.double() for t in (x, b, w, u, v)))
    # y and dx: one rounding of the output; db: the sum over N * H * W = 297 elements of dx (rounded) in fp32,
    # rounded; second order: u + v broadcast (rounded), then the kernel's output (rounded), d2b summed again: at most
    # 4 roundings to the dtype and fp32 sums of 297 terms
    _assert_close_f64(got, want, gpu_rtol(dtype, roundings=4, acc_len=3 * 9 * 11))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("hw", [(32, 32), (67, 45)], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gpu_adain_matches_reference(dtype, hw, channels_last):
    x = (torch.randn(3, 37, *hw, device="cuda") * 2 + 3).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    gamma, beta = torch.randn(3, 37, device="cuda"), torch.randn(3, 37, device="cuda")
    w, u = torch.randn_like(x), torch.randn_like(x)
    poison_allocator(4 * x.numel() * 8)
    with gankern.use_backend("triton"):
        got = adain_grads(adain, x, gamma, beta, w, u)
    want = adain_grads(adain_ref, *(t.double() for t in (x, gamma, beta, w, u)))
    # statistics in fp32 over H * W <= 3015 elements (two passes: no cancellation of the mean); y and dx rounded
    # once; dgamma / dbeta sum dx-like terms over H * W in fp32 and the second order goes through them and the
    # rounded first-order outputs again: at most 4 roundings to the dtype and fp32 sums of H * W terms
    _assert_close_f64(got, want, gpu_rtol(dtype, roundings=4, acc_len=hw[0] * hw[1]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("case", sorted(MODCONV_CASES))
def test_gpu_modulated_conv2d_matches_reference(dtype, case):
    torch.backends.cudnn.allow_tf32 = False
    x, weight, styles, kw = modconv_inputs(case, N=3, I=19, O=21, H=17, W=13, channels_last=case == "3x3")
    cast = {k: v.cuda() for k, v in kw.items() if isinstance(v, torch.Tensor)}
    kw_dev = {**kw, **{k: v.to(dtype) for k, v in cast.items()}}
    x, weight, styles = x.cuda().to(dtype), weight.cuda().to(dtype), styles.cuda().to(dtype)
    w_out = torch.randn(modulated_conv2d_ref(x.float(), weight.float(), styles.float(),
                                             **{k: (v.float() if isinstance(v, torch.Tensor) else v)
                                                for k, v in kw_dev.items()}).shape, device="cuda").to(dtype)
    poison_allocator(4 * x.numel() * 64)
    with gankern.use_backend("triton"):
        got = modconv_grads(modulated_conv2d, x, weight, styles, kw_dev, w_out)
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw_dev.items()}
    want = modconv_grads(modulated_conv2d_ref, x.double(), weight.double(), styles.double(), kw64, w_out.double())
    # TF32 off; in fp16 / bf16 each stage stores its result in the dtype: styled weights, demodulation coefficients,
    # the convolution (fp32 sums of I * k * k = 171 products), the epilogue (noise, bias, activation): 4 roundings
    # for y; the first-order grads go back through the same stages (8); the second order (grads of the squared
    # first-order grads) through them once more (16). The activation's kinks (lrelu at 0, the clamp) are decided on
    # the rounded pre-activation here and on the exact one in the reference: a flipped decision changes one of the
    # >= 171 terms of a gradient sum by up to its size, budgeted as 8 more roundings for the grads. Longest fp32 sums:
    # a style gradient, over O * k * k of per-sample weight gradients that sum over H * W (x4 for up); bounded by
    # 4 * N * O * H * W terms
    n = 4 * 3 * 21 * 17 * 13
    _assert_close_f64(got[:1], want[:1], gpu_rtol(dtype, roundings=4, acc_len=n))
    _assert_close_f64(got[1:-2], want[1:-2], gpu_rtol(dtype, roundings=8 + 8, acc_len=n))
    _assert_close_f64(got[-2:], want[-2:], gpu_rtol(dtype, roundings=16 + 8, acc_len=n))


@pytest.mark.gpu
def test_gpu_modulated_conv2d_compiles_with_inductor():
    x, weight, styles, kw = modconv_inputs("3x3")
    kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    x, weight, styles = x.cuda(), weight.cuda(), styles.cuda()
    with gankern.use_backend("triton"):
        compiled = torch.compile(lambda x, w, s: modulated_conv2d(x, w, s, **kw), fullgraph=True)
        got = compiled(x, weight, styles)
    torch.testing.assert_close(got, modulated_conv2d_ref(x, weight, styles, **kw), rtol=1e-3, atol=1e-3)
