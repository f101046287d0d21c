"""Resample family: upfirdn2d (and its helpers, conv2d_resample) on every backend against the reference twin and a
loop oracle, gradients to second order, torch.compile, bad input."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gankern
from gankern.ops.resample import (conv2d_resample, conv2d_resample_size, downsample2d, filter2d, setup_filter,
                                  upfirdn2d, upfirdn2d_ref, upsample2d)

from conftest import assert_close_scaled, backend_ctx, gpu_rtol


def loop_oracle(x, f, up, down, pad, flip_filter, gain):
    """out[oy, ox] = gain * sum_k fconv[k] X(o * down + k - p0), straight from the definition (f as a true
    convolution kernel unless flip_filter), in float64 loops."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    f2 = torch.outer(f, f) if f.dim() == 1 else f
    f2 = f2.double() * gain
    taps = f2 if flip_filter else f2.flip([0, 1])
    fh, fw = taps.shape
    N, C, H, W = x.shape
    Ho = (H * upy + py0 + py1 - fh) // downy + 1
    Wo = (W * upx + px0 + px1 - fw) // downx + 1
    out = torch.zeros(N, C, Ho, Wo, dtype=torch.float64)
    xd = x.double()
    for oy, ox, ky, kx in itertools.product(range(Ho), range(Wo), range(fh), range(fw)):
        qy, qx = oy * downy + ky - py0, ox * downx + kx - px0
        if qy % upy == 0 and qx % upx == 0 and 0 <= qy // upy < H and 0 <= qx // upx < W:
            out[:, :, oy, ox] += taps[ky, kx] * xd[:, :, qy // upy, qx // upx]
    return out


# (up, down, padding, filter shape, flip_filter, gain): upsampling, downsampling, both, anisotropic factors,
# negative padding (crop), 1-D (separable) and 2-D filters of odd and even sizes.
CASES = [
    ((2, 2), (1, 1), (2, 1, 2, 1), (4,), False, 4.0),
    ((1, 1), (2, 2), (1, 1, 1, 1), (4,), False, 1.0),
    ((1, 1), (1, 1), (1, 1, 1, 1), (3, 3), True, 1.5),
    ((3, 2), (2, 1), (0, 2, -1, 3), (3, 2), False, 1.0),
    ((2, 2), (3, 3), (-1, 2, 2, -1), (5,), True, 0.5),
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False, 2.0),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_reference_matches_loop_oracle(case):
    up, down, pad, fshape, flip, gain = CASES[case]
    x, f = torch.randn(2, 3, 5, 4, dtype=torch.float64), torch.randn(fshape, dtype=torch.float64)
    torch.testing.assert_close(upfirdn2d_ref(x, f, up, down, pad, flip, gain),
                               loop_oracle(x, f, up, down, pad, flip, gain))


def grads_to_second_order(fn, x, w, u):
    x, w = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    y = fn(x)
    (gx,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad((gx * u).sum(), w)
    return y, gx, gw


@pytest.mark.parametrize("case,channels_last", [(c, False) for c in range(len(CASES))] + [(0, True), (3, True)])
def test_triton_matches_reference_with_gradients(case, channels_last):
    up, down, pad, fshape, flip, gain = CASES[case]
    x, f = torch.randn(1, 2, 7, 5), torch.randn(fshape)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    want_y = upfirdn2d_ref(x, f, up, down, pad, flip, gain)
    w, u = torch.randn(want_y.shape), torch.randn(x.shape)
    with backend_ctx("triton"):
        got = grads_to_second_order(lambda x: upfirdn2d(x, f, up, down, pad, flip, gain), x, w, u)
    want = grads_to_second_order(lambda x: upfirdn2d_ref(x, f, up, down, pad, flip, gain), x, w, u)
    for label, g, r in zip(("y", "dx", "d2w"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5, msg=lambda m: f"{label}: {m}")


# Polyphase kernel sweep: (up, down, padding, filter shape, flip_filter, x layout): up 1..4 (1..4 output phases
# per axis, some with a gcd with down), down 1..3, asymmetric and negative pads, odd and even filter lengths,
# separable (1-D) and non-separable 2-D filters, contiguous / channels_last / sliced / expanded x.
POLYPHASE = [
    ((2, 2), (1, 1), (2, 1, 2, 1), (4, 4), False, "contiguous"),
    ((1, 1), (2, 2), (1, 1, 1, 1), (4, 4), True, "channels_last"),
    ((3, 3), (1, 1), (1, 3, 2, 0), (5,), False, "sliced"),
    ((4, 4), (1, 1), (-2, 3, 1, -1), (3, 5), True, "expanded"),
    ((4, 2), (3, 2), (0, 1, 2, 2), (7, 2), False, "contiguous"),
    ((2, 3), (3, 1), (-1, 2, 1, 0), (3,), True, "channels_last"),
    ((1, 4), (2, 3), (3, -1, 0, 4), (5, 6), False, "sliced"),
    ((3, 1), (2, 2), (2, 2, -1, 1), (1, 7), False, "expanded"),
    ((4, 3), (2, 3), (1, 0, 0, 2), (4,), True, "contiguous"),
    ((1, 1), (3, 3), (-1, 2, 2, -2), (5, 5), False, "channels_last"),
    ((3, 2), (3, 2), (1, 1, 1, 1), (2, 3), False, "sliced"),
    ((2, 1), (1, 2), (0, 0, 3, 1), (9,), True, "expanded"),
]


def make_x(layout: str, shape, dtype=torch.float32) -> torch.Tensor:
    """A random x of ``shape`` in one of the layouts the kernel meets: strides of every kind."""
    N, C, H, W = shape
    if layout == "channels_last":
        return torch.randn(shape, dtype=dtype).to(memory_format=torch.channels_last)
    if layout == "sliced":  # a non-contiguous view: every other row and column, channels reversed
        return torch.randn(N, C, 2 * H, 2 * W + 1, dtype=dtype)[:, :, ::2, 1::2].flip(1)
    if layout == "expanded":  # stride 0 over the batch and the channels
        return torch.randn(1, 1, H, W, dtype=dtype).expand(N, C, H, W)
    return torch.randn(shape, dtype=dtype)


def launch_poisoned(x, f, up, down, pad, flip, gain):
    """The kernel launcher on an output buffer filled with NaN, so that an output no phase writes fails."""
    from gankern.kernels import resample as k
    from gankern.ops.resample import _out_size
    out = torch.full((x.shape[0], x.shape[1], *_out_size(x.shape[2], x.shape[3], f, up, down, pad)), float("nan"),
                     dtype=x.dtype)
    k.upfirdn2d(x, f.contiguous(), out, up, down, (pad[0], pad[2]), flip, gain)
    return out


@pytest.mark.parametrize("case", range(len(POLYPHASE)))
def test_polyphase_kernel_matches_reference(case):
    up, down, pad, fshape, flip, layout = POLYPHASE[case]
    x, f, gain = make_x(layout, (2, 2, 9, 11)), torch.randn(fshape), float(torch.rand(()) + 0.5)
    with backend_ctx("triton"):
        got = upfirdn2d(x, f, up, down, pad, flip, gain)
    torch.testing.assert_close(got, upfirdn2d_ref(x, f, up, down, pad, flip, gain), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(launch_poisoned(x, f, up, down, pad, flip, gain), got, rtol=0, atol=0)


@pytest.mark.parametrize("case", [0, 2, 4, 5, 7, 9])
def test_polyphase_gradients_to_second_order(case):
    up, down, pad, fshape, flip, layout = POLYPHASE[case]
    x, f = make_x(layout, (1, 2, 7, 6)), torch.randn(fshape)
    want_y = upfirdn2d_ref(x, f, up, down, pad, flip, 1.5)
    w, u = torch.randn(want_y.shape), torch.randn(x.shape)
    with backend_ctx("triton"):
        got = grads_to_second_order(lambda x: upfirdn2d(x, f, up, down, pad, flip, 1.5), x, w, u)
    want = grads_to_second_order(lambda x: upfirdn2d_ref(x, f, up, down, pad, flip, 1.5), x, w, u)
    for label, g, r in zip(("y", "dx", "d2w"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5, msg=lambda m: f"{label}: {m}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("case", [0, 1, 3, 5, 6])
def test_polyphase_nan_inf_where_the_reference_has_them(case):
    """NaN / +-Inf at random places of x (the border included) and a zero tap in f (0 * Inf = NaN in the reference's
    convolution too): the kernel has NaN, +Inf and -Inf exactly where the reference has them."""
    up, down, pad, fshape, flip, layout = POLYPHASE[case]
    x, f = torch.randn(2, 2, 8, 9), torch.randn(fshape)
    f.view(-1)[torch.randint(f.numel(), ())] = 0.0
    flat = x.view(-1)
    idx = torch.randperm(flat.numel())[:9]
    flat[idx[:3]], flat[idx[3:6]], flat[idx[6:]] = float("nan"), float("inf"), -float("inf")
    flat[torch.tensor([0, flat.numel() - 1])] = float("inf")  # corners: reached only through the padding logic
    x = make_x(layout, x.shape).copy_(x) if layout != "expanded" else x
    want = upfirdn2d_ref(x, f, up, down, pad, flip, 1.0)
    with backend_ctx("triton"):
        got = upfirdn2d(x, f, up, down, pad, flip, 1.0)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isposinf(), want.isposinf())
    assert torch.equal(got.isneginf(), want.isneginf()) and want.isnan().any()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_int64_offsets_when_a_plane_does_not_fit_int32(monkeypatch):
    """Planes whose offsets pass the int32 limit run the kernels' int64 (WIDE) indexing (the tile kernel and the
    row-walking one of down 2): the limit lowered here so that a small plane takes that path, results unchanged."""
    from gankern.kernels import resample as k
    launches = []
    monkeypatch.setattr(k, "INT32_MAX", 10)
    monkeypatch.setattr(gankern.ops.resample, "_PLANS", {})  # launch plans made under the real limit
    for kernel in (k.upfirdn2d_kernel, k.upfirdn2d_down_kernel):
        monkeypatch.setattr(kernel, "run",
                            lambda *a, run=kernel.run, **kw: launches.append(kw["WIDE"]) or run(*a, **kw))
    x, f = make_x("channels_last", (1, 3, 6, 5)), torch.randn(4)
    with backend_ctx("triton"):
        got = [upsample2d(x, f, 2), downsample2d(x, f, 2)]
    assert launches == [True, True]
    torch.testing.assert_close(got[0], upsample2d(x, f, 2, impl="ref"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], downsample2d(x, f, 2, impl="ref"), rtol=1e-5, atol=1e-5)


def test_polyphase_several_tiles_per_plane():
    """Planes wider and taller than one program's tile (several tiles along x and y, partial ones at the edges);
    the row-walking kernel of down 2 over several row blocks, column strips and a partial block of channels."""
    f = torch.randn(4, 4)
    x, x2 = torch.randn(1, 1, 37, 140), make_x("sliced", (1, 3, 68, 258))
    with backend_ctx("triton"):
        got = [upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1]), upfirdn2d(x2, f, down=2, padding=[1, 2, 1, 0])]
    want = [upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1]), upfirdn2d_ref(x2, f, down=2, padding=[1, 2, 1, 0])]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_triton_fp16_large_tile_and_helpers():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 1, 19, 45).half()
    with backend_ctx("triton"):
        got = [upsample2d(x, f), downsample2d(x, f), filter2d(x, f), upsample2d(x, setup_filter([1, 3, 3, 1],
                                                                                                separable=True))]
    want = [upsample2d(x.float(), f), downsample2d(x.float(), f), filter2d(x.float(), f), upsample2d(x.float(), f)]
    assert [tuple(g.shape) for g in got] == [(1, 1, 38, 90), (1, 1, 9, 22), (1, 1, 19, 45), (1, 1, 38, 90)]
    for g, w in zip(got, want):
        assert g.dtype == torch.float16
        torch.testing.assert_close(g.float(), w, rtol=2e-3, atol=2e-3)


def test_helpers_keep_the_mean_of_a_constant_image():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 1, 8, 8), 3.0)
    assert torch.allclose(upsample2d(x, f)[..., 2:-2, 2:-2], torch.tensor(3.0))
    assert torch.allclose(downsample2d(x, f)[..., 1:-1, 1:-1], torch.tensor(3.0))


def test_reference_gradcheck_float64():
    f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(x):
        return upfirdn2d_ref(x, f, up=2, down=1, padding=1)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_conv2d_resample_matches_explicit_composition(up, down):
    f = setup_filter([1, 3, 3, 1])
    x, w = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3)
    got = conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=(up == 1))
    inner = slice(None)
    if up > 1:  # zero-insertion upsampling, filter, then a 'same' true convolution: equal away from the border,
        # where the transposed convolution sees the filter's tail that the zero padding of conv2d does not
        want = F.conv2d(upsample2d(x, f, up), w.flip([2, 3]), padding=1)
        inner = slice(1, -1)
    elif down > 1:  # StyleGAN2-ADA's grid: pad the blur by (fw - down + 1) // 2 + 1, then a strided convolution
        want = F.conv2d(upfirdn2d_ref(x, f, padding=2), w, stride=2)
    else:
        want = F.conv2d(x, w, padding=1)
    assert got.shape == want.shape
    torch.testing.assert_close(got[..., inner, inner], want[..., inner, inner], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ref", "triton"])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_conv2d_resample_flip_filter_and_impl_as_s2a(name, up, down):
    """S2A's conv2d_resample(..., flip_filter): the same as flipping an asymmetric filter; impl="ref" (S2A's
    argument of the upfirdn2d family) runs the reference twin whatever backend is forced."""
    f = torch.tensor([[1.0, 2.0, 0.5], [0.2, 3.0, 1.0]])
    x, w = torch.randn(2, 3, 7, 6), torch.randn(4, 3, 3, 3)
    with backend_ctx(name):
        got = conv2d_resample(x, w, f, up, down, padding=1, flip_filter=True)
        want = conv2d_resample(x, w, f.flip([0, 1]), up, down, padding=1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for fn in (upsample2d, downsample2d, filter2d):
            torch.testing.assert_close(fn(x, f, impl="ref"), fn(x, f, impl="cuda"), rtol=1e-5, atol=1e-5)


def test_filter_edited_in_place_is_checked_again():
    """The finite check of a filter runs once per version of its contents, not once per tensor."""
    x, f = torch.randn(1, 2, 5, 5), setup_filter([1, 3, 3, 1])
    upfirdn2d(x, f)
    f[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        upfirdn2d(x, f)
    with torch.inference_mode():  # inference tensors have no version counter: checked on every call
        f = setup_filter([1, 3, 3, 1])
        upfirdn2d(x, f)
        f[0, 0] = float("inf")
        with pytest.raises(ValueError, match="non-finite"):
            upfirdn2d(x, f)


def test_conv2d_resample_size_predicts_the_output():
    f = setup_filter([1, 3, 3, 1])
    for (up, down), k, pad in itertools.product([(1, 1), (2, 1), (1, 2), (2, 2)], [1, 2, 3], [0, 1, [1, 0, 2, 1]]):
        y = conv2d_resample(torch.randn(1, 2, 9, 8), torch.randn(3, 2, k, k), f, up, down, pad)
        assert tuple(y.shape[2:]) == conv2d_resample_size(9, 8, k, k, f, up, down, pad), (up, down, k, pad)


def test_torch_compile_fullgraph_and_empty_batch():
    torch._dynamo.reset()
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    with backend_ctx("triton"):
        compiled = torch.compile(lambda x: upsample2d(x, f), fullgraph=True, backend="aot_eager")
        y = compiled(x)
        y.square().sum().backward()
        empty = upsample2d(torch.randn(0, 3, 4, 4), f)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = upsample2d(x2, f)
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert empty.shape == (0, 3, 8, 8)


def test_custom_op_registration_passes_opcheck():
    """torch.library.opcheck of gankern::upfirdn2d (schema, fake, autograd registration, AOT dispatch)."""
    from gankern.ops.resample import _upfirdn2d_op
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    torch.library.opcheck(_upfirdn2d_op.op, (x, torch.ones(4), [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0, "triton"))


def test_forced_cuda_says_why():
    with backend_ctx("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="Triton kernel only"):
            upfirdn2d(torch.randn(1, 1, 4, 4), torch.ones(2))


BAD = {
    "3-d filter": dict(f=torch.ones(2, 2, 2)),
    "empty filter": dict(f=torch.ones(0)),
    "int filter": dict(f=torch.ones(3, dtype=torch.int64)),
    "filter requires grad": dict(f=torch.ones(3, requires_grad=True)),
    "up 0": dict(up=0),
    "down -1": dict(down=-1),
    "up triple": dict(up=[1, 2, 3]),
    "padding 3 values": dict(padding=[1, 2, 3]),
    "padding float": dict(padding=1.5),
    "empty output": dict(padding=-8),
    "3-d x": dict(x="3d"),
    "int x": dict(x="int"),
    "filter on another device": dict(f=torch.ones(3, device="meta")),
    "NaN gain": dict(gain=float("nan")),
    "Inf gain": dict(gain=float("inf")),
    "NaN filter tap": dict(f=torch.tensor([1.0, float("nan"), 1.0])),
    "Inf filter tap": dict(f=torch.tensor([[1.0, float("inf")], [1.0, 1.0]])),
    "impl unknown": dict(impl="plugin"),
}


HELPER_BAD = {
    "upsample2d up 0": lambda x, f: upsample2d(x, f, up=0),
    "downsample2d padding 3 values": lambda x, f: downsample2d(x, f, padding=[1, 2, 3]),
    "filter2d 3-d filter": lambda x, f: filter2d(x, torch.ones(2, 2, 2)),
    "conv2d_resample groups mismatch": lambda x, f: conv2d_resample(x, torch.randn(4, 2, 3, 3), f, groups=2),
    "conv2d_resample 3-d weight": lambda x, f: conv2d_resample(x, torch.randn(4, 3, 3), f),
    "conv2d_resample down 0": lambda x, f: conv2d_resample(x, torch.randn(4, 3, 3, 3), f, down=0),
    "setup_filter 3-d": lambda x, f: setup_filter(torch.ones(2, 2, 2)),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(HELPER_BAD)), h=st.integers(4, 7), name=st.sampled_from(("ref", "triton")))
def test_helpers_bad_input_raises_before_launch(case, h, name):
    x, f = torch.randn(2, 3, h, h), setup_filter([1, 3, 3, 1])
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            HELPER_BAD[case](x, f)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(BAD)), h=st.integers(2, 6), name=st.sampled_from(("ref", "triton")))
def test_bad_input_raises_before_launch(case, h, name):
    x = torch.randn(2, 3, h, h)
    kw = dict(BAD[case])
    x = {"3d": x[0], "int": x.long()}.get(kw.pop("x", None), x)
    f = kw.pop("f", torch.ones(3))
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            upfirdn2d(x, f, **kw)


# ----------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu, on the device machine; bench/gpu_check.sh runs these)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gpu_triton_matches_reference(case, dtype):
    up, down, pad, fshape, flip, gain = CASES[case]
    x = torch.randn(3, 5, 67, 45, device="cuda").to(dtype).to(memory_format=torch.channels_last)
    f = torch.randn(fshape, device="cuda")
    want_y = upfirdn2d_ref(x.double(), f.double(), up, down, pad, flip, gain)
    w, u = torch.randn(want_y.shape, device="cuda").to(dtype), torch.randn(x.shape, device="cuda").to(dtype)
    torch.empty(want_y.numel() * 8, device="cuda").fill_(float("nan"))  # poison the allocator's free memory
    with gankern.use_backend("triton"):
        got = grads_to_second_order(lambda x: upfirdn2d(x, f, up, down, pad, flip, gain), x, w, u)
    want = grads_to_second_order(lambda x: upfirdn2d_ref(x, f.double(), up, down, pad, flip, gain), x.double(),
                                 w.double(), u.double())
    # each output (y, dx, and the second order, which filters u like y) is one fp32 sum over the taps (<= 25) of
    # inputs in the dtype times the fp32 filter, stored in the dtype: one rounding, two allowed for an intermediate
    # of a separable (two-pass) implementation
    taps = math.prod(fshape) * (1 if len(fshape) == 2 else math.prod(fshape))
    for i, (g, r) in enumerate(zip(got, want)):
        assert_close_scaled(g, r, gpu_rtol(dtype, roundings=2, acc_len=taps), f"output {i}")
