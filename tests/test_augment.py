"""Augment family: affine_grid_sample and color_transform on the Triton kernels (interpreter on the CPU) against
their reference twins (and the twins against loop oracles), in every layout of every tensor argument, with NaN / Inf,
gradients to second order, torch.compile / opcheck, and bad input."""
import itertools
import math

import pytest
import torch

import gankern
from gankern.ops import augment as A

from conftest import assert_close_scaled, backend_ctx, gpu_rtol
from test_resample import grads_to_second_order  # (y, dx of <y, w>, d/dw of <dx, u>), as R1 takes them

FP32_TOL = dict(rtol=2e-5, atol=2e-5)


def fresh_seed() -> int:
    return int(torch.randint(1 << 30, ()))


def random_theta(N, generator=None, dtype=torch.float32):
    """Rotations, scalings, shears and shifts that map most outputs inside the input and some outside."""
    t = torch.randn(N, 2, 3, generator=generator, dtype=torch.float64) * 0.5
    t[:, :, :2] += torch.eye(2, dtype=torch.float64)
    return t.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# the references against loop oracles


def sample_oracle(x, theta, Ho, Wo):
    """F.affine_grid + F.grid_sample (bilinear, zeros, align_corners=False) from their definitions, float64 loops."""
    N, C, Hi, Wi = x.shape
    out = torch.zeros(N, C, Ho, Wo, dtype=torch.float64)
    xd, td = x.double(), theta.double()
    for n, i, j in itertools.product(range(N), range(Ho), range(Wo)):
        xn, yn = (2 * j + 1) / Wo - 1, (2 * i + 1) / Ho - 1
        gx = td[n, 0, 0] * xn + td[n, 0, 1] * yn + td[n, 0, 2]
        gy = td[n, 1, 0] * xn + td[n, 1, 1] * yn + td[n, 1, 2]
        ix, iy = ((gx + 1) * Wi - 1) / 2, ((gy + 1) * Hi - 1) / 2
        x0, y0 = math.floor(ix), math.floor(iy)
        for a, b in itertools.product((0, 1), (0, 1)):
            yy, xx = y0 + a, x0 + b
            if 0 <= yy < Hi and 0 <= xx < Wi:
                w = (1 - abs(ix - xx)) * (1 - abs(iy - yy))
                out[n, :, i, j] += w * xd[n, :, yy, xx]
    return out


def test_affine_grid_sample_reference_matches_loop_oracle():
    x, theta = torch.randn(2, 3, 5, 7, dtype=torch.float64), random_theta(2, dtype=torch.float64)
    torch.testing.assert_close(A.affine_grid_sample_ref(x, theta, (4, 6)), sample_oracle(x, theta, 4, 6))


def test_color_transform_reference_matches_definition():
    x, M = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)
    want = torch.einsum("nrk,nkhw->nrhw", M[:, :3, :3], x) + M[:, :3, 3, None, None]
    torch.testing.assert_close(A.color_transform_ref(x, M), want)
    g = torch.randn(2, 1, 4, 5, dtype=torch.float64)  # luma: the RGB transform of (g, g, g), averaged over RGB
    want = (torch.einsum("nrk,nhw->nrhw", M[:, :3, :3], g[:, 0]) + M[:, :3, 3, None, None]).mean(1, keepdim=True)
    torch.testing.assert_close(A.color_transform_ref(g, M), want)


# ----------------------------------------------------------------------------------------------------------------
# layouts


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The values of t (or, for 'expanded', t's first slice broadcast over dim 0) in a layout of that kind."""
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    if kind == "strided":  # a non-contiguous view: stride 2 along the last dim
        buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype, device=t.device)
        buf[..., ::2] = t
        return buf[..., ::2]
    if kind == "cropped":  # rows not at one stride from each other: a crop of wider rows
        buf = torch.full((*t.shape[:-1], t.shape[-1] + 3), float("nan"), dtype=t.dtype, device=t.device)
        buf[..., 1:-2] = t
        return buf[..., 1:-2]
    if kind == "expanded":
        return t[:1].expand(t.shape)
    return t.clone()


LAYOUTS = ("contiguous", "channels_last", "strided", "cropped", "expanded")


def _value_and_grad(backend, fn, x, dy, *args):
    """(fn(x, *args), its gradient w.r.t. x for the incoming gradient dy), x in its own layout."""
    xr = x.detach().requires_grad_(True)
    with backend_ctx(backend):
        y = fn(xr, *args)
        (dx,) = torch.autograd.grad(y, xr, dy)
    return y.detach(), dx


def launch_poisoned(fn, out_shape, *args, dtype=torch.float32):
    """A launcher on an output buffer filled with NaN, so that an element no program writes fails."""
    out = torch.full(out_shape, float("nan"), dtype=dtype)
    fn(*args, out)
    return out


@pytest.mark.parametrize("x_layout,theta_layout", [(a, b) for a in LAYOUTS for b in ("contiguous", "strided",
                                                                                          "expanded")])
def test_affine_grid_sample_matches_reference_in_every_layout(x_layout, theta_layout):
    gen = torch.Generator().manual_seed(fresh_seed())
    N, C = int(torch.randint(1, 4, (), generator=gen)), int(torch.randint(1, 5, (), generator=gen))
    Hi, Wi, Ho, Wo = (int(v) for v in torch.randint(1, 20, (4,), generator=gen))
    x = layout(torch.randn(N, C, Hi, Wi, generator=gen), x_layout)
    theta = layout(random_theta(N, gen), theta_layout)
    dy = layout(torch.randn(N, C, Ho, Wo, generator=gen), theta_layout)  # the incoming gradient in a layout too
    want, want_dx = _value_and_grad("ref", A.affine_grid_sample, x.double(), dy.double(), theta.double(), (Ho, Wo))
    got, got_dx = _value_and_grad("triton", A.affine_grid_sample, x, dy, theta, (Ho, Wo))
    torch.testing.assert_close(got.double(), want, **FP32_TOL)
    torch.testing.assert_close(got_dx.double(), want_dx, **FP32_TOL)
    from gankern.kernels import augment as k
    poisoned = launch_poisoned(k.affine_grid_sample, (N, C, Ho, Wo), x, theta.float())
    torch.testing.assert_close(poisoned, got, rtol=0, atol=0)


@pytest.mark.parametrize("x_layout,m_layout", [("contiguous", "contiguous"), ("channels_last", "strided"),
                                               ("strided", "expanded"), ("expanded", "contiguous"),
                                               ("expanded", "expanded"), ("contiguous", "strided"),
                                               ("cropped", "contiguous"), ("contiguous", "cropped")])
@pytest.mark.parametrize("C", [3, 1])
def test_color_transform_matches_reference_in_every_layout(C, x_layout, m_layout):
    gen = torch.Generator().manual_seed(fresh_seed())
    N = int(torch.randint(1, 4, (), generator=gen))
    H, W = (int(v) for v in torch.randint(1, 40, (2,), generator=gen))
    x = layout(torch.randn(N, C, H, W, generator=gen), x_layout)
    M = layout(torch.randn(N, 4, 4, generator=gen), m_layout)
    dy = layout(torch.randn(N, C, H, W, generator=gen), m_layout)
    want, want_dx = _value_and_grad("ref", A.color_transform, x.double(), dy.double(), M.double())
    got, got_dx = _value_and_grad("triton", A.color_transform, x, dy, M)
    torch.testing.assert_close(got.double(), want, **FP32_TOL)
    torch.testing.assert_close(got_dx.double(), want_dx, **FP32_TOL)
    from gankern.kernels import augment as k
    poisoned = launch_poisoned(lambda x, M, out: k.color_transform(x, M, out, True), (N, C, H, W), x, M)
    torch.testing.assert_close(poisoned, got, rtol=0, atol=0)


def test_several_tiles_and_positions_far_outside():
    """Outputs larger than a program's tile along both axes (partial tiles at the edges), channels_last output, and
    theta that sends some images entirely off the input (zeros) or far away (|position| ~ 1e30: no int overflow)."""
    x = layout(torch.randn(3, 2, 9, 70), "channels_last")
    theta = random_theta(3)
    theta[1, :, 2] = 5.0
    theta[2, 0, 0] = 1e30
    want = A.affine_grid_sample_ref(x.double(), theta.double(), (37, 140))
    with backend_ctx("triton"):
        got = A.affine_grid_sample(x, theta, (37, 140))
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.double(), want, **FP32_TOL)
    assert (got[1] == 0).all()


# ----------------------------------------------------------------------------------------------------------------
# gradients


def _sample_case(gen):
    N, C = 2, int(torch.randint(1, 4, (), generator=gen))
    Hi, Wi, Ho, Wo = (int(v) for v in torch.randint(2, 12, (4,), generator=gen))
    return torch.randn(N, C, Hi, Wi, generator=gen), random_theta(N, gen), (Ho, Wo)


@pytest.mark.parametrize("op", ["affine_grid_sample", "color_transform"])
def test_gradients_to_second_order_match_reference(op):
    gen = torch.Generator().manual_seed(fresh_seed())
    if op == "affine_grid_sample":
        x, theta, size = _sample_case(gen)
        fns = {b: (lambda t, b=b: _on(b, A.affine_grid_sample, t, theta, size)) for b in ("triton", "ref")}
    else:
        x, M = torch.randn(2, 3, 5, 7, generator=gen), torch.randn(2, 4, 4, generator=gen)
        fns = {b: (lambda t, b=b: _on(b, A.color_transform, t, M)) for b in ("triton", "ref")}
    y = fns["ref"](x)
    w, u = torch.randn(y.shape, generator=gen), torch.randn(x.shape, generator=gen)
    got = grads_to_second_order(fns["triton"], x, w, u)
    want = grads_to_second_order(fns["ref"], x, w, u)
    for label, g, r in zip(("y", "dx", "d2w"), got, want):
        torch.testing.assert_close(g, r, **FP32_TOL, msg=lambda m: f"{label}: {m}")


def _on(backend, fn, *args, **kwargs):
    with backend_ctx(backend):
        return fn(*args, **kwargs)


def test_gradcheck_and_gradgradcheck_of_the_references_in_float64():
    gen = torch.Generator().manual_seed(fresh_seed())
    x, theta, size = _sample_case(gen)
    M = torch.randn(2, 4, 4, dtype=torch.float64, generator=gen)
    for C in (3, 1):
        fns = (lambda t: A.affine_grid_sample(t, theta.double(), size), lambda t: A.color_transform(t, M))
        for fn in fns:
            xd = torch.randn(2, C, 4, 5, dtype=torch.float64, generator=gen).requires_grad_(True)
            with backend_ctx("ref"):
                assert torch.autograd.gradcheck(fn, (xd,))
                assert torch.autograd.gradgradcheck(fn, (xd,))


def test_adjoint_identity_of_the_triton_ops():
    """<A x, y> = <x, A^T y> with A^T the backward kernel (checked in float64 arithmetic of fp32 results), and the
    gradient of the backward op is the forward op again (what makes every order of gradients correct)."""
    gen = torch.Generator().manual_seed(fresh_seed())
    x, theta, size = _sample_case(gen)
    y = torch.randn(x.shape[0], x.shape[1], *size, generator=gen)
    with backend_ctx("triton"):
        Ax = A.affine_grid_sample(x, theta, size)
        ATy = A._sample_grad_op(y, theta, x.shape[2], x.shape[3])
        ddx = torch.randn(x.shape, generator=gen)
        yr = y.clone().requires_grad_(True)
        (again,) = torch.autograd.grad(A._sample_grad_op(yr, theta, x.shape[2], x.shape[3]), yr, ddx)
    lhs, rhs = (Ax.double() * y.double()).sum(), (x.double() * ATy.double()).sum()
    assert abs(lhs - rhs) <= 1e-5 * (Ax.abs().sum() * y.abs().max()).item()
    torch.testing.assert_close(again, A.affine_grid_sample_ref(ddx, theta, size), **FP32_TOL)


# ----------------------------------------------------------------------------------------------------------------
# NaN / Inf


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("op,arg", [("affine_grid_sample", "x"), ("affine_grid_sample", "theta"),
                                    ("color_transform", "x"), ("color_transform", "M"),
                                    ("color_transform1", "x"), ("color_transform1", "M")])
def test_nan_and_inf_come_out_where_the_reference_puts_them(op, arg):
    gen = torch.Generator().manual_seed(fresh_seed())
    if op == "affine_grid_sample":
        x, theta, size = _sample_case(gen)
        args = {"x": x, "theta": theta}
        call = lambda x, theta: A.affine_grid_sample(x, theta, size)  # noqa: E731
    else:
        C = 3 if op == "color_transform" else 1
        args = {"x": torch.randn(2, C, 4, 5, generator=gen), "M": torch.randn(2, 4, 4, generator=gen)}
        call = A.color_transform
    t = args[arg]
    for value in (math.nan, math.inf, -math.inf):
        bad = t.clone()
        bad.view(-1)[int(torch.randint(bad.numel(), (), generator=gen))] = value
        if arg == "x":  # and one at a corner, where only some positions reach it
            bad.view(-1)[0] = value
        poisoned = dict(args, **{arg: bad})
        want = _on("ref", call, **{k: v.double() for k, v in poisoned.items()})
        got = _on("triton", call, **poisoned).double()
        what = f"{op}: {value} in {arg}"
        assert torch.equal(got.isnan(), want.isnan()), f"{what}: NaN at {got.isnan().nonzero().tolist()}, " \
            f"reference at {want.isnan().nonzero().tolist()}"
        assert torch.equal(got.isposinf(), want.isposinf()) and torch.equal(got.isneginf(), want.isneginf()), what
        torch.testing.assert_close(got, want, **FP32_TOL, equal_nan=True)


# ----------------------------------------------------------------------------------------------------------------
# dtypes, registration, compile


def test_fp16_matches_float64_reference():
    gen = torch.Generator().manual_seed(fresh_seed())
    x, theta, size = _sample_case(gen)
    xh = x.half()
    with backend_ctx("triton"):
        got = A.affine_grid_sample(xh, theta, size)
        dx = torch.autograd.grad(A.affine_grid_sample(xh.requires_grad_(True), theta, size).sum(), xh)[0]
    want = A.affine_grid_sample_ref(xh.double(), theta.double(), size)
    assert got.dtype == dx.dtype == torch.float16
    # inputs already in fp16: one rounding of the fp32 result to fp16, 4-term fp32 sums
    assert_close_scaled(got, want, gpu_rtol(torch.float16, 1, 4), "fp16 forward")
    want_dx = torch.autograd.grad(A.affine_grid_sample_ref(xh.double().requires_grad_(True), theta.double(),
                                                           size).sum(), xh)
    assert_close_scaled(dx, want_dx[0], gpu_rtol(torch.float16, 1, 16), "fp16 backward")


def test_every_op_is_registered_and_passes_opcheck():
    gen = torch.Generator().manual_seed(fresh_seed())
    x, theta, size = _sample_case(gen)
    assert {"affine_grid_sample", "affine_grid_sample_grad", "color_transform"} <= set(gankern.ops._launch.REGISTRY)
    with backend_ctx("triton"):
        torch.library.opcheck(A._sample_op.op, (x.requires_grad_(True), theta, *size))
        torch.library.opcheck(A._sample_grad_op.op, (torch.randn(2, x.shape[1], *size).requires_grad_(True), theta,
                                                     x.shape[2], x.shape[3]))
        torch.library.opcheck(A._color_op.op, (torch.randn(2, 3, 4, 5).requires_grad_(True), torch.randn(2, 4, 4),
                                               True))


def test_torch_compile_runs_through_the_ops():
    gen = torch.Generator().manual_seed(fresh_seed())
    x, M = torch.randn(2, 3, 6, 5, generator=gen), torch.randn(2, 4, 4, generator=gen)
    theta = random_theta(2, gen)

    def f(x):
        return A.color_transform(A.affine_grid_sample(x, theta, (7, 4)), M).square().sum()

    xr = x.clone().requires_grad_(True)
    with backend_ctx("triton"):
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        got = compiled(xr)
        (g,) = torch.autograd.grad(got, xr)
    xe = x.clone().requires_grad_(True)
    with backend_ctx("ref"):
        ref = f(xe)
        (ge,) = torch.autograd.grad(ref, xe)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, ge, **FP32_TOL)


# ----------------------------------------------------------------------------------------------------------------
# bad input


BAD = {
    "x rank": (lambda: A.affine_grid_sample(torch.randn(3, 4, 5), torch.zeros(3, 2, 3)), ValueError, "x must have 4"),
    "theta shape": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(2, 3, 3)), ValueError,
                    r"theta must have shape \(2, 2, 3\)"),
    "theta batch": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(3, 2, 3)), ValueError,
                    "theta must have shape"),
    "theta grad": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(2, 2, 3, requires_grad=True)),
                   ValueError, "theta must not require grad"),
    "theta dtype": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(2, 2, 3, dtype=torch.int64)),
                    TypeError, "theta must have dtype"),
    "size": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(2, 2, 3), (0, 4)), ValueError,
             "size must be"),
    "size type": (lambda: A.affine_grid_sample(torch.randn(2, 3, 4, 5), torch.zeros(2, 2, 3), 4), ValueError,
                  "size must be"),
    "x int": (lambda: A.affine_grid_sample(torch.zeros(2, 3, 4, 5, dtype=torch.int32), torch.zeros(2, 2, 3)),
              TypeError, "x must have dtype"),
    "channels": (lambda: A.color_transform(torch.randn(2, 4, 4, 5), torch.zeros(2, 4, 4)), ValueError,
                 "3 .RGB. or 1"),
    "M shape": (lambda: A.color_transform(torch.randn(2, 3, 4, 5), torch.zeros(2, 3, 4)), ValueError,
                r"M must have shape \(2, 4, 4\)"),
    "M grad": (lambda: A.color_transform(torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 4, requires_grad=True)),
               ValueError, "M must not require grad"),
    "M device": (lambda: A.color_transform(torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 4, device="meta")),
                 ValueError, "M is on meta"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("backend", ["ref", "triton"])
def test_bad_input_says_why_before_any_launch(case, backend, monkeypatch):
    from gankern.kernels import augment as k
    for name in ("affine_grid_sample", "affine_grid_sample_grad", "color_transform"):
        monkeypatch.setattr(k, name, lambda *a, _n=name: pytest.fail(f"{_n} launched on bad input"))
    fn, err, match = BAD[case]
    with backend_ctx(backend), pytest.raises(err, match=match):
        fn()


def test_cuda_backend_says_it_has_no_kernel():
    with backend_ctx("cuda"), pytest.raises(gankern.BackendUnavailable, match="Triton kernel only"):
        A.color_transform(torch.randn(1, 3, 2, 2), torch.eye(4)[None])


# ----------------------------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_layout", LAYOUTS)
def test_gpu_matches_float64_reference_with_gradients(dtype, x_layout):
    """Both ops on the GPU against the reference in float64 on the same (rounded) inputs, outputs poisoned first."""
    from conftest import poison_allocator
    gen = torch.Generator().manual_seed(fresh_seed())
    x = layout(torch.randn(5, 3, 67, 45, generator=gen).to("cuda", dtype), x_layout)
    theta, M = random_theta(5, gen).cuda(), torch.randn(5, 4, 4, generator=gen).cuda()
    cases = (("affine_grid_sample", lambda t: A.affine_grid_sample(t, theta, (70, 41)),
              lambda t: A.affine_grid_sample_ref(t, theta.double(), (70, 41))),
             ("color_transform", lambda t: A.color_transform(t, M), lambda t: A.color_transform_ref(t, M.double())))
    for name, fn, ref in cases:
        xd = x.detach().double().requires_grad_(True)
        yd = ref(xd)
        w = torch.randn(yd.shape, generator=gen).to("cuda", dtype)
        (dxd,) = torch.autograd.grad(yd, xd, w.double())
        poison_allocator(8 * x.numel() * x.element_size())
        xr = x.detach().requires_grad_(True)  # the layout kept
        y = fn(xr)
        (dx,) = torch.autograd.grad(y, xr, w)
        # sampling positions in fp32 (~2 ulp of 2 times Wi / 2: ~2e-5 px) times the slope of random pixels (~the value
        # scale): 1e-4 of the scale; then 4 (bilinear) or 3 (color) fp32 terms and one rounding to dtype
        assert_close_scaled(y, yd, gpu_rtol(dtype, 1, 4) + 1e-4, f"{name} {dtype} forward")
        # the backward adds up to 4 x (Ho Wo / Hi Wi) contributions per input in fp32 (atomics), then one rounding
        assert_close_scaled(dx, dxd, gpu_rtol(dtype, 1, 16) + 1e-4, f"{name} {dtype} backward")
