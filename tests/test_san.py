"""San family: the reference constants against the paper's definition (the gain of each kernel's circular
convolution, from its dense matrix) and the eager FFT formula; the Triton kernel (interpreter) against the
reference on random sizes, odd shapes, many layers at once, non-contiguous and expanded weights, NaN-poisoned
outputs, NaN / Inf inputs and gradients; the parametrization (schedule, state_dict, input-size hook, circular
padding) and ``convert(model, to="san")``; bad input."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import gankern
from gankern.nn.san import SparsityAwareNorm
from gankern.nn.utils import sparsity_aware_norm, spectral_norm
from gankern.ops import san
from gankern.ops.san import san_constant, san_constants

from conftest import backend_ctx, poison


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every kernel output starts as NaN, so an element the kernel does not write fails the comparison."""
    monkeypatch.setattr(san, "_empty", lambda *a, **k: poison(torch.empty(*a, **k)))


def fft_formula(w, size):
    """The paper's constant, written from its definition with torch.fft: the kernels zero-padded to the input size,
    the largest complex magnitude of their 2-D DFT (kernels no larger than the input; Linear: 1 x 1)."""
    if w.ndim == 2:
        return w.abs().max()
    H, W = size
    padded = F.pad(w, (0, W - w.shape[3], 0, H - w.shape[2]))
    return torch.fft.fft2(padded).abs().amax()


def circular_gain(k, H, W):
    """The largest singular value of the dense (H W x H W) matrix of circular convolution with the kernel k:
    the sum over taps of k[a, b] times the permutation that shifts an image by (a, b) (with wrap-around)."""
    eye = torch.eye(H * W, dtype=torch.float64).view(H * W, H, W)
    M = sum(k[a, b].double() * eye.roll((a, b), (1, 2)) for a in range(k.shape[0]) for b in range(k.shape[1]))
    return torch.linalg.matrix_norm(M.reshape(H * W, H * W), ord=2)


def run(name, weights, sizes):
    with backend_ctx(name):
        return san_constants(weights, sizes)


# ---------------------------------------------------------------------------------------------------------------
# the reference is the paper's constant

@pytest.mark.parametrize("kh,kw,H,W", [(3, 3, 5, 4), (4, 4, 4, 4), (1, 1, 3, 3), (3, 2, 2, 3), (5, 3, 3, 3)])
def test_ref_is_the_largest_gain_of_a_kernels_circular_convolution(kh, kw, H, W):
    """Kernels larger than the input (5 x 3 on 3 x 3) wrap around, as circular convolution does."""
    w = torch.randn(3, 2, kh, kw, dtype=torch.float64)
    expected = max(circular_gain(w[o, i], H, W) for o in range(3) for i in range(2))
    torch.testing.assert_close(run("ref", [w], [(H, W)]), expected.reshape(1))


def test_ref_matches_the_eager_fft_formula_and_linear_is_max_abs():
    w, lin = torch.randn(6, 5, 3, 3), torch.randn(7, 9)
    torch.testing.assert_close(run("ref", [w, lin], [(16, 11), None]),
                               torch.stack([fft_formula(w, (16, 11)), lin.abs().max()]))


# ---------------------------------------------------------------------------------------------------------------
# triton (interpreter) against the reference

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 40), st.integers(1, 5), st.integers(1, 5),
                                 st.integers(1, 13), st.integers(1, 13), st.booleans()), min_size=1, max_size=3),
       seed=st.integers(0, 2 ** 31 - 1))
def test_triton_matches_ref_on_random_layers(layers, seed):
    """Random counts of pairs (below and above the 32-pair block), kernel sizes (also larger than the input),
    odd input sizes (frequencies below and above the 64-frequency block), Linear and Conv2d mixed, one launch."""
    g = torch.Generator().manual_seed(seed)
    weights, sizes = [], []
    for O, I, kh, kw, H, W, linear in layers:
        weights.append(torch.randn((O, I) if linear else (O, I, kh, kw), generator=g))
        sizes.append(None if linear else (H, W))
    torch.testing.assert_close(run("triton", weights, sizes), run("ref", weights, sizes), rtol=2e-5, atol=1e-5)


def test_triton_takes_non_contiguous_and_expanded_weights():
    base = torch.randn(9, 7, 3, 3)
    weights = [base.transpose(0, 1),                            # (7, 9, 3, 3) non-contiguous
               base[::2].permute(0, 1, 3, 2),                      # strided, permuted taps
               torch.randn(1, 5, 3, 3).expand(6, 5, 3, 3),         # expanded (stride 0)
               torch.randn(11, 4)[:, ::2],                         # strided Linear
               torch.randn(1, 3).expand(4, 3)]                      # expanded Linear
    sizes = [(7, 6), (5, 9), (8, 8), None, None]
    torch.testing.assert_close(run("triton", weights, sizes), run("ref", [w.contiguous() for w in weights], sizes),
                               rtol=2e-5, atol=1e-5)


def test_triton_fp16_weights_match_ref_of_the_same_values():
    w = torch.randn(20, 3, 3, 3).half()
    torch.testing.assert_close(run("triton", [w], [(9, 7)]), run("ref", [w.float()], [(9, 7)]), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ref", "triton"])
def test_nan_and_inf_propagate(name):
    good = torch.randn(5, 4, 3, 3)
    w = good.clone()
    w[3, 1, 2, 0] = float("nan")
    s = run(name, [good, w, torch.randn(3, 3)], [(6, 6), (6, 6), None])
    assert torch.isfinite(s[[0, 2]]).all() and s[1].isnan()
    w[3, 1, 2, 0] = float("inf")
    s = run(name, [w], [(6, 6)])
    assert not torch.isfinite(s).any()
    lin = torch.randn(4, 4)
    lin[1, 2] = float("nan")
    assert run(name, [lin], [None]).isnan().all()


def fft_constant_grad(w, size):
    """d fft_formula / dw by autograd through torch.fft (float64), with the gap between the largest magnitude and
    the next one that is not its conjugate twin (a near tie makes the maximizer, hence the gradient, ambiguous)."""
    w = w.detach().double().requires_grad_(True)
    s = fft_formula(w, size)
    (g,) = torch.autograd.grad(s, w)
    H, W = size if w.ndim == 4 else (1, 1)
    mags = torch.fft.fft2(F.pad(w.detach(), (0, W - w.shape[-1], 0, H - w.shape[-2])) if w.ndim == 4
                          else w.detach()[..., None, None]).abs().flatten().sort(descending=True).values
    distinct = mags[(s.detach() - mags) > 1e-9]
    gap = float(s.detach() - distinct[0]) if len(distinct) else float("inf")
    return g, gap


@pytest.mark.parametrize("name", ["ref", "triton"])
def test_gradient_matches_autograd_through_the_fft(name):
    g = torch.Generator().manual_seed(5)
    checked = 0
    for shape, size in [((6, 5, 3, 3), (7, 5)), ((3, 2, 4, 2), (4, 9)), ((8, 3), None), ((40, 3, 1, 1), (3, 3))]:
        w = torch.randn(shape, generator=g)
        expected, gap = fft_constant_grad(w, size)
        if gap < 1e-3:  # a near tie: float32 may pick the other maximizer; draw another shape instead
            continue
        w2 = torch.randn(shape, generator=g)
        e2, gap2 = fft_constant_grad(w2, size)
        ws = [w.clone().requires_grad_(True), w2.clone().requires_grad_(True)]
        with backend_ctx(name):
            s = san_constants(ws, [size, size])
            grads = torch.autograd.grad(s @ torch.tensor([1.5, -0.5]), ws)
        torch.testing.assert_close(grads[0], 1.5 * expected.float(), rtol=1e-4, atol=1e-5)
        if gap2 >= 1e-3:
            torch.testing.assert_close(grads[1], -0.5 * e2.float(), rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 3


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4),
                                 st.integers(1, 11), st.integers(1, 11), st.booleans()), min_size=1, max_size=3),
       seed=st.integers(0, 2 ** 31 - 1))
def test_triton_maximizer_is_where_the_constant_is_reached(layers, seed):
    """The finishing kernel's (pair, u, v) of each layer: |w^| there (float64 FFT) is the layer's constant, and it
    is ref's maximizer or its conjugate twin when the maximum is clear of the others."""
    g = torch.Generator().manual_seed(seed)
    weights, shapes = [], []
    for O, I, kh, kw, H, W, linear in layers:
        w = torch.randn((O, I) if linear else (O, I, kh, kw), generator=g)
        weights.append(w)
        shapes += [O * I, 1, 1, 1, 1] if linear else [O * I, kh, kw, H, W]
    w_flat = torch.cat([w.reshape(-1) for w in weights])
    s, arg = san._constants_impl(w_flat, shapes, "triton")
    s_ref, arg_ref = san._constants_impl(w_flat, shapes, "ref")
    torch.testing.assert_close(s, s_ref, rtol=2e-5, atol=1e-5)
    for l, (w, H, W) in enumerate(san._layers(w_flat.double(), shapes)):
        mag = san._spectrum_ref(w, H, W)  # [P, H, W]
        pair, u, v = arg[l].tolist()
        assert 0 <= v <= W // 2
        torch.testing.assert_close(mag[pair, u, v].float(), s_ref[l], rtol=2e-5, atol=1e-5)
        top2 = mag.flatten().topk(min(3, mag.numel())).values
        if len(top2) == 3 and top2[0] - top2[2] > 1e-3 * top2[0]:  # one maximum and its twin
            p, ur, vr = arg_ref[l].tolist()
            assert (pair, u, v) in ((p, ur, vr), (p, (-ur) % H, (-vr) % W))


def test_triton_gradient_with_nan_and_expanded_upstream_matches_ref():
    """NaN in a pair that is not the maximizer: s is NaN, its gradient (on the pair of the largest magnitude that is
    not NaN, as ref's) finite; the upstream gradient of .sum() comes expanded (stride 0); fp16 weights keep their
    dtype."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 5, 3, 3, generator=g)
    w[0, 0] = 0.01 * w[0, 0]
    w[0, 0, 1, 1] = float("nan")
    base = torch.randn(7, 4, 3, 2, generator=g)
    grads = {}
    for name in ("ref", "triton"):
        ws = [w.clone().requires_grad_(True), base.clone().transpose(0, 1).requires_grad_(True)]
        with backend_ctx(name):
            s = san_constants(ws, [(7, 5), (6, 3)])
            assert s[0].isnan() and s[1].isfinite()
            grads[name] = torch.autograd.grad(s.sum(), ws)
    for a, b in zip(grads["triton"], grads["ref"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert grads["triton"][0].isfinite().all() and grads["triton"][1].abs().sum() > 0
    wh = base.half().requires_grad_(True)
    with backend_ctx("triton"):
        (gh,) = torch.autograd.grad(san_constant(wh, (6, 3)), wh)
    assert gh.dtype == torch.float16
    wr = base.half().float().requires_grad_(True)
    with backend_ctx("ref"):
        (gr,) = torch.autograd.grad(san_constant(wr, (6, 3)), wr)
    torch.testing.assert_close(gh.float(), gr, rtol=2e-3, atol=2e-3)


def test_layout_cache_still_checks_a_new_call():
    """A layout seen before skips the checks; a call that differs in dtype, device, size or shape is checked."""
    w = torch.randn(4, 3, 3, 3)
    san_constants([w, torch.randn(2, 2)], [(5, 5), None])
    with pytest.raises(TypeError, match="dtype"):
        san_constants([w, torch.randn(2, 2).double()], [(5, 5), None])
    with pytest.raises(ValueError, match="positive ints"):
        san_constants([w, torch.randn(2, 2)], [(0, 5), None])
    with pytest.raises(ValueError, match="is needed"):
        san_constants([w, torch.randn(2, 2)], [None, None])
    assert san_constants(iter([w]), [[5, 5]]).shape == (1,)  # a generator, unhashable sizes


def test_opcheck():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.library.opcheck(san._constants_op.op, (w.reshape(-1), [12, 3, 3, 5, 6], "ref"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_compiles_through_torch_compile():
    w = torch.randn(4, 3, 3, 3)
    f = torch.compile(lambda w: san_constant(w, (6, 5)) * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(f(w), 2 * fft_formula(w, (6, 5)))


@pytest.mark.parametrize("call,message", [
    (lambda: san_constants([]), "at least one"),
    (lambda: san_constant(torch.randn(3, 3, 3)), "2 or 4 dimensions"),
    (lambda: san_constant(torch.randn(3, 3, 3, 3)), "is needed for a convolution weight"),
    (lambda: san_constant(torch.randn(3, 3, 3, 3), (0, 4)), "positive ints"),
    (lambda: san_constant(torch.randn(3, 3, 3, 3), (4,)), "pair"),
    (lambda: san_constants([torch.randn(3, 3), torch.randn(3, 3).double()]), "dtype"),
    (lambda: san_constants([torch.randn(3, 3)], [None, None]), "one entry per weight"),
    (lambda: san_constant(torch.zeros(3, 0)), "must not be empty"),
    (lambda: san_constant(torch.randint(0, 3, (3, 3))), "dtype"),
])
def test_bad_input_is_rejected_with_a_message(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# ---------------------------------------------------------------------------------------------------------------
# the parametrization

def test_parametrization_normalizes_by_the_constant_on_the_paper_schedule():
    conv = sparsity_aware_norm(nn.Conv2d(3, 4, 3, padding=1), gain=1.2, update_interval=2, momentum=0.5)
    assert conv.padding_mode == "circular"
    x = torch.randn(2, 3, 8, 6)
    w0 = conv.parametrizations.weight.original.detach().clone()
    c0 = fft_formula(w0, (8, 6))
    conv(x)  # step 0: first update takes the constant as it is
    sanp = conv.parametrizations.weight[0]
    torch.testing.assert_close(sanp.s, (1.2 * c0 + 1e-8).reshape(1))
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(2)
    conv(x)  # step 1: no update
    torch.testing.assert_close(sanp.s, (1.2 * c0 + 1e-8).reshape(1))
    y = conv(x)  # step 2: update with momentum
    expected_s = 0.5 * (1.2 * c0 + 1e-8) + 0.5 * (1.2 * 2 * c0 + 1e-8)
    torch.testing.assert_close(sanp.s, expected_s.reshape(1))
    torch.testing.assert_close(y, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 2 * w0 / expected_s, conv.bias))
    assert int(sanp.steps) == 3 and tuple(sanp.input_size.tolist()) == (8, 6)
    conv.eval()
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(2)
    conv(x)
    torch.testing.assert_close(sanp.s, expected_s.reshape(1))  # eval: no update
    assert int(sanp.steps) == 3


def test_backward_after_later_updates_of_s():
    """D runs on reals and fakes (s updated in between) before one backward, as a GAN's D step does."""
    conv = sparsity_aware_norm(nn.Conv2d(2, 3, 3, padding=1), update_interval=1)
    x = torch.randn(2, 2, 6, 6)
    loss = conv(x).square().sum() + conv(x + 1).square().sum() + conv(x - 1).sum()
    loss.backward()
    assert torch.isfinite(conv.parametrizations.weight.original.grad).all()


def test_compiled_module_keeps_the_schedule():
    conv = sparsity_aware_norm(nn.Conv2d(2, 3, 3, padding=1), update_interval=2)
    f = torch.compile(conv, backend="eager")
    x = torch.randn(1, 2, 5, 5)
    for step in range(4):
        w = conv.parametrizations.weight.original.detach().clone()
        y = f(x)
        s = conv.parametrizations.weight[0].s
        if step % 2 == 0:
            torch.testing.assert_close(s, fft_formula(w, (5, 5)).reshape(1) + 1e-8)
        torch.testing.assert_close(y, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w / s, conv.bias))
        with torch.no_grad():
            conv.parametrizations.weight.original.add_(0.1)
    assert int(conv.parametrizations.weight[0].steps) == 4


def test_group_updates_all_layers_in_one_launch_with_the_layers_schedule(monkeypatch):
    import copy
    from gankern.nn import san as nn_san
    torch.manual_seed(0)
    model = nn.Sequential(sparsity_aware_norm(nn.Conv2d(2, 4, 3, padding=1), input_size=(6, 6)), nn.ReLU(),
                          sparsity_aware_norm(nn.Conv2d(4, 4, 4, 2, 1), update_interval=3, momentum=0.5),
                          nn.Flatten(), sparsity_aware_norm(nn.Linear(36, 1), gain=1.3))
    alone = copy.deepcopy(model)
    x = torch.randn(2, 2, 6, 6)
    alone(x)
    model(x)   # the second conv learns its input size
    group = nn_san.SANGroup(model)
    calls = []
    monkeypatch.setattr(nn_san, "san_constant", lambda *a: calls.append("one") or san.san_constant(*a))
    monkeypatch.setattr(nn_san, "san_constants", lambda *a: calls.append("all") or san.san_constants(*a))
    for step in range(5):
        with torch.no_grad():
            for m in (model, alone):
                for p in m.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(step)))
        n = group.update()
        torch.testing.assert_close(model(x), alone(x))
        for a, b in zip(model.modules(), alone.modules()):
            if isinstance(a, SparsityAwareNorm):
                torch.testing.assert_close(a.s, b.s)
        assert n == [0, 2, 1, 2, 0][step]   # counters at step + 1: interval 2 at steps 1, 3; interval 3 at step 2
    assert calls.count("all") == 3 and calls.count("one") == 5   # the 5 per-layer updates are all the copy's


def test_gradient_reaches_the_original_weight_and_s_is_a_constant():
    lin = sparsity_aware_norm(nn.Linear(5, 3))
    x = torch.randn(4, 5)
    lin(x).square().sum().backward()
    s = lin.parametrizations.weight[0].s
    w = lin.parametrizations.weight.original
    expected = torch.autograd.grad((F.linear(x, w / s.detach(), lin.bias)).square().sum(), w)[0]
    torch.testing.assert_close(w.grad, expected)


def test_state_dict_round_trip_keeps_the_schedule():
    make = lambda: sparsity_aware_norm(nn.Conv2d(2, 3, 3, padding=1), update_interval=3)  # noqa: E731
    a = make()
    for _ in range(4):
        a(torch.randn(1, 2, 5, 7))
    sd = a.state_dict()
    assert {"parametrizations.weight.original", "parametrizations.weight.0.s", "parametrizations.weight.0.steps",
            "parametrizations.weight.0.input_size", "bias"} == set(sd)
    b = make()
    b.load_state_dict(sd)
    p = b.parametrizations.weight[0]
    assert p._steps == 4 and p._size == (5, 7)
    torch.testing.assert_close(b(torch.ones(1, 2, 5, 7)), a(torch.ones(1, 2, 5, 7)))


def test_fixed_input_size_and_unknown_size_message():
    conv = sparsity_aware_norm(nn.Conv2d(2, 2, 3, padding=1), input_size=(16, 16), circular=False)
    assert conv.padding_mode == "zeros"
    conv(torch.randn(1, 2, 4, 4))
    torch.testing.assert_close(conv.parametrizations.weight[0].s,
                               fft_formula(conv.parametrizations.weight.original.detach(), (16, 16)).reshape(1) + 1e-8)
    with pytest.raises(RuntimeError, match="input size"):
        sparsity_aware_norm(nn.Conv2d(2, 2, 3)).weight
    with pytest.raises(TypeError, match="Conv2d and nn.Linear"):
        sparsity_aware_norm(nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match="update_interval"):
        sparsity_aware_norm(nn.Linear(2, 2), update_interval=0)
    with pytest.raises(ValueError, match="momentum"):
        sparsity_aware_norm(nn.Linear(2, 2), momentum=1.0)


def test_triton_backend_drives_the_parametrization():
    conv = sparsity_aware_norm(nn.Conv2d(4, 5, 3, padding=1))
    x = torch.randn(2, 4, 9, 7)
    with backend_ctx("triton"):
        conv(x)
    torch.testing.assert_close(conv.parametrizations.weight[0].s,
                               fft_formula(conv.parametrizations.weight.original.detach(), (9, 7)).reshape(1) + 1e-8,
                               rtol=2e-5, atol=1e-5)


def test_convert_to_san_swaps_spectral_norm_keeping_weights():
    def make():
        torch.manual_seed(0)
        return nn.Sequential(torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4, 3, padding=1)),
                             nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(4, 4, 4, 2, 1)), nn.Flatten(),
                             torch.nn.utils.spectral_norm(nn.Linear(4 * 4 * 4, 1)), nn.Embedding(3, 2))

    model = make()
    originals = [model[0].parametrizations.weight.original.detach().clone(),
                 model[2].parametrizations.weight.original.detach().clone(), model[4].weight_orig.detach().clone()]
    model = gankern.nn.convert(model, to="san", gain=1.1)
    for i, w in zip((0, 2), originals):
        p = model[i].parametrizations.weight
        assert [type(m) for m in p] == [SparsityAwareNorm] and p[0].gain == 1.1
        torch.testing.assert_close(p.original, w)
    assert type(model[4].parametrizations.weight[0]).__name__ == "SpectralNorm"   # a Linear keeps SN by default
    y = model[:5](torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    assert model[2].parametrizations.weight[0]._size == (8, 8) and model[2].padding_mode == "circular"
    assert not parametrize.is_parametrized(model[5])
    model = gankern.nn.convert(make(), to="san", linear=True)
    assert isinstance(model[4].parametrizations.weight[0], SparsityAwareNorm)
    torch.testing.assert_close(model[4].parametrizations.weight.original, originals[2])
    with pytest.raises(ValueError, match="to must be one of"):
        gankern.nn.convert(model, to="sn")


def test_bench_san_quick_runs():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_san.py")
    spec = importlib.util.spec_from_file_location("bench_san", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run(quick=True)
    assert {r["backend"] for r in rows} >= {"eager", "torch.compile", "ref"} and len(rows) % 3 == 0
    for r in rows:
        assert r["family"] == "san" and r["ms"] is not None and r["ms"] > 0 and r["floor_ms"] > 0, r
    weights, sizes = mod.model_layers(16, 8, torch.device("cpu"))
    assert len(weights) == 7 and sizes[0] == (16, 16) and sizes[-1] == (1, 1)
    torch.testing.assert_close(mod.eager_constants(weights, sizes), san_constants(weights, sizes))


# ---------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_gpu_triton_matches_ref_many_layers(dtype):
    """Model-sized layers in one launch (kernel pairs and frequencies many blocks each), weights drawn fresh,
    non-contiguous and expanded ones included; the reference sees the same (rounded) values in fp32."""
    from conftest import poison_allocator
    weights = [torch.randn(256, 128, 3, 3, device="cuda").transpose(0, 1), torch.randn(64, 3, 4, 4, device="cuda"),
               torch.randn(1, 64, 1, 1, device="cuda").expand(97, 64, 1, 1), torch.randn(10, 1000, device="cuda")]
    weights = [w.to(dtype) for w in weights]
    sizes = [(32, 32), (65, 33), (16, 16), None]
    poison_allocator(1 << 26)
    got = run("triton", weights, sizes)
    want = run("ref", [w.float() for w in weights], sizes)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)   # fp32 arithmetic for every input dtype


@pytest.mark.gpu
def test_gpu_large_layer_without_the_spectrum():
    """512 x 512 3 x 3 at 64 x 64 (the eager spectrum would be 8.6 GB): under 64 MB of extra memory, and equal to
    the reference computed in slices of output channels."""
    w = torch.randn(512, 512, 3, 3, device="cuda") * 0.05
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    got = run("triton", [w], [(64, 64)])
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < 64 * 2 ** 20
    want = torch.stack([run("ref", [w[i:i + 32]], [(64, 64)])[0] for i in range(0, 512, 32)]).max()
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-5)


def test_compare_script_runs_both_norms_with_the_same_seed_and_plots(tmp_path, monkeypatch):
    """bench/compare_san.py's plumbing, with the training replaced by a stub that records its command line."""
    import importlib.util
    import json
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "compare_san.py")
    spec = importlib.util.spec_from_file_location("compare_san", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen = []

    def fake_main(argv):
        seen.append(argv)
        run = os.path.join(argv[argv.index("--outdir") + 1], "00000-run")
        os.makedirs(run)
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            for k in range(3):
                f.write(json.dumps({"step": k, "kimg": k * 0.5, "fid_digits": 50.0 - k - ("true" in argv[-1])}) + "\n")
        return 0

    monkeypatch.setattr(mod.cli, "main", fake_main)
    assert mod.main(["--config", "dcgan-san", "--kimg", "1", "--seeds", "3", "--out", str(tmp_path)]) == 0
    assert [a[-1] for a in seen] == ["model.d_san=false", "model.d_san=true"]
    assert all(a[a.index("--seed") + 1] == "3" and a[a.index("--config") + 1] == "dcgan-san" for a in seen)
    result = json.load(open(tmp_path / "compare.json"))
    assert result["san-seed3"][-1]["fid_digits"] == 47.0 and (tmp_path / "compare.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------------------
# the trainer's SAN configs

@pytest.mark.parametrize("config", ["dcgan-san", "sngan-san"])
def test_san_configs_train_on_digits_and_steer_their_generator(tmp_path, config, capsys):
    """10 steps of each config (narrow nets) through ``gankern train``: finite losses, SAN on D's convolutions
    (spectral norm left on its head); then ``gankern steer`` on the run's checkpoint."""
    import json
    import os

    from gankern.cli import main
    from gankern.train.config import named_config
    from gankern.train.recipes import RECIPES, Env
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", config, "--data", "digits", "--res", "16", "--kimg", "0.64", "--batch", "64",
                     "--snap", "10", "--metrics", "none", "--outdir", str(tmp_path), "-q", "--set",
                     "train.log_steps=5", "--set", "model.g_ch=8", "--set", "model.d_ch=8"]) == 0
    finally:
        torch.set_num_threads(threads)
    (run,) = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path)]
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    losses = [v for r in rows for k, v in r.items() if k.endswith("loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses))), rows
    cfg = named_config(config)
    D = RECIPES[cfg.recipe](cfg.options, Env(torch.device("cpu"), 0, 1, 0, 1, 16, 1, 0)).nets["D"]
    kinds = {type(m.parametrizations.weight[0]).__name__ for m in D.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == {"SparsityAwareNorm"}
    head = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert head and all(type(m.parametrizations.weight[0]).__name__ == "SpectralNorm" for m in head)
    out = str(tmp_path / "walk.png")
    assert main(["steer", "--run", run, "--transform", "shift_y", "--path", "nonlinear", "--steps", "3",
                 "--out", out]) == 0
    assert os.path.getsize(out) > 0
