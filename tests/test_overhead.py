"""One way to register an op (issue 13; timings are bench/bench_overhead.py's, not tests): every torch.library op of
gankern is made by ``ops/_launch.fused_op``, every public op with kernels runs through one, and fused_op's three
paths (eager without grad: the impl; eager with grad: an autograd.Function; traced: the custom op) agree."""
import ast
import pathlib

import pytest
import torch

import gankern
from gankern import ops
from gankern.ops import _launch, augment, penalty, resample, san, spectral_norm
from gankern.ops.modulation import demodulation_coefficients

ROOT = pathlib.Path(gankern.__file__).parent
_REGISTERING_CALLS = {"custom_op", "triton_op", "register_autograd", "register_fake", "register_kernel", "Library"}


def _registration_sites(path: pathlib.Path):
    """(line, what) of every torch.library registration or autograd.Function subclass in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in _REGISTERING_CALLS:
                yield node.lineno, name
        elif isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("Function") for b in node.bases):
            yield node.lineno, f"class {node.name}"


def test_only_fused_op_registers_ops():
    sites = {str(p.relative_to(ROOT)): list(_registration_sites(p)) for p in ROOT.rglob("*.py")}
    outside = {p: s for p, s in sites.items() if s and p != "ops/_launch.py"}
    assert not outside, f"ops registered outside ops/_launch.fused_op: {outside}"
    assert sites["ops/_launch.py"], "fused_op itself registers the ops"


def test_every_family_op_is_in_the_registry():
    families = ("modulation", "resample", "minibatch", "penalty", "spectral_norm", "san", "augment")
    found = {}
    for fam in families:
        mod = getattr(ops, fam)
        for name, v in vars(mod).items():
            if hasattr(v, "op") and callable(v):
                found[f"{fam}.{name}"] = v
    assert {f.split(".")[0] for f in found} == set(families)
    for where, fn in found.items():
        assert _launch.REGISTRY.get(fn.__name__) is fn, f"{where} was not made by fused_op"
        assert hasattr(torch.ops.gankern, fn.__name__)


def _public_calls():
    """(name, fn) of each public op that has kernels, on tiny inputs (run on the triton backend)."""
    x = torch.randn(2, 3, 5, 5)
    f = resample.setup_filter([1, 3, 3, 1])
    w, s = torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    xr = torch.randn(2, 3, 4, 4, requires_grad=True)
    ws = torch.randn(2, 2, 6, requires_grad=True)
    img = (ws.sum(1) @ torch.randn(6, 48)).view(2, 3, 4, 4)
    sw, su, sv = [torch.randn(4, 3)], [torch.randn(4)], [torch.randn(3)]
    return {
        "bias_act": lambda: ops.bias_act(x, torch.randn(3), act="lrelu"),
        "adain": lambda: ops.adain(x, torch.randn(2, 3), torch.randn(2, 3)),
        "instance_norm": lambda: ops.instance_norm(x, torch.randn(3), torch.randn(3), act="lrelu"),
        "noise_bias_act": lambda: ops.noise_bias_act(x, torch.randn(2, 1, 5, 5), 0.5),
        "demodulation_coefficients": lambda: demodulation_coefficients(w, s),
        "modulated_conv2d": lambda: ops.modulated_conv2d(x, w, s, padding=1),
        "upfirdn2d": lambda: ops.upfirdn2d(x, f, up=2),
        "upsample2d": lambda: ops.upsample2d(x, f),
        "downsample2d": lambda: ops.downsample2d(x, f),
        "filter2d": lambda: ops.filter2d(x, f),
        "conv2d_resample": lambda: resample.conv2d_resample(x, w, f, down=2),
        "minibatch_discrimination": lambda: ops.minibatch_discrimination(torch.randn(3, 4), torch.randn(4, 6), 2, 3),
        "minibatch_discrimination_pairs": lambda: ops.minibatch_discrimination_pairs(torch.randn(3, 2, 3)),
        "minibatch_stddev": lambda: ops.minibatch_stddev(x, 2),
        "grad_norm_penalty": lambda: ops.grad_norm_penalty(torch.randn(2, 5)),
        "interpolate": lambda: penalty.interpolate(x, x, torch.rand(2)),
        "r1_penalty": lambda: ops.r1_penalty(xr.square().flatten(1).sum(1), xr),
        "gradient_penalty": lambda: ops.gradient_penalty(lambda v: v.square().flatten(1).sum(1), x, x),
        "path_length_penalty": lambda: ops.path_length_penalty(img, ws, torch.zeros(())),
        "power_iteration_all": lambda: spectral_norm.power_iteration_all(sw, su, sv),
        "spectral_normalize_all": lambda: spectral_norm.spectral_normalize_all(sw, su, sv),
        "san_constants": lambda: san.san_constants([w], [(5, 5)]),
        "san_constant": lambda: san.san_constant(w, (5, 5)),
        "affine_grid_sample": lambda: augment.affine_grid_sample(x, torch.eye(2, 3).expand(2, 2, 3)),
        "color_transform": lambda: augment.color_transform(x, torch.eye(4).expand(2, 4, 4)),
    }


@pytest.mark.parametrize("name", sorted(_public_calls()))
def test_every_public_op_runs_through_fused_op(name, monkeypatch):
    """Each module-level fused op is wrapped to count its calls; the public op must make at least one."""
    calls = []
    for fam in ("modulation", "resample", "minibatch", "penalty", "spectral_norm", "san", "augment"):
        mod = getattr(ops, fam)
        for attr, v in list(vars(mod).items()):
            if _launch.REGISTRY.get(getattr(v, "__name__", None)) is v:
                monkeypatch.setattr(mod, attr, lambda *a, _v=v: calls.append(_v.__name__) or _v(*a))
    with gankern.use_backend("triton"):
        _public_calls()[name]()
    assert calls, f"{name} ran no op registered by fused_op"


def _scaled_cat_impl(xs: list[torch.Tensor], s: torch.Tensor, k: float) -> torch.Tensor:
    return torch.cat([x.reshape(-1) for x in xs]) * s * k


def _scaled_cat_fake(xs, s, k):
    return xs[0].new_empty(sum(x.numel() for x in xs))


def _scaled_cat_setup(ctx, inputs, output):
    xs, s, k = inputs
    ctx.save_for_backward(s, *xs)
    ctx.k = k


def _scaled_cat_backward(ctx, g):
    s, *xs = ctx.saved_tensors
    parts = (g * s * ctx.k).split([x.numel() for x in xs])
    ds = (g * torch.cat([x.reshape(-1) for x in xs]) * ctx.k).sum().reshape(s.shape)
    return [p.view(x.shape) for p, x in zip(parts, xs)], ds, None


_scaled_cat = _launch.fused_op("test_overhead_scaled_cat", _scaled_cat_impl, _scaled_cat_fake, _scaled_cat_setup,
                               _scaled_cat_backward)


def test_fused_op_paths_agree_with_tensor_lists():
    xs = [torch.randn(2, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    s = torch.randn((), requires_grad=True)
    want = torch.autograd.grad(_scaled_cat_impl(xs, s, 1.5).square().sum(), [*xs, s])
    with torch.no_grad():
        out = _scaled_cat(xs, s, 1.5)
    assert out.grad_fn is None
    eager = _scaled_cat(xs, s, 1.5)
    assert "_eager" in type(eager.grad_fn).__name__  # the autograd.Function, not the custom op's dispatch
    got = torch.autograd.grad(eager.square().sum(), [*xs, s])
    traced = torch.autograd.grad(_scaled_cat.op(xs, s, 1.5).square().sum(), [*xs, s])
    for a, b, c in zip(want, got, traced):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)
    torch.library.opcheck(_scaled_cat.op, ([x.detach().requires_grad_(True) for x in xs], s, 1.5))


def _scaled_sum_impl(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x * s, x.sum()  # the second output stands for statistics that only the backward reads


def _scaled_sum_fake(x, s):
    return torch.empty_like(x), x.new_empty(())


def _scaled_sum_setup(ctx, inputs, output):
    x, s = inputs
    ctx.save_for_backward(x, s, output[1])


def _scaled_sum_backward(ctx, g, g_total):  # g_total ignored: None from the eager Function
    x, s, total = ctx.saved_tensors
    return g * s if ctx.needs_input_grad[0] else None, (g * x).sum().reshape(s.shape) + 0 * total


_scaled_sum = _launch.fused_op("test_overhead_scaled_sum", _scaled_sum_impl, _scaled_sum_fake, _scaled_sum_setup,
                               _scaled_sum_backward, aux_outputs=1)


def test_fused_op_aux_outputs_leave_the_eager_function_through_a_list():
    """aux_outputs: every path returns all outputs; the eager Function's node has one output; gradients (and
    needs_input_grad, without the list) agree with the custom op's."""
    x, s = torch.randn(3, 4, requires_grad=True), torch.randn(1, requires_grad=True)
    with torch.no_grad():
        y0, t0 = _scaled_sum(x, s)
    y, t = _scaled_sum(x, s)
    assert "_eager" in type(y.grad_fn).__name__ and not t.requires_grad
    torch.testing.assert_close((y, t), (y0, t0))
    w = torch.randn(3, 4)
    got = torch.autograd.grad((y * w).sum(), (x, s))
    yo, _ = _scaled_sum.op(x, s)
    want = torch.autograd.grad((yo * w).sum(), (x, s))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    (gs,) = torch.autograd.grad((_scaled_sum(x.detach(), s)[0] * w).sum(), (s,))  # x needs no grad
    torch.testing.assert_close(gs, want[1])
    torch.library.opcheck(_scaled_sum.op, (x, s))
