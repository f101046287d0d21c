"""Spectral norm: every backend against the reference twin, the drop-in parametrization against torch's, convert(),
the batched group, torch.compile, and bad input."""
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gankern
import gankern._sim as sim
from gankern.nn import SpectralNormGroup, convert
from gankern.nn.utils import spectral_norm
from gankern.ops.spectral_norm import as_matrix, power_iteration_all, spectral_normalize_all

from conftest import CPU_BACKENDS, assert_close_scaled, backend_ctx, poison_allocator

# (shape, dim): convs, a transposed conv (dim 1), linears with few and many rows, sizes that are not multiples of
# any tile of the kernels.
LAYERS = [((7, 5, 3, 3), 0), ((33, 20), 0), ((4, 9, 3, 3), 1), ((301, 3), 0), ((1, 37), 0), ((130, 70, 1, 1), 0)]


def fresh_vectors(weights, dims, dtype=torch.float32, warm=3):
    """Random u, v after ``warm`` reference iterations (as a module has them after its first steps: with raw random
    vectors u^T W v can be near 0 and the gradient W / sigma ill-conditioned)."""
    us = [F.normalize(torch.randn(w.shape[d]), dim=0) for w, d in zip(weights, dims)]
    vs = [F.normalize(torch.randn(w.numel() // w.shape[d]), dim=0) for w, d in zip(weights, dims)]
    if warm:
        with gankern.use_backend("ref"):
            power_iteration_all([w.float() for w in weights], us, vs, warm, 1e-12, dims)
    return [u.to(dtype) for u in us], [v.to(dtype) for v in vs]


def run(backend, weights, us, vs, dims, n, grad_seed=None):
    ws = [w.detach().clone().requires_grad_(True) for w in weights]
    us, vs = [u.clone() for u in us], [v.clone() for v in vs]
    g = torch.Generator().manual_seed(grad_seed or 0)
    with backend_ctx(backend):  # the backward runs the backend's kernels too
        outs, sig = spectral_normalize_all(ws, us, vs, n, 1e-12, dims)
        loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs)
        loss.backward()
    return outs, sig, us, vs, [w.grad for w in ws]


def assert_close_lists(a, b, **tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.float(), y.float(), **tol)


@pytest.mark.parametrize("schedule", [0, 1])
@pytest.mark.parametrize("n_iter", [0, 1, 3])
@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_kernels_match_reference(name, n_iter, schedule):
    weights = [torch.randn(s) for s, _ in LAYERS]
    dims = [d for _, d in LAYERS]
    us, vs = fresh_vectors(weights, dims)
    sim.set_schedule(schedule, 0)
    try:
        got = run(name, weights, us, vs, dims, n_iter, grad_seed=5)
    finally:
        sim.set_schedule(0, 0)
    want = run("ref", weights, us, vs, dims, n_iter, grad_seed=5)
    tol = dict(rtol=2e-5, atol=2e-6)
    assert_close_lists(got[0], want[0], **tol)        # W / sigma
    torch.testing.assert_close(got[1], want[1], **tol)  # sigmas
    assert_close_lists(got[2], want[2], **tol)        # u updated in place
    assert_close_lists(got[3], want[3], **tol)        # v updated in place
    assert_close_lists(got[4], want[4], rtol=1e-4, atol=1e-5)  # dW


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_kernels_propagate_nan_and_take_zero_weights_like_ref(name):
    """A NaN weight makes its layer's sigma, u, v and W / sigma NaN and leaves the other layers alone; an all-zero
    weight (|W v| below eps) gives what ref gives (u = 0, sigma = 0, W / sigma NaN)."""
    weights = [torch.randn(6, 5), torch.zeros(4, 3, 3, 3), torch.randn(9, 2, 2, 2)]
    weights[0][2, 3] = float("nan")
    dims = [0, 0, 1]
    us, vs = fresh_vectors(weights[1:], dims[1:])
    us, vs = [torch.randn(6)] + us, [torch.randn(5)] + vs
    got = run(name, weights, [u.clone() for u in us], [v.clone() for v in vs], dims, 1)
    want = run("ref", weights, [u.clone() for u in us], [v.clone() for v in vs], dims, 1)
    assert got[1][0].isnan() and got[1][2].isfinite()
    for a, b in zip(got[:4], want[:4]):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6, equal_nan=True)


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_cached_call_signature_still_checks_what_changed(name):
    """A call of tensors checked before skips the checks; a call whose tensors differ in what the checks read
    (address, shape, dtype, contiguity) is checked again: a transposed square weight at the same address, a u of
    the wrong size; after ``w.data = ...`` (same tensor object, new storage) the new values are used."""
    w, u, v = torch.randn(5, 5), torch.randn(5), torch.randn(5)
    with backend_ctx(name):
        power_iteration_all([w], [u], [v])
        with pytest.raises(ValueError, match="contiguous"):
            power_iteration_all([w.t()], [u], [v])
        with pytest.raises(ValueError, match="elements"):
            power_iteration_all([w], [u[:4]], [v])
        q1, q2 = torch.linalg.qr(torch.randn(5, 5))[0], torch.linalg.qr(torch.randn(5, 5))[0]
        w.data = q1 @ torch.diag(torch.tensor([6.0, 1.5, 1.0, 0.5, 0.1])) @ q2  # largest singular value 6, clear
        got = power_iteration_all([w], [u], [v], 20)
    torch.testing.assert_close(got[0], torch.tensor(6.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_kernels_vector_paths_match_reference(name, misaligned):
    """Layers whose rows are 16-element multiples, 16-byte aligned, with whole 2048-element items at n_off a
    multiple of 16: the kernels' vector (unmasked, aligned) paths; misaligned: the same layers one float past an
    aligned address (the scalar paths)."""
    shapes = [(48, 16, 3, 3), (64, 32), (40, 24), (5, 16)]
    bases = [torch.randn(int(torch.tensor(s).prod()) + 1) for s in shapes]
    dims = [0] * len(shapes)
    us, vs = fresh_vectors([b[1:].view(s) for b, s in zip(bases, shapes)], dims)

    def run_views(backend):  # the weights are views at offset `misaligned` of leaves (run() would clone them)
        leaves = [b.clone().requires_grad_(True) for b in bases]
        ws = [(lf[1:] if misaligned else lf[:-1]).view(s) for lf, s in zip(leaves, shapes)]
        assert all((w.data_ptr() % 16 != 0) == misaligned for w in ws)
        u2, v2 = [u.clone() for u in us], [v.clone() for v in vs]
        with backend_ctx(backend):
            outs, sig = spectral_normalize_all(ws, u2, v2, 1, 1e-12, dims)
            g = torch.Generator().manual_seed(3)
            sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()
        return outs, sig, u2, v2, [lf.grad for lf in leaves]

    got, want = run_views(name), run_views("ref")
    tol = dict(rtol=2e-5, atol=2e-6)
    for i in (0, 2, 3):  # W / sigma, u, v
        assert_close_lists(got[i], want[i], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)
    assert_close_lists(got[4], want[4], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [1, 2])
def test_cuda_kernels_under_the_interleaved_schedule(seed):
    """Threads of the simulated CUDA kernels switch at every store and atomic: the atomics of sn_cols and
    sn_grad_dot and the barriers of the block sums must still give the reference's result."""
    weights = [torch.randn(s) for s, _ in LAYERS[:4]]
    dims = [d for _, d in LAYERS[:4]]
    us, vs = fresh_vectors(weights, dims)
    sim.set_schedule(3, seed)
    try:
        got = run("cuda", weights, us, vs, dims, 1, grad_seed=5)
    finally:
        sim.set_schedule(0, 0)
    want = run("ref", weights, us, vs, dims, 1, grad_seed=5)
    tol = dict(rtol=2e-5, atol=2e-6)
    for i in (0, 2, 3):  # W / sigma, u, v
        assert_close_lists(got[i], want[i], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)
    assert_close_lists(got[4], want[4], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,dtype", [("triton", torch.float16), ("cuda", torch.float16), ("cuda", torch.bfloat16)])
def test_kernels_16_bit_weights(name, dtype):
    """16-bit weights, u and v, fp32 accumulation (bf16 runs in the CUDA simulation; the Triton interpreter has
    no bf16, so Triton's bf16 is checked by the GPU tests)."""
    weights = [torch.randn(s).to(dtype) for s, _ in LAYERS[:3]]
    dims = [d for _, d in LAYERS[:3]]
    us, vs = fresh_vectors(weights, dims, dtype)
    got = run(name, weights, us, vs, dims, 2)
    want = run("ref", [w.float() for w in weights], [u.float() for u in us], [v.float() for v in vs], dims, 2)
    assert got[0][0].dtype == dtype and got[2][0].dtype == dtype
    tol = dict(rtol=5e-3, atol=2e-3) if dtype == torch.float16 else dict(rtol=3e-2, atol=1e-2)
    assert_close_lists(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)


def test_sigma_is_the_largest_singular_value_after_many_iterations(backend):
    q1, _ = torch.linalg.qr(torch.randn(40, 25))
    q2, _ = torch.linalg.qr(torch.randn(25, 25))
    s = torch.rand(25) * 2.0
    s[7] = 5.0  # a gap of 2.5x to the next singular value: 25 iterations reach float32 accuracy
    w = q1 @ torch.diag(s) @ q2.T
    us, vs = fresh_vectors([w], [0], warm=0)
    sigma = power_iteration_all([w], us, vs, 25)
    assert sigma.item() == pytest.approx(5.0, rel=1e-5)


def test_reference_gradients_gradcheck_float64():
    w = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    u = F.normalize(torch.randn(4, dtype=torch.float64), dim=0)
    v = F.normalize(torch.randn(18, dtype=torch.float64), dim=0)

    def f(w):  # with 0 iterations u, v are fixed, so the formula (u, v held constant) is the exact derivative
        out, _ = spectral_normalize_all([w], [u.clone()], [v.clone()], 0, 1e-12, [1])
        return out[0]
    assert torch.autograd.gradcheck(f, (w,))
    assert torch.autograd.gradgradcheck(f, (w,))


def test_eval_mode_uses_stored_vectors_without_iterating(backend):
    w = torch.randn(9, 14)
    us, vs = fresh_vectors([w], [0])
    u0, v0 = us[0].clone(), vs[0].clone()
    sigma = power_iteration_all([w], us, vs, 0)
    torch.testing.assert_close(us[0], u0, rtol=0, atol=0)
    torch.testing.assert_close(vs[0], v0, rtol=0, atol=0)
    torch.testing.assert_close(sigma[0], u0 @ w @ v0, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the drop-in parametrization


def make_net(sn, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LeakyReLU(0.2), nn.ConvTranspose2d(8, 5, 3), nn.Flatten(),
                        nn.Linear(5 * 7 * 7, 11))
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            sn(m)
    return net


def train_steps(net, steps, seed):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(steps):
        x = torch.randn(4, 3, 7, 7, generator=g)
        y = net(x)
        opt.zero_grad()
        (y.square().mean()).backward()
        opt.step()
        outs.append(y.detach())
    return outs


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_parametrization_matches_torch_over_training(name):
    ref = make_net(torch.nn.utils.parametrizations.spectral_norm, seed=3)
    with backend_ctx(name):
        ours = make_net(spectral_norm, seed=3)   # same RNG use: same u, v at init
        assert ref.state_dict().keys() == ours.state_dict().keys()
        assert_close_lists(list(ours.state_dict().values()), list(ref.state_dict().values()), rtol=1e-5, atol=1e-6)
        got = train_steps(ours, 4, seed=9)
    want = train_steps(ref, 4, seed=9)
    assert_close_lists(got, want, rtol=1e-4, atol=1e-5)
    assert_close_lists(list(ours.state_dict().values()), list(ref.state_dict().values()), rtol=1e-4, atol=1e-5)
    ours.eval()
    ref.eval()
    x = torch.randn(2, 3, 7, 7)
    with backend_ctx(name):
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_state_dicts_load_both_ways():
    ref = make_net(torch.nn.utils.parametrizations.spectral_norm, seed=1)
    train_steps(ref, 2, seed=2)
    ours = make_net(spectral_norm, seed=5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 7)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x))
    back = make_net(torch.nn.utils.parametrizations.spectral_norm, seed=6)
    train_steps(ours, 2, seed=3)
    back.load_state_dict(ours.state_dict())
    back.eval()
    torch.testing.assert_close(back(x), ours(x))


def test_convert_swaps_torch_parametrizations_and_keeps_training_identical():
    ref = make_net(torch.nn.utils.parametrizations.spectral_norm, seed=4)
    conv = convert(copy.deepcopy(ref))
    kinds = {type(m.parametrizations.weight[0]).__module__ for m in conv if hasattr(m, "parametrizations")}
    assert kinds == {"gankern.nn.spectral_norm"}
    assert conv.state_dict().keys() == ref.state_dict().keys()
    assert_close_lists(train_steps(conv, 3, seed=1), train_steps(ref, 3, seed=1), rtol=1e-4, atol=1e-5)
    assert_close_lists(list(conv.state_dict().values()), list(ref.state_dict().values()), rtol=1e-4, atol=1e-5)


def test_convert_old_hook_spectral_norm_keeps_values():
    torch.manual_seed(0)
    old = nn.Sequential(torch.nn.utils.spectral_norm(nn.Linear(6, 5)), nn.ReLU(),
                        torch.nn.utils.spectral_norm(nn.ConvTranspose2d(5, 4, 1)))
    old[0](torch.randn(2, 6))  # one training step of the hook
    old.eval()
    x = torch.randn(3, 6)
    want = old[2](old[1](old[0](x))[:, :, None, None])
    orig = old[0].weight_orig.detach().clone()
    conv = convert(old)
    torch.testing.assert_close(conv[0].parametrizations.weight.original, orig)
    got = conv[2](conv[1](conv[0](x))[:, :, None, None])
    torch.testing.assert_close(got, want)
    assert "0.parametrizations.weight.0._u" in conv.state_dict()


def test_biggan_style_iterates_v_first_and_eval_does_not_store():
    """style="biggan" (BigGAN-PyTorch's SN): training: v <- n(W^T u), u <- n(W v), sigma = u^T W v, stored, and
    sv0 = sigma; eval: one such step from the stored u on copies."""
    from gankern.nn.spectral_norm import SpectralNorm
    w = torch.randn(7, 4, 3)
    u0 = F.normalize(torch.randn(7), dim=0)
    sn = SpectralNorm.from_vectors(u0, torch.randn(12), w, 2, 0, 1e-12, style="biggan")
    wm = w.reshape(7, 12)
    u = u0
    for _ in range(2):
        v = F.normalize(wm.t() @ u, dim=0)
        u = F.normalize(wm @ v, dim=0)
    torch.testing.assert_close(sn(w), w / (u @ wm @ v), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sn._u, u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sn.sv0[0], u @ wm @ v, rtol=1e-5, atol=1e-6)
    sn.eval()
    stored = sn._u.clone(), sn._v.clone(), sn.sv0.clone()
    v1 = F.normalize(wm.t() @ stored[0], dim=0)
    u1 = F.normalize(wm @ v1, dim=0)
    torch.testing.assert_close(sn(w), w / (u1 @ wm @ v1), rtol=1e-5, atol=1e-6)
    for a, b in zip((sn._u, sn._v, sn.sv0), stored):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="style must be one of"):
        SpectralNorm(w, style="bg")


# ---------------------------------------------------------------------------------------------------------------
# the batched group


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_group_update_equals_per_layer_parametrization(name):
    a = make_net(spectral_norm, seed=7)
    b = copy.deepcopy(a)
    x = torch.randn(3, 3, 7, 7)
    with backend_ctx(name):
        group = SpectralNormGroup(a)
        assert len(group.entries) == 3
        sigmas = group.update()
        ya = a(x)
        yb = b(x)
        ya.sum().backward()
        yb.sum().backward()
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6)
    for name_, mod in (("0.weight", b[0]), ("4.weight", b[4])):
        wm = as_matrix(mod.parametrizations.weight.original, 0)
        sn = mod.parametrizations.weight[0]
        torch.testing.assert_close(sigmas[name_], (sn._u @ wm @ sn._v).float(), rtol=1e-5, atol=1e-6)


def test_group_cache_is_dropped_when_the_weight_changes():
    net = make_net(spectral_norm, seed=8)
    group = SpectralNormGroup(net)
    with group.cached():
        w1 = net[0].weight
        assert net[0].weight is w1           # served from the batched update
    group.update()
    with torch.no_grad():
        net[0].parametrizations.weight.original.mul_(2.0)  # bumps the version counter
    assert net[0].weight is not group.entries[0][3]._group_cache[3]


def test_group_update_under_no_grad_does_not_serve_training_and_copies_drop_the_cache():
    net = make_net(spectral_norm, seed=8)
    group = SpectralNormGroup(net)
    with torch.no_grad():
        group.update()
    net(torch.randn(2, 3, 7, 7)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    group.update()
    twin = copy.deepcopy(net)  # e.g. G_ema = deepcopy(G)
    assert all(m.parametrizations.weight[0]._group_cache is None for m in twin if hasattr(m, "parametrizations"))


def test_group_takes_channels_last_weights():
    net = make_net(spectral_norm, seed=2)
    ref = copy.deepcopy(net)
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 7, 7)
    SpectralNormGroup(net).update()
    torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-6)


def test_group_needs_spectral_norms():
    with pytest.raises(ValueError, match="no gankern spectral norm"):
        SpectralNormGroup(nn.Linear(3, 3))


# ---------------------------------------------------------------------------------------------------------------
# torch.compile and bad input


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_torch_compile_fullgraph_traces_through_the_ops(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    with backend_ctx(name):
        lin = spectral_norm(nn.Linear(13, 6))
        lin_ref = copy.deepcopy(lin)
        compiled = torch.compile(lin, fullgraph=True, backend="aot_eager")
        x = torch.randn(5, 13)
        y = compiled(x)
        y_ref = lin_ref(x)
        y.sum().backward()
        y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lin.parametrizations.weight.original.grad,
                               lin_ref.parametrizations.weight.original.grad, rtol=1e-4, atol=1e-6)


def test_forced_backend_that_cannot_run_says_why():
    w = torch.randn(4, 4, dtype=torch.float64)
    with backend_ctx("triton"):
        with pytest.raises(gankern.BackendUnavailable, match="take torch.float32"):
            power_iteration_all([w], [torch.randn(4, dtype=torch.float64)], [torch.randn(4, dtype=torch.float64)])
    with gankern.use_backend("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="needs CUDA tensors"):
            power_iteration_all([w.float()], [torch.randn(4)], [torch.randn(4)])


BAD_CASES = {
    "not a list": lambda w, u, v: ((w, [u], [v]), {}),
    "empty": lambda w, u, v: (([], [], []), {}),
    "length mismatch": lambda w, u, v: (([w], [u, u], [v]), {}),
    "1-d weight": lambda w, u, v: (([w[0]], [u], [v]), {}),
    "u wrong size": lambda w, u, v: (([w], [u[:-1]], [v]), {}),
    "v wrong dtype": lambda w, u, v: (([w], [u], [v.double()]), {}),
    "u 2-d": lambda w, u, v: (([w], [u[:, None]], [v]), {}),
    "non-contiguous weight": lambda w, u, v: (([w.t()], [v], [u]), {}),
    "int weight": lambda w, u, v: (([w.long()], [u], [v]), {}),
    "bad dim": lambda w, u, v: (([w], [u], [v]), {"dims": [2]}),
    "negative iterations": lambda w, u, v: (([w], [u], [v]), {"n_power_iterations": -1}),
    "zero eps": lambda w, u, v: (([w], [u], [v]), {"eps": 0.0}),
    "not a tensor": lambda w, u, v: ((["w"], [u], [v]), {}),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(BAD_CASES)), h=st.integers(2, 9), w=st.integers(2, 9),
       name=st.sampled_from(CPU_BACKENDS))
def test_bad_input_raises_before_launch(case, h, w, name):
    if case == "non-contiguous weight" and h == w:
        w += 1
    weight = torch.randn(h, w)
    u, v = torch.randn(h), torch.randn(w)
    args, kwargs = BAD_CASES[case](weight, u, v)
    with backend_ctx(name):
        for fn in (power_iteration_all, spectral_normalize_all):
            with pytest.raises((ValueError, TypeError)):
                fn(*args, **kwargs)


def test_benchmark_workload_is_biggan128_of_gpu_md():
    import importlib.util
    import math
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_spectral_norm.py")
    spec = importlib.util.spec_from_file_location("bench_spectral_norm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shapes = mod.biggan128_shapes(96)
    assert len(shapes) == 57
    assert sum(math.prod(s) for s in shapes) == pytest.approx(160.5e6, rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu, on the device machine; bench/gpu_check.sh runs these)

# Relative to the largest element of the float64 reference (an absolute tolerance fixed per dtype would be larger
# than W / sigma and dW themselves at BigGAN sizes, sigma ~ 1e2: any bf16 value would pass). fp32: sums of up to
# 5e5 products in fp32 where the reference sums in fp64, ~sqrt(n) * 6e-8 = 4e-5. fp16 / bf16: u and v are stored in
# the weights' dtype after each of the 2 iterations and the outputs are rounded to it (2^-11 / 2^-8 relative each),
# so sigma, W / sigma and dW carry a few roundings: 4 and 8 times the unit roundoff.
GPU_RTOL = {torch.float32: 1e-4, torch.float16: 4 * 2.0 ** -11, torch.bfloat16: 8 * 2.0 ** -8}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_gpu_kernels_match_reference(name, dtype):
    shapes = [(97, 45, 3, 3), (3, 96, 3, 3), (1, 1531), (1531, 148), (24576, 20), (130, 70, 1, 1), (5, 33, 3, 3)]
    dims = [0, 1, 0, 0, 0, 0, 1]
    weights = [torch.randn(s, device="cuda").to(dtype) for s in shapes]
    us, vs = fresh_vectors([w.cpu().float() for w in weights], dims)
    us = [u.cuda().to(dtype) for u in us]
    vs = [v.cuda().to(dtype) for v in vs]
    ws = [w.clone().requires_grad_(True) for w in weights]
    u1, v1 = [u.clone() for u in us], [v.clone() for v in vs]
    poison_allocator(sum(w.numel() for w in weights) * 4)
    with gankern.use_backend(name):
        outs, sig = spectral_normalize_all(ws, u1, v1, 2, 1e-12, dims)
    grads = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(outs, grads)
    wr = [w.detach().double().requires_grad_(True) for w in weights]
    u2, v2 = [u.double() for u in us], [v.double() for v in vs]
    with gankern.use_backend("ref"):
        outs_r, sig_r = spectral_normalize_all(wr, u2, v2, 2, 1e-12, dims)
    torch.autograd.backward(outs_r, [g.double() for g in grads])
    rtol = GPU_RTOL[dtype]
    for o, r in zip(outs, outs_r):
        assert torch.isfinite(o).all()
        assert_close_scaled(o, r, rtol)
    torch.testing.assert_close(sig.double(), sig_r, rtol=rtol, atol=0)
    for a, b in zip(u1 + v1, u2 + v2):
        assert_close_scaled(a, b, rtol)
    for w, r in zip(ws, wr):
        assert_close_scaled(w.grad, r.grad, rtol)


@pytest.mark.gpu
def test_gpu_parametrization_matches_torch_and_group_and_compile():
    ref = make_net(torch.nn.utils.parametrizations.spectral_norm, seed=3).cuda()
    ours = make_net(spectral_norm, seed=3).cuda()
    x = torch.randn(4, 3, 7, 7, device="cuda")
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    group = SpectralNormGroup(ours)
    with group.cached():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    compiled = torch.compile(ours, fullgraph=True)
    torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-5)


def test_custom_ops_pass_opcheck():
    """Schema, fake and autograd registrations (the backend is an argument of the ops; the kernel backends' traced
    paths, sn_normalize_backward included, are exercised by the torch.compile test)."""
    from gankern.ops.spectral_norm import _sn_normalize, _sn_power_iteration
    w = [torch.randn(5, 4), torch.randn(3, 2, 3)]
    u, v = fresh_vectors(w, [0, 1])
    torch.library.opcheck(_sn_power_iteration.op, (w, u, v, [0, 1], 1, 1e-12, "ref"))
    sigma, buf = _sn_power_iteration(w, u, v, [0, 1], 1, 1e-12, "ref")  # buf: u and v of every layer, flat
    torch.library.opcheck(_sn_normalize.op, ([x.requires_grad_(True) for x in w], sigma, buf, [0, 1], "ref"))
