"""Modulation family, instance_norm: the fused instance norm (+ per-channel affine, + activation) on the AdaIN
kernels against its reference twin (values, first and second-order gradients, layouts, NaN/Inf, dtypes, bad
input), its drop-in module gankern.nn.InstanceNorm2d, and the pix2pix / CycleGAN models that use it."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gankern
from gankern.kernels import modulation as kernels
from gankern.models.pix2pix import FusedAct
from gankern.nn import InstanceNorm2d
from gankern.ops.modulation import instance_norm, instance_norm_ref

from conftest import backend_ctx, poison_allocator

ACTS = ("linear", "relu", "lrelu")
# (N, C, H, W): odd sizes, a plane of 2 pixels, more channels than one tile holds
SHAPES = [(2, 3, 5, 7), (3, 5, 1, 2), (1, 37, 3, 3)]
AFFINE = {"weight+bias": (True, True), "weight": (True, False), "none": (False, False)}


@pytest.fixture(params=["one-pass", "two-pass"])
def tiles(request, monkeypatch):
    """The one-pass kernels, or the two-pass ones with small tiles so that the pixel loops take several steps."""
    if request.param == "two-pass":
        monkeypatch.setattr(kernels, "ADAIN_ONE_PASS_MAX_HW", 1)
        monkeypatch.setattr(kernels, "ADAIN_TWO_PASS_TILE", {False: (8, 4), True: (8, 4)})
    return request.param


def grads(fn, x, weight, bias, w, u, **kw):
    """y = fn(x, weight, bias); first-order grads of <y, w> w.r.t. x, weight, bias; second-order grads of <gx, u> +
    |gweight|^2 + <gbias, weight> w.r.t. x, weight, bias and w (the last one runs the d(dy) path)."""
    x, w = (t.detach().clone().requires_grad_(True) for t in (x, w))
    params = [t if t is None else t.detach().clone().requires_grad_(True) for t in (weight, bias)]
    ins = [x] + [t for t in params if t is not None]
    y = fn(x, *params, **kw)
    first = torch.autograd.grad((y * w).sum(), ins, create_graph=True)
    loss2 = (first[0] * u).sum()
    if weight is not None:
        loss2 = loss2 + first[1].square().sum()
    if bias is not None:
        loss2 = loss2 + (first[-1] * (params[0] if weight is not None else 1.0)).sum()
    second = torch.autograd.grad(loss2, ins + [w], allow_unused=True, materialize_grads=True)
    return (y,) + first + second


def affine(C, case, dtype=torch.float32):
    has_w, has_b = AFFINE[case]
    return (torch.randn(C, dtype=dtype) if has_w else None), (torch.randn(C, dtype=dtype) if has_b else None)


def assert_close_to_truth(got, want, truth, label):
    """got (the kernels) against the fp64 truth, within 1e-4 plus twice the fp32 reference's own error (fp32
    rounding is amplified by 1 / std on planes of 2 pixels with |mean| >> std, see test_modulation's adain test)."""
    for i, (g, r, t) in enumerate(zip(got, want, truth)):
        ref_err = float((r.detach().double() - t.detach()).abs().max())
        torch.testing.assert_close(g.double(), t, rtol=1e-4, atol=1e-4 + 2 * ref_err,
                                   msg=lambda m: f"{label}, output {i}: {m}")


# each activation with one form of the affine (all three forms in all)
@pytest.mark.parametrize("act, case", [("linear", "none"), ("relu", "weight"), ("lrelu", "weight+bias")])
def test_instance_norm_matches_reference_to_second_order(tiles, act, case):
    for shape in SHAPES:
        x = torch.randn(shape) * 3 + 10  # a mean far from 0: the two-pass statistics must not cancel
        weight, bias = affine(shape[1], case)
        w, u = torch.randn(shape), torch.randn(shape)
        with backend_ctx("triton"):
            got = grads(instance_norm, x, weight, bias, w, u, act=act)
        want = grads(instance_norm_ref, x, weight, bias, w, u, act=act)
        truth = grads(instance_norm_ref, *(None if t is None else t.double() for t in (x, weight, bias, w, u)),
                      act=act)
        assert_close_to_truth(got, want, truth, f"{shape}")


def test_instance_norm_reference_meaning_and_gradcheck_float64():
    """ref = torch's instance norm (biased variance), affine, then the activation; gradcheck to second order."""
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    xhat = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-3)
    v = xhat * weight[:, None, None] + bias[:, None, None]
    torch.testing.assert_close(instance_norm_ref(x, weight, bias, 1e-3, "lrelu", 0.1), F.leaky_relu(v, 0.1))
    torch.testing.assert_close(instance_norm_ref(x, weight, bias, 1e-3, "relu"), F.relu(v))
    fn = lambda x, w, b: instance_norm_ref(x, w, b, 1e-5, "lrelu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("act", ["tanh", "swish", "elu"])
def test_instance_norm_other_activations_of_the_table(act):
    """Any activation of the table runs fused (without gain), first and second order."""
    x, (weight, bias) = torch.randn(2, 4, 3, 5), affine(4, "weight+bias")
    w, u = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    with backend_ctx("triton"):
        got = grads(instance_norm, x, weight, bias, w, u, act=act)
    truth = grads(instance_norm_ref, *(t.double() for t in (x, weight, bias, w, u)), act=act)
    want = grads(instance_norm_ref, x, weight, bias, w, u, act=act)
    assert_close_to_truth(got, want, truth, act)


LAYOUTS = {
    "channels_last": lambda x: x.to(memory_format=torch.channels_last),
    "strided": lambda x: torch.cat([x, x], 3)[:, :, :, ::2],
    "permuted": lambda x: x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),  # H and W strides swapped
    "expanded": lambda x: x[:1].expand(x.shape),  # one sample broadcast over the batch (stride 0)
}
PARAM_LAYOUTS = {
    "contiguous": lambda t: t,
    "strided": lambda t: torch.stack([t, t], 1)[:, 0],
    "expanded": lambda t: t[:1].expand(t.shape),  # one value broadcast over the channels (stride 0)
}


@pytest.mark.parametrize("param_layout", sorted(PARAM_LAYOUTS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_instance_norm_layouts_of_every_argument(layout, param_layout):
    """Non-contiguous and expanded x, weight and bias: the same values and gradients as ref (gradients flow back
    to the base tensors of the views), and the layout of a dense x is kept."""
    base = torch.randn(3, 5, 4, 7) * 2 + 1
    wb, bb = torch.randn(5), torch.randn(5)

    def run(fn):
        xb, wv, bv = (t.clone().requires_grad_(True) for t in (base, wb, bb))
        x, weight, bias = LAYOUTS[layout](xb), PARAM_LAYOUTS[param_layout](wv), PARAM_LAYOUTS[param_layout](bv)
        y = fn(x, weight, bias, act="lrelu")
        g = torch.autograd.grad((y * torch.linspace(-2, 2, y.numel()).view(y.shape)).sum(), (xb, wv, bv))
        return (y,) + g

    with backend_ctx("triton"):
        got = run(instance_norm)
    want = run(instance_norm_ref)
    for label, g, r in zip(("y", "dx", "dweight", "dbias"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4, msg=lambda m: f"{label}: {m}")
    if layout == "channels_last":
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("act", ACTS)
def test_instance_norm_nan_and_inf_propagate_where_ref_has_them(tiles, act):
    """A NaN or an Inf in x spoils its plane; a NaN or Inf weight or an Inf bias its channel: the same NaN / Inf
    positions as ref in the output and in the gradients, the same values elsewhere."""
    x = torch.randn(3, 4, 3, 5)
    x[0, 1, 1, 2] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    x[2, 0, 2, 4] = -float("inf")
    weight, bias = torch.randn(4), torch.randn(4)
    weight[3] = float("nan")
    weight[1] = -float("inf")
    bias[2] = float("inf")
    bias[0] = -float("inf")
    dy = torch.randn(3, 4, 3, 5)

    def run(fn):
        xx, w, b = (t.clone().requires_grad_(True) for t in (x, weight, bias))
        y = fn(xx, w, b, act=act)
        return (y,) + torch.autograd.grad(y, (xx, w, b), dy)

    with backend_ctx("triton"):
        got = run(instance_norm)
    want = run(instance_norm_ref)
    for label, g, r in zip(("y", "dx", "dweight", "dbias"), got, want):
        assert torch.equal(g.isnan(), r.isnan()), f"{label}: NaN positions differ"
        assert torch.equal(g.isposinf(), r.isposinf()) and torch.equal(g.isneginf(), r.isneginf()), label
        fin = r.isfinite()
        torch.testing.assert_close(g[fin], r[fin], rtol=1e-4, atol=1e-4, msg=lambda m: f"{label}: {m}")
    assert got[0].isnan().any() and got[0].isinf().any()


def test_instance_norm_half_precision_and_empty_batch():
    x = torch.randn(2, 6, 9, 5).half()
    weight, bias = torch.randn(6), torch.randn(6).half()
    with backend_ctx("triton"):
        y = instance_norm(x, weight, bias, act="lrelu")
        empty = instance_norm(torch.randn(0, 6, 3, 3), weight, bias, act="relu")
        xe = torch.randn(0, 6, 3, 3, requires_grad=True)
        we = weight.clone().requires_grad_(True)
        gx, gw = torch.autograd.grad(instance_norm(xe, we).sum(), (xe, we))
    assert y.dtype == torch.float16 and empty.shape == (0, 6, 3, 3)
    assert gx.shape == xe.shape and torch.equal(gw, torch.zeros(6))
    # fp16: the kernel and the ref both compute in fp32 and round once
    torch.testing.assert_close(y, instance_norm_ref(x, weight, bias, act="lrelu"), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["ref", "triton"])
def test_instance_norm_one_pixel_raises_as_torch(name):
    """H * W = 1: torch's instance norm raises ValueError (no variance to normalize by); so does every backend and
    the module, before any launch."""
    x = torch.randn(2, 3, 1, 1)
    with pytest.raises(ValueError, match="spatial element"):
        F.instance_norm(x)
    with pytest.raises(ValueError, match="spatial element"):
        torch.nn.InstanceNorm2d(3)(x)
    with backend_ctx(name):
        with pytest.raises(ValueError, match="spatial element"):
            instance_norm(x)
        with pytest.raises(ValueError, match="spatial element"):
            InstanceNorm2d(3, act="relu")(x)


def _no_launch(*args, **kwargs):
    raise AssertionError("a kernel was launched for bad input")


BAD = {
    "3-d x": (lambda x, w, b: (x[0], w, b), {}),
    "int x": (lambda x, w, b: (x.long(), w, b), {}),
    "x not a tensor": (lambda x, w, b: (x.tolist(), w, b), {}),
    "weight of C - 1": (lambda x, w, b: (x, w[:-1], b), {}),
    "2-d bias": (lambda x, w, b: (x, w, b[None]), {}),
    "int weight": (lambda x, w, b: (x, w.long(), b), {}),
    "bias on another device": (lambda x, w, b: (x, w, b.to("meta")), {}),
    "one pixel": (lambda x, w, b: (x[:, :, :1, :1], w, b), {}),
    "eps 0": (lambda x, w, b: (x, w, b), dict(eps=0.0)),
    "eps a string": (lambda x, w, b: (x, w, b), dict(eps="1e-5")),
    "unknown act": (lambda x, w, b: (x, w, b), dict(act="gelu")),
    "alpha NaN": (lambda x, w, b: (x, w, b), dict(act="lrelu", alpha=float("nan"))),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("name", ["ref", "triton"])
def test_instance_norm_bad_input_raises_before_launch(monkeypatch, case, name):
    monkeypatch.setattr(kernels, "adain_fwd", _no_launch)
    monkeypatch.setattr(kernels, "adain_bwd", _no_launch)
    make, kw = BAD[case]
    args = make(torch.randn(2, 3, 4, 5), torch.randn(3), torch.randn(3))
    with backend_ctx(name):
        with pytest.raises((ValueError, TypeError)):
            instance_norm(*args, **kw)


def test_instance_norm_forced_cuda_says_why():
    with backend_ctx("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="Triton kernels only"):
            instance_norm(torch.randn(1, 2, 3, 3))


def test_instance_norm_custom_ops_pass_opcheck():
    """torch.library.opcheck of gankern::instance_norm and gankern::instance_norm_backward (schema, fake, autograd
    registration, AOT dispatch), with and without the affine, through the Triton kernels."""
    from gankern.ops import modulation as m
    x, dy = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5, requires_grad=True)
    w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    full = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for weight, bias, utils in ((w, b, full), (None, None, ("test_schema", "test_faketensor"))):
        args = (x, weight, bias, 1e-5, "lrelu", 0.2, "triton")
        torch.library.opcheck(m._instance_norm_op.op, args, test_utils=utils)
        with torch.no_grad():
            _, mean, rstd = m._instance_norm_op(*args)
        torch.library.opcheck(m._instance_norm_backward_op.op, (x, weight, bias, mean, rstd, dy, 1e-5, "lrelu", 0.2,
                                                                "triton"), test_utils=utils)


def test_wgan_gp_through_a_discriminator_with_instance_norm():
    """WGAN-GP differentiates D's input gradient again w.r.t. D's parameters (instance norm's double backward): the
    penalty and its gradients equal those of the reference twin."""
    torch.manual_seed(3)
    D = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), InstanceNorm2d(6, affine=True, act="lrelu"), nn.Conv2d(6, 1, 3))
    with torch.no_grad():
        D[1].weight.normal_()
        D[1].bias.normal_()
    real, fake = torch.randn(4, 3, 10, 10), torch.randn(4, 3, 10, 10)
    out = {}
    for name in ("ref", "triton"):
        with backend_ctx(name):
            gp = gankern.ops.gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
            out[name] = (gp,) + torch.autograd.grad(gp, list(D.parameters()), allow_unused=True, materialize_grads=True)
    for g, r in zip(out["triton"], out["ref"]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert float(out["ref"][2].abs().sum()) > 0  # the norm's weight gets a second-order gradient


# ----------------------------------------------------------------------------------------------------------------
# the module


def _torch_pair(mod: InstanceNorm2d) -> nn.Module:
    """torch's InstanceNorm2d with mod's arguments and state, then mod's activation as a torch module."""
    t = nn.InstanceNorm2d(mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats,
                          bias=mod.bias is not None or not mod.affine)
    t.load_state_dict(mod.state_dict())
    t.train(mod.training)
    act = {"linear": nn.Identity(), "relu": nn.ReLU(), "lrelu": nn.LeakyReLU(mod.alpha)}[mod.act]
    return nn.Sequential(t, act)


@pytest.mark.parametrize("kw", [dict(), dict(affine=True, act="lrelu"), dict(affine=True, act="relu", bias=False),
                                dict(act="lrelu", alpha=0.1)], ids=["plain", "affine-lrelu", "weight-relu", "alpha"])
def test_module_is_a_drop_in_for_torch_instance_norm(kw):
    """Same keys, values and gradients as torch.nn.InstanceNorm2d followed by the activation, batched and
    unbatched, on both backends; torch's state dict loads (strict) and a repr names the activation."""
    torch.manual_seed(1)
    mod = InstanceNorm2d(5, **kw)
    if mod.affine:
        with torch.no_grad():
            mod.weight.normal_()
            if mod.bias is not None:
                mod.bias.normal_()
    ref = _torch_pair(mod)
    assert isinstance(mod, nn.InstanceNorm2d) and list(mod.state_dict()) == list(ref[0].state_dict())
    mod.load_state_dict(ref[0].state_dict(), strict=True)
    for x in (torch.randn(3, 5, 4, 6), torch.randn(5, 3, 3)):
        for name in ("ref", "triton"):
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            with backend_ctx(name):
                y = mod(xa)
                gm = torch.autograd.grad(y.square().sum(), [xa] + list(mod.parameters()))
            y_ref = ref(xb)
            gr = torch.autograd.grad(y_ref.square().sum(), [xb] + list(ref.parameters()))
            torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
            for a, b in zip(gm, gr):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert f"act={mod.act!r}" in repr(mod)


def test_module_with_running_stats_is_torch_then_the_activation():
    """track_running_stats=True: torch's F.instance_norm (running statistics updated in training, used in eval),
    then the activation, as torch's module followed by it."""
    mod = InstanceNorm2d(4, affine=True, track_running_stats=True, act="lrelu")
    ref = _torch_pair(mod)
    for _ in range(2):
        x = torch.randn(2, 4, 5, 5) * 2 + 1
        torch.testing.assert_close(mod(x), ref(x))
    torch.testing.assert_close(mod.running_mean, ref[0].running_mean)
    mod.eval()
    ref.eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(mod(x), ref(x))
    assert sorted(mod.state_dict()) == sorted(ref[0].state_dict())


def test_module_compiles_fullgraph_and_convert_swaps_torch_module():
    torch._dynamo.reset()
    mod = InstanceNorm2d(6, affine=True, act="lrelu")
    x = torch.randn(2, 6, 5, 3)
    with backend_ctx("triton"):
        compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), instance_norm_ref(x, mod.weight, mod.bias, act="lrelu"), rtol=1e-4,
                                   atol=1e-4)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.InstanceNorm2d(6, affine=True), nn.ReLU())
    with torch.no_grad():
        model[1].weight.normal_()
    x = torch.randn(2, 3, 7, 7)
    want, keys, weight = model(x), list(model.state_dict()), model[1].weight
    model = gankern.nn.convert(model)
    assert type(model[1]) is InstanceNorm2d and model[1].act == "linear" and model[1].weight is weight
    assert list(model.state_dict()) == keys
    with backend_ctx("triton"):
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_module_bad_arguments_raise():
    with pytest.raises(ValueError, match="act"):
        InstanceNorm2d(3, act="gelu")
    with pytest.raises(ValueError, match="alpha"):
        InstanceNorm2d(3, act="lrelu", alpha=float("inf"))
    with pytest.raises(ValueError, match="num_features"):
        InstanceNorm2d(3, affine=True)(torch.randn(2, 4, 3, 3))


# ----------------------------------------------------------------------------------------------------------------
# pix2pix and CycleGAN: instance norm + activation fused, the layout (keys, values) of the unfused pair


def _unfused(model: nn.Module) -> nn.Module:
    """A copy of model with torch modules in place of each fused norm: nn.InstanceNorm2d, and the activation where
    the next FusedAct (in module order) keeps its place: the layout the models had before the fusion."""
    model = copy.deepcopy(model)
    pending = None
    for name, m in list(model.named_modules()):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if isinstance(m, InstanceNorm2d):
            setattr(parent, attr, nn.InstanceNorm2d(m.num_features))
            pending = {"relu": lambda: nn.ReLU(True), "lrelu": lambda: nn.LeakyReLU(0.2, True)}.get(m.act)
        elif isinstance(m, FusedAct) and pending is not None:
            setattr(parent, attr, pending())
            pending = None
    assert pending is None
    return model


def _flat_outputs(out):
    return [t for o in out for t in _flat_outputs(o)] if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("which", ["unet", "patchgan", "resnet", "local_enhancer", "multiscale_d"])
def test_models_fuse_instance_norm_and_keep_keys_and_values(which):
    """pix2pix, CycleGAN and pix2pixHD with instance norm: the state_dict keys of the unfused layout (checkpoints
    load both ways, strict) and its outputs (pix2pixHD's D: every feature of its feature-matching loss)."""
    from gankern.models.cyclegan import ResnetGenerator
    from gankern.models.pix2pix import PatchGAN, UNet
    from gankern.models.pix2pixhd import LocalEnhancer, MultiscaleDiscriminator
    torch.manual_seed(0)
    model, x = {"unet": (UNet(3, 2, ngf=4, depth=4, norm="instance"), torch.randn(2, 3, 16, 16)),
                "patchgan": (PatchGAN(5, ndf=4, norm="instance"), torch.randn(2, 5, 32, 32)),
                "resnet": (ResnetGenerator(3, 3, ngf=4, n_blocks=2), torch.randn(2, 3, 16, 16)),
                "local_enhancer": (LocalEnhancer(3, 3, ngf=2, n_blocks=1, n_down_global=2, n_blocks_global=1),
                                   torch.randn(2, 3, 16, 16)),
                "multiscale_d": (MultiscaleDiscriminator(4, ndf=4, n_layers=2, num_D=2), torch.randn(2, 4, 32, 32)),
                }[which]
    model.eval()  # the U-Net's dropout off (instance norm without running stats is the same in both modes)
    fused = [m for m in model.modules() if isinstance(m, InstanceNorm2d)]
    assert fused and any(m.act != "linear" for m in fused)
    old = _unfused(model)
    assert not any(isinstance(m, InstanceNorm2d) for m in old.modules())
    old.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(old.state_dict(), strict=True)
    want = _flat_outputs(old(x.clone()))
    for name in ("ref", "triton"):
        with backend_ctx(name):
            got = _flat_outputs(model(x.clone()))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# GPU (pytest -m gpu): every dtype against the float64 reference, CycleGAN-sized planes (the two-pass kernels)

GPU_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=1e-2, atol=1e-2),
           torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}  # 16-bit: one rounding of O(1) values (10 / 8 mantissa bits)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(GPU_TOL))
@pytest.mark.parametrize("hw", [(32, 32), (64, 64)], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gpu_instance_norm_matches_reference(dtype, hw, channels_last):
    x = (torch.randn(2, 67, *hw, device="cuda") * 2 + 3).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, bias = torch.randn(67, device="cuda"), torch.randn(67, device="cuda")
    w, u = torch.randn_like(x), torch.randn_like(x)
    poison_allocator(4 * x.numel() * 8)
    with gankern.use_backend("triton"):
        got = grads(instance_norm, x, weight, bias, w, u, act="lrelu")
    want = grads(instance_norm_ref, *(t.double() for t in (x, weight, bias, w, u)), act="lrelu")
    for i, (g, r) in enumerate(zip(got, want)):
        assert torch.isfinite(g).all()
        # normwise: the dtype's error relative to the largest value of the output (the sums over N * H * W
        # elements of dweight and dbias are large where their elements are)
        tol = GPU_TOL[dtype]
        torch.testing.assert_close(g.double(), r.double(), rtol=tol["rtol"], atol=tol["atol"] * float(r.abs().max()),
                                   msg=lambda m: f"output {i}: {m}")
