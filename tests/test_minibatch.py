"""Minibatch family: every backend against the reference twin (values, first and second-order gradients, odd sizes,
NaN-poisoned outputs, two simulated thread orders), the references against the papers' code, the modules,
torch.compile, and bad input."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gankern
import gankern._sim as sim
from gankern.nn import MinibatchDiscrimination, MinibatchStdDev
from gankern.ops import minibatch as mb
from gankern.ops import minibatch_discrimination, minibatch_discrimination_pairs, minibatch_stddev

from conftest import CPU_BACKENDS, backend_ctx, poison

KERNELS = ("triton", "cuda")
# (N, A, B, C): none a multiple of the tiles (32 rows in Triton, 64 in CUDA; C padded to a power of two or to a
# multiple of 4), N below and above one tile.
DISC_SHAPES = [(37, 6, 3, 5), (5, 4, 2, 17), (33, 3, 1, 1), (70, 5, 2, 7)]
# (N, C, H, W, group_size, num_channels)
STD_SHAPES = [(6, 4, 3, 2, 3, 2), (8, 5, 3, 3, 4, 1), (3, 6, 1, 1, 4, 3), (12, 8, 5, 7, 4, 2), (5, 3, 2, 2, None, 1),
              (1, 3, 2, 2, 4, 1),
              (4, 40, 4, 4, 4, 1), (8, 70, 4, 4, 4, 2)]  # slabs of more than 512 elements: split over programs


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every kernel output starts as NaN, so an element a kernel does not write fails the comparison."""
    monkeypatch.setattr(mb, "_empty", lambda *a, **k: poison(torch.empty(*a, **k)))


@pytest.fixture(params=[0, 1], ids=["forward-order", "reverse-order"])
def schedule(request):
    """The simulated CUDA threads run in forward, then reverse order between barriers."""
    sim.set_schedule(request.param, 0)
    yield request.param
    sim.set_schedule(0, 0)


def naive_discrimination(f, T, B, C):
    """Salimans et al.'s formula, materializing every pair (N, N, B, C)."""
    M = (f @ T).view(f.shape[0], B, C)
    e = torch.exp(-(M[:, None] - M[None]).abs().sum(-1))  # [N, N, B]
    return e.sum(1) - torch.diagonal(e, 0, 0, 1).T


def stylegan2_minibatch_std(x, group_size, num_channels=1):
    """StyleGAN2-ADA's MinibatchStdLayer.forward (training/networks.py), verbatim apart from names."""
    N, C, H, W = x.shape
    G = min(group_size, N) if group_size is not None else N
    F = num_channels
    c = C // F
    y = x.reshape(G, -1, F, c, H, W)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, F, 1, 1)
    y = y.repeat(G, 1, H, W)
    return torch.cat([x, y], dim=1)


def disc_inputs(N, A, B, C, dtype=torch.float32, scale=None):
    # scale keeps ||M_i - M_j||_1 of order 1, so that exp(-.) is neither 0 nor 1 for most pairs
    scale = scale or 1.0 / (C * A ** 0.5)
    return torch.randn(N, A, dtype=dtype), (torch.randn(A, B * C) * scale).to(dtype)


def disc_run(name, f, T, B, C, second_order=False):
    """o, then df and dT of a random projection of o, and (second_order) the gradient of ||df||^2 w.r.t. f and T."""
    f, T = f.detach().clone().requires_grad_(True), T.detach().clone().requires_grad_(True)
    with backend_ctx(name):
        o = minibatch_discrimination(f, T, B, C)
        w = torch.randn(o.shape, generator=torch.Generator().manual_seed(1)).to(o.dtype)
        df, dT = torch.autograd.grad((o * w).sum(), (f, T), create_graph=second_order)
        out = [o, df, dT]
        if second_order:
            out += torch.autograd.grad(df.float().square().sum() + dT.float().square().sum(), (f, T))
    return [t.detach().float() for t in out]


def assert_all_close(got, want, rtol, atol):
    """Each pair close, atol relative to the largest magnitude of the expected tensor (second-order terms are large
    sums of products of first-order ones)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol * scale, msg=lambda m: f"output {i}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# minibatch discrimination


# the simulated thread order (forward, reverse) applies to the CUDA kernels only
KERNEL_RUNS = [("triton", 0), ("cuda", 0), ("cuda", 1)]


@pytest.mark.parametrize("shape", DISC_SHAPES, ids=str)
@pytest.mark.parametrize("name,order", KERNEL_RUNS)
def test_discrimination_kernels_match_reference(name, order, shape):
    sim.set_schedule(order, 0)
    N, A, B, C = shape
    f, T = disc_inputs(N, A, B, C)
    try:
        got = disc_run(name, f, T, B, C, second_order=True)
    finally:
        sim.set_schedule(0, 0)
    want = disc_run("ref", f, T, B, C, second_order=True)
    assert_all_close(got, want, rtol=1e-4, atol=1e-5)


def test_discrimination_reference_is_the_papers_formula():
    f, T = disc_inputs(9, 7, 4, 3, torch.float64)
    torch.testing.assert_close(minibatch_discrimination(f, T, 4, 3), naive_discrimination(f, T, 4, 3))


def test_discrimination_reference_chunks_rows_with_the_same_result(monkeypatch):
    f, T = disc_inputs(11, 5, 3, 4, torch.float64)
    g = torch.randn(11, 3, dtype=torch.float64)
    M = (f @ T).view(11, 3, 4)
    whole = mb._disc_ref(M), mb._disc_backward_ref(M, g)
    monkeypatch.setattr(mb, "_REF_CHUNK", 2 * M.numel() + 1)  # 2 rows per chunk, the last one shorter
    torch.testing.assert_close(mb._disc_ref(M), whole[0])
    torch.testing.assert_close(mb._disc_backward_ref(M, g), whole[1])


def test_discrimination_gradcheck_float64():
    f, T = disc_inputs(6, 4, 3, 2, torch.float64)
    f.requires_grad_(True)
    T.requires_grad_(True)
    fn = lambda f, T: minibatch_discrimination(f, T, 3, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f, T))
    assert torch.autograd.gradgradcheck(fn, (f, T))


def test_discrimination_backward_formula_is_the_autograd_of_the_reference():
    M = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, 3, dtype=torch.float64)
    o = naive_discrimination(M.view(7, 12), torch.eye(12, dtype=torch.float64), 3, 4)
    (want,) = torch.autograd.grad(o, M, g)
    torch.testing.assert_close(mb._disc_backward_ref(M.detach(), g), want)


def test_single_sample_gives_zeros_not_nan(backend):
    f = torch.randn(1, 5, requires_grad=True)
    T = torch.randn(5, 6, requires_grad=True)
    o = minibatch_discrimination(f, T, 2, 3)
    torch.testing.assert_close(o, torch.zeros(1, 2), rtol=0, atol=0)
    o.sum().backward()
    torch.testing.assert_close(f.grad, torch.zeros_like(f), rtol=0, atol=0)
    torch.testing.assert_close(T.grad, torch.zeros_like(T), rtol=0, atol=0)


def test_identical_samples_count_every_other_sample(backend):
    M = torch.randn(1, 3, 4).repeat(6, 1, 1).requires_grad_(True)
    o = minibatch_discrimination_pairs(M)
    torch.testing.assert_close(o, torch.full((6, 3), 5.0))
    (dM,) = torch.autograd.grad(o, M, torch.randn(6, 3))  # sign(0) = 0, as torch's |x|' at 0
    torch.testing.assert_close(dM, torch.zeros_like(M), rtol=0, atol=0)


# bf16 does not run in the Triton interpreter: Triton's bf16 is tested on the GPU
@pytest.mark.parametrize("name,dtype", [("triton", torch.float16), ("cuda", torch.float16),
                                        ("cuda", torch.bfloat16)], ids=str)
def test_discrimination_16bit_inputs_accumulate_in_fp32(name, dtype):
    M = (torch.randn(35, 3, 6) * 0.2).to(dtype)
    g = torch.randn(35, 3).to(dtype)
    with backend_ctx(name):
        o = minibatch_discrimination_pairs(M.requires_grad_(True))
        (dM,) = torch.autograd.grad(o, M, g)
    assert o.dtype == dtype and dM.dtype == dtype
    o_ref = mb._disc_ref(M.detach().float())
    dM_ref = mb._disc_backward_ref(M.detach().float(), g.float())
    torch.testing.assert_close(o.float(), o_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(dM.float(), dM_ref, rtol=2e-2, atol=2e-2)


def test_cuda_kernels_take_up_to_max_c_elements_per_row(schedule):
    assert sim.MB_MAX_C == mb.DISC_CUDA_MAX_C
    M = torch.randn(67, 1, mb.DISC_CUDA_MAX_C) * 0.03
    g = torch.randn(67, 1)
    with backend_ctx("cuda"):
        o = minibatch_discrimination_pairs(M.requires_grad_(True))
        (dM,) = torch.autograd.grad(o, M, g)
    torch.testing.assert_close(o, mb._disc_ref(M.detach()), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dM, mb._disc_backward_ref(M.detach(), g), rtol=1e-4, atol=1e-5)
    with backend_ctx("cuda"), pytest.raises(gankern.BackendUnavailable, match=f"C <= {mb.DISC_CUDA_MAX_C}"):
        minibatch_discrimination_pairs(torch.randn(3, 1, mb.DISC_CUDA_MAX_C + 1))


def test_discrimination_module():
    torch.manual_seed(0)
    m = MinibatchDiscrimination(7, 3, 4)
    assert m.T.shape == (7, 12) and "num_kernels=3" in repr(m)
    assert list(m.state_dict()) == ["T"]
    x = torch.randn(5, 7)
    y = m(x)
    torch.testing.assert_close(y, torch.cat([x, naive_discrimination(x, m.T, 3, 4)], 1))
    y.sum().backward()
    assert m.T.grad is not None and torch.isfinite(m.T.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# minibatch standard deviation


def std_run(name, x, G, F, second_order=False):
    x = x.detach().clone().requires_grad_(True)
    with backend_ctx(name):
        y = minibatch_stddev(x, G, F)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y.dtype)
        (dx,) = torch.autograd.grad((y * w).sum(), x, create_graph=second_order)
        out = [y, dx]
        if second_order:
            out += torch.autograd.grad((dx.float() * torch.cos(x.detach().float())).sum(), x)
    return [t.detach().float() for t in out]


@pytest.mark.parametrize("name", ["ref", "triton", "cuda"])
@pytest.mark.parametrize("shift", [0.0, 10.0])
def test_stddev_second_order_fp32_is_within_5e_5_of_fp64(name, shift):
    """The second order in fp32 against an fp64 truth (issue 17): activations with a common offset make the
    incoming gradient nearly affine in the deviations from the group mean, where the derivative of the closed-form
    backward cancelled to 3e-4 relative error; StyleGAN2-ADA's double autograd has 1e-6."""
    x64 = torch.randn(8, 16, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + shift
    want = std_run("ref", x64, 4, 1, second_order=True)[2]
    got = std_run(name, x64.float(), 4, 1, second_order=True)[2]
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    assert err < 5e-5, f"{name}: relative error {err:.2e} of the fp32 second order"


@pytest.mark.parametrize("shape", STD_SHAPES, ids=str)
@pytest.mark.parametrize("name,order", KERNEL_RUNS)
def test_stddev_kernels_match_reference(name, order, shape):
    N, C, H, W, G, F = shape
    x = torch.randn(N, C, H, W)
    sim.set_schedule(order, 0)
    try:
        got = std_run(name, x, G, F, second_order=True)
    finally:
        sim.set_schedule(0, 0)
    want = std_run("ref", x, G, F, second_order=True)
    assert_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_stddev_triton_grid_fills_the_gpu_at_the_benchmark_shape():
    """64x512x4x4 with groups of 4 is 16 slabs: each goes to P programs (forward partial sums, then a fill launch),
    at least 132 programs (the H200's SMs); a shape with many slabs keeps one program per slab."""
    from gankern.kernels.minibatch import std_split
    GP, BLOCK, chunk, P = std_split(64, 512, 16, 4, 1)
    assert 16 * P >= 132 and chunk % BLOCK == 0 and chunk * (P - 1) < 512 * 16 <= chunk * P
    assert std_split(4096, 8, 4, 4, 1)[3] == 1
    assert std_split(4, 40, 16, 4, 1)[3] == 2 and std_split(8, 70, 16, 4, 2)[3] == 2  # (the split test shapes)


def test_stddev_cuda_kernel_more_elements_than_threads():
    x = torch.randn(4, 70, 3, 3)  # c * H * W = 630 elements per slab: 3 blocks of 256 threads, the last one partial
    assert_all_close(std_run("cuda", x, 2, 1, second_order=True), std_run("ref", x, 2, 1, second_order=True),
                     rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_stddev_fp16(name):
    x = torch.randn(8, 6, 3, 3).half()
    with backend_ctx(name):
        assert minibatch_stddev(x, 4, 2).dtype == torch.float16
    got = std_run(name, x, 4, 2)
    want = std_run("ref", x.float(), 4, 2)
    assert_all_close(got, want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("shape", STD_SHAPES, ids=str)
def test_stddev_reference_is_stylegan2s_layer(shape):
    N, C, H, W, G, F = shape
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    torch.testing.assert_close(minibatch_stddev(x, G, F), stylegan2_minibatch_std(x, G, F), rtol=0, atol=0)


def test_stddev_groups_samples_n_and_n_plus_n_over_g():
    x = torch.zeros(4, 1, 1, 1)
    x[1, 0, 0, 0] = 2.0  # group size 2: groups {0, 2} and {1, 3}; only the second one varies (std 1)
    y = minibatch_stddev(x, 2)
    torch.testing.assert_close(y[:, 1].flatten(), torch.tensor([1e-4, 1.0, 1e-4, 1.0]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_stddev_gradcheck_and_gradgradcheck_float64(name):
    x = torch.randn(6, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    if name != "ref":  # kernels take fp32/bf16/fp16: first and second order against the reference instead
        got = std_run(name, x.float(), 3, 2, second_order=True)
        want = std_run("ref", x, 3, 2, second_order=True)
        assert_all_close(got, [w.float() for w in want], rtol=1e-4, atol=1e-5)
        return
    fn = lambda x: minibatch_stddev(x, 3, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_stddev_r1_style_double_backward_matches_eager():
    """R1 through a tiny D with the layer: the gradient w.r.t. D's weight of ||dD/dx||^2, against StyleGAN2's code."""
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    w = torch.randn(4, 4, 4)

    def r1(layer):
        d = (layer(x) * w).sum(dim=(2, 3)).tanh().sum()
        (g,) = torch.autograd.grad(d, x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), x)[0]
    for name in CPU_BACKENDS:
        with backend_ctx(name):
            got = r1(lambda t: minibatch_stddev(t, 4))
        torch.testing.assert_close(got, r1(lambda t: stylegan2_minibatch_std(t, 4)), rtol=1e-4, atol=1e-5)


def test_stddev_module(backend):
    m = MinibatchStdDev(2, 1)
    assert "group_size=2" in repr(m) and list(m.state_dict()) == []
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(m(x), stylegan2_minibatch_std(x, 2, 1))


# ---------------------------------------------------------------------------------------------------------------
# torch.compile and bad input


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_torch_compile_fullgraph_traces_through_both_ops(name):
    torch._dynamo.reset()

    def net(x, f, T):
        return minibatch_stddev(x, 2, 1).square().mean() + minibatch_discrimination(f, T, 3, 5).sum()
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    f, T = disc_inputs(6, 4, 3, 5)
    f.requires_grad_(True)
    with backend_ctx(name):
        compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
        got = compiled(x, f, T)
        got_grads = torch.autograd.grad(got, (x, f))
        want = net(x, f, T)
        want_grads = torch.autograd.grad(want, (x, f))
    torch.testing.assert_close(got, want)
    assert_all_close(got_grads, want_grads, rtol=1e-5, atol=1e-6)


def test_forced_backend_that_cannot_run_says_why():
    f, T = disc_inputs(4, 3, 2, 2, torch.float64)
    with backend_ctx("triton"), pytest.raises(gankern.BackendUnavailable, match="take torch.float32"):
        minibatch_discrimination(f, T, 2, 2)
    with gankern.use_backend("cuda"), pytest.raises(gankern.BackendUnavailable, match="needs CUDA tensors"):
        minibatch_discrimination(f.float(), T.float(), 2, 2)


DISC_BAD = {
    "f not a tensor": lambda f, T: (f.tolist(), T, 2, 3),
    "f 1-d": lambda f, T: (f[0], T, 2, 3),
    "f int": lambda f, T: (f.long(), T, 2, 3),
    "T dtype differs": lambda f, T: (f, T.double(), 2, 3),
    "T 3-d": lambda f, T: (f, T[None], 2, 3),
    "T rows": lambda f, T: (f, T[1:], 2, 3),
    "B * C != T columns": lambda f, T: (f, T, 3, 3),
    "B zero": lambda f, T: (f, T[:, :0], 0, 3),
    "C negative": lambda f, T: (f, T, -2, -3),
    "C float": lambda f, T: (f, T, 2, 3.0),
    "B bool": lambda f, T: (f, T, True, 6),
    "empty batch": lambda f, T: (f[:0], T, 2, 3),
}

STD_BAD = {
    "not a tensor": lambda x: ((x.tolist(),), {}),
    "3-d": lambda x: ((x[0],), {}),
    "int": lambda x: ((x.long(),), {}),
    "group size zero": lambda x: ((x, 0), {}),
    "group size float": lambda x: ((x, 2.0), {}),
    "N not a multiple of G": lambda x: ((torch.cat([x, x[:1]]), 2), {}),
    "C not a multiple of F": lambda x: ((x,), {"num_channels": x.shape[1] + 1}),
    "num_channels zero": lambda x: ((x,), {"num_channels": 0}),
    "empty": lambda x: ((x[:, :, :0],), {}),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(DISC_BAD)), n=st.integers(1, 7), a=st.integers(1, 6),
       name=st.sampled_from(CPU_BACKENDS))
def test_discrimination_bad_input_raises_before_launch(case, n, a, name):
    args = DISC_BAD[case](torch.randn(n, a), torch.randn(a, 6))
    with backend_ctx(name), pytest.raises((ValueError, TypeError)):
        minibatch_discrimination(*args)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(STD_BAD)), n=st.sampled_from([2, 4, 6]), c=st.integers(1, 5),
       hw=st.integers(1, 3), name=st.sampled_from(CPU_BACKENDS))
def test_stddev_bad_input_raises_before_launch(case, n, c, hw, name):
    args, kwargs = STD_BAD[case](torch.randn(n, c, hw, hw))
    with backend_ctx(name), pytest.raises((ValueError, TypeError)):
        minibatch_stddev(*args, **kwargs)
    with backend_ctx(name), pytest.raises((ValueError, TypeError)):
        MinibatchStdDev(*args[1:], **kwargs)(args[0])


# ---------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu on the device machine)


@pytest.mark.gpu
@pytest.mark.parametrize("name", KERNELS)
def test_gpu_discrimination_n4096_bounded_memory(name):
    N, A, B, C = 4096, 64, 32, 16
    f, T = (t.cuda() for t in disc_inputs(N, A, B, C))
    M = (f @ T).view(N, B, C).requires_grad_(True)
    g = torch.randn(N, B, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with backend_ctx(name):
        o = minibatch_discrimination_pairs(M)
        (dM,) = torch.autograd.grad(o, M, g)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < 4 * M.numel() * 4  # O(N * B * C), not N^2
    rows = slice(0, 64)  # the reference on 64 rows i against all j
    torch.testing.assert_close(o[rows], mb._disc_ref(M.detach())[rows], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dM, mb._disc_backward_ref(M.detach(), g), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", KERNELS)
def test_gpu_discrimination_dtypes(name, dtype):
    N, A, B, C = 257, 33, 7, 16
    f, T = (t.cuda().to(dtype) for t in disc_inputs(N, A, B, C))
    got = disc_run(name, f, T, B, C)
    want = disc_run("ref", f.float(), T.float(), B, C)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    assert_all_close(got, want, **tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", KERNELS)
def test_gpu_stddev_channels_last_and_dtypes(name, dtype):
    x = torch.randn(64, 37, 4, 5, device="cuda").to(dtype).to(memory_format=torch.channels_last)
    got = std_run(name, x, 4, 1, second_order=True)
    want = std_run("ref", x.float().contiguous(), 4, 1, second_order=True)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    assert_all_close(got, want, **tol)
