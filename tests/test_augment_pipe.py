"""ADA (gankern.augment): each augmentation's effect, p = 0 / p = 1, gradients to second order, S2A's filter bank,
the controller of p, and the pipe on the fused ops (gankern.ops.augment, resample's kernels) against the pipe on ref."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gankern.augment import AUGPIPE_SPECS, AdaController, AugmentPipe, augment_pipe
from gankern.augment import pipe as pipe_module
from gankern.ops import augment as augment_ops
from gankern.ops.resample import downsample2d, upsample2d

from conftest import backend_ctx

# The geometric path resamples even at the identity (pad, 2x up, bilinear at the pixel centres, 2x down with the
# orthogonal sym6 filter): an identity up to fp32 rounding of ~24 taps per pixel.
GEOM_TOL = dict(rtol=1e-5, atol=2e-5)


def images(N=8, C=3, H=32, W=32, seed=0):
    return torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(seed))


def pipe_with(p=1.0, **kw):
    pipe = AugmentPipe(**kw)
    pipe.p.fill_(p)
    return pipe


@pytest.mark.parametrize("spec", ["bgc", "bgcfnc"])
def test_p_zero_is_identity(spec):
    x = images()
    pipe = augment_pipe(spec)
    pipe.p.zero_()
    torch.manual_seed(0)
    torch.testing.assert_close(pipe(x), x, **GEOM_TOL)


def _matches_one_of(y, candidates):
    """For each sample, the index of the candidate it equals (to GEOM_TOL), or -1."""
    out = []
    for n in range(y.shape[0]):
        hit = [i for i, c in enumerate(candidates) if torch.allclose(y[n], c[n], **GEOM_TOL)]
        out.append(hit[0] if hit else -1)
    return out


def _in_upsampled_domain(x, transform):
    """S2A's pixel blits act on the 2x up-sampled image (reflect-padded by 6, sym6 filter), about the sampling
    centre of S2A's pipeline (index 43 of the 88 up-sampled pixels), before the 2x down-sampling: x (N, C, 32, 32)."""
    f = AugmentPipe().Hz_geom
    up = upsample2d(F.pad(x, [6, 6, 6, 6], mode="reflect"), f, up=2)[..., :87, :87]
    return downsample2d(transform(up)[..., 6:82, 6:82], f, down=2, padding=-6, flip_filter=True)


def test_xflip_flips():
    x = images(16)
    torch.manual_seed(1)
    y = pipe_with(xflip=1)(x)
    which = _matches_one_of(y, [x, _in_upsampled_domain(x, lambda t: t.flip(3))])
    assert -1 not in which and set(which) == {0, 1}
    smooth = F.interpolate(images(16, H=4, W=4), size=(32, 32), mode="bicubic", align_corners=False)
    torch.manual_seed(1)  # the same draws: on smooth images, close to a flip of the pixels (sym6 is nearly symmetric)
    y = pipe_with(xflip=1)(smooth)
    for n, k in enumerate(which):
        err = (y[n] - (smooth[n].flip(2) if k else smooth[n])).abs().max()
        assert err < 0.05 * smooth[n].abs().max()


def test_rotate90_rotates():
    x = images(16)
    torch.manual_seed(2)
    rots = [_in_upsampled_domain(x, lambda t, k=k: torch.rot90(t, k, dims=(2, 3))) for k in range(4)]
    which = _matches_one_of(pipe_with(rotate90=1)(x), rots)
    assert -1 not in which and set(which) == {0, 1, 2, 3}


def test_integer_translation_shifts_by_whole_pixels():
    x = images(8, H=16, W=16)
    torch.manual_seed(3)
    y = pipe_with(xint=1, xint_max=0.125)(x)
    for n in range(8):  # the output is x shifted by (dy, dx) with |d| <= 2, away from the reflected border
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.allclose(y[n, :, 2:-2, 2:-2], torch.roll(x[n], (dy, dx), (1, 2))[:, 2:-2, 2:-2], **GEOM_TOL)]
        assert found, f"sample {n} is not an integer translation"


def test_color_transforms():
    x = images(8)
    torch.manual_seed(4)
    y = pipe_with(brightness=1)(x)
    shift = (y - x).mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, x + shift)           # one offset per image
    assert (shift.flatten().abs() > 0).all()          # p = 1: every image
    y = pipe_with(contrast=1)(x)
    scale = (y * x).sum((1, 2, 3), keepdim=True) / x.square().sum((1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, x * scale)
    luma = lambda t: t.mean(1)  # noqa: E731  (the luma axis is (1, 1, 1) / sqrt(3))
    chroma = lambda t: t - t.mean(1, keepdim=True)  # noqa: E731
    for kw in (dict(hue=1), dict(saturation=1)):  # rotations / scalings about the luma axis keep the luma
        y = pipe_with(**kw)(x)
        torch.testing.assert_close(luma(y), luma(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(y, x)
    y = pipe_with(lumaflip=1)(x)
    for n in range(8):  # each image keeps its luma or flips it, keeping the chroma
        assert torch.allclose(chroma(y[n:n + 1]), chroma(x[n:n + 1]), atol=1e-5)
        ly, lx = luma(y[n:n + 1]), luma(x[n:n + 1])
        assert torch.allclose(ly, lx, atol=1e-5) or torch.allclose(ly, -lx, atol=1e-5)
    g = images(4, C=1)
    y = pipe_with(brightness=1, contrast=1, hue=1, saturation=1)(g)  # grayscale: the RGB matrix averaged
    assert y.shape == g.shape and y.isfinite().all()


@pytest.mark.parametrize("name", ["scale", "rotate", "aniso", "xfrac", "imgfilter", "noise", "cutout"])
def test_each_augmentation_applies_at_p_one_only(name):
    x = images(4)
    torch.manual_seed(5)
    y = pipe_with(p=1.0, **{name: 1})(x)
    per_image = (y - x).flatten(1).abs().amax(1)
    assert (per_image > 1e-3).all(), per_image
    torch.manual_seed(5)
    torch.testing.assert_close(pipe_with(p=0.0, **{name: 1})(x), x, **GEOM_TOL)
    if name == "cutout":  # a rectangle of half the size, centred anywhere: at least a quarter of it is inside
        assert ((y == 0).flatten(1).float().mean(1) >= 0.25 * 0.25).all()


def test_probability_is_multiplier_times_p():
    x = images(400, H=4, W=4)
    torch.manual_seed(6)
    changed = (pipe_with(p=0.5, brightness=0.6)(x) - x).flatten(1).abs().amax(1) > 0
    assert abs(changed.float().mean().item() - 0.3) < 0.07  # binomial(400, 0.3): std 0.023


def test_gradients_to_second_order():
    """R1 through the augmentation: d/dtheta ||d D(aug(x)) / dx||^2, and torch's grad checks in fp64."""
    x = images(4, H=16, W=16).requires_grad_(True)
    pipe = augment_pipe("bgc")
    conv = torch.nn.Conv2d(3, 4, 3)
    torch.manual_seed(7)
    out = conv(pipe(x)).square().sum()
    (gx,) = torch.autograd.grad(out, x, create_graph=True)
    gx.square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and conv.weight.grad.isfinite().all()

    x64 = images(2, H=8, W=8).double().requires_grad_(True)
    pipe = augment_pipe("bgcfnc", imgfilter=0)

    def fn(t):
        torch.manual_seed(8)  # the same random parameters at every evaluation
        return pipe(t)
    assert torch.autograd.gradcheck(fn, (x64,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x64,), fast_mode=True)


def test_filter_bank_matches_s2a_construction():
    scipy_signal = pytest.importorskip("scipy.signal", reason="scipy builds the reference filter bank")
    lo = np.asarray([-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025])
    hi = lo * ((-1) ** np.arange(lo.size))
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for i in range(1, 4):
        bank = np.dstack([bank, np.zeros_like(bank)]).reshape(4, -1)[:, :-1]
        bank = scipy_signal.convolve(bank, [lo2])
        bank[i, (bank.shape[1] - hi2.size) // 2:(bank.shape[1] + hi2.size) // 2] += hi2
    torch.testing.assert_close(AugmentPipe().Hz_fbank, torch.as_tensor(bank, dtype=torch.float32))
    assert AugmentPipe().Hz_geom.shape == (12,) and float(AugmentPipe().Hz_geom.sum()) == pytest.approx(1.0)


def test_specs_and_state_dict():
    assert AUGPIPE_SPECS["bgc"] == dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                                        brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    pipe = augment_pipe("bgc")
    assert (pipe.xint_max, pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std) == \
        (0.125, 0.2, 1.0, 0.2, 0.125)
    assert (pipe.brightness_std, pipe.contrast_std, pipe.hue_max, pipe.saturation_std) == (0.2, 0.5, 1.0, 1.0)
    assert set(pipe.state_dict()) == {"p", "Hz_geom", "Hz_fbank"}


BAD = {
    "spec": (lambda: augment_pipe("bgx"), ValueError, "unknown augmentation"),
    "negative": (lambda: AugmentPipe(xflip=-1), ValueError, "xflip"),
    "bands": (lambda: AugmentPipe(imgfilter_bands=[1, 1]), ValueError, "imgfilter_bands"),
    "rank": (lambda: augment_pipe("bgc")(torch.randn(3, 8, 8)), ValueError, "images must be"),
    "channels": (lambda: augment_pipe("bgc")(torch.randn(2, 4, 8, 8)), ValueError, "images must be"),
    "small for filter": (lambda: augment_pipe("bgcf")(torch.randn(2, 3, 16, 16)), ValueError, "larger than 21"),
    "controller pipe": (lambda: AdaController(torch.nn.Identity()), TypeError, "AugmentPipe"),
    "interval": (lambda: AdaController(AugmentPipe(), interval=0), ValueError, "interval"),
    "batch": (lambda: AdaController(AugmentPipe()).step(0), ValueError, "batch_size"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_says_why(case):
    fn, err, match = BAD[case]
    with pytest.raises(err, match=match):
        fn()


# ----------------------------------------------------------------------------------------------------------------
# the controller


def test_controller_moves_p_toward_the_target():
    pipe = augment_pipe("bgc")
    pipe.p.zero_()
    ada = AdaController(pipe, target=0.6, interval=4, kimg=500)
    step = 4 * 64 / 500e3
    for i in range(4):  # D overfits: sign(D(real)) = +1 -> r_t = 1 > 0.6: p goes up after 4 steps
        ada.accumulate(torch.ones(64, 1))
        assert float(pipe.p) == 0.0
        ada.step(64)
    assert float(pipe.p) == pytest.approx(step) and float(ada.rt) == 1.0
    for i in range(8):  # r_t = 0.5 < 0.6: down twice, floored at 0
        ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]).repeat(16)[:, None])
        ada.step(64)
    assert float(pipe.p) == 0.0 and float(ada.rt) == pytest.approx(0.5)
    pipe.p.fill_(0.5)
    for i in range(4):  # no logits in the interval: p stays
        ada.step(64)
    assert float(pipe.p) == 0.5


def test_controller_goes_from_0_to_1_in_kimg():
    pipe = AugmentPipe(xflip=1)
    pipe.p.zero_()
    ada = AdaController(pipe, kimg=1, interval=2)
    for _ in range(20):  # 20 steps of 50 images: 1 kimg
        ada.accumulate(torch.ones(50))
        ada.step(50)
    assert float(pipe.p) == pytest.approx(1.0)


def test_controller_state_round_trip():
    pipe = augment_pipe("bgc")
    ada = AdaController(pipe, interval=4)
    for _ in range(6):
        ada.accumulate(torch.randn(8))
        ada.step(8)
    state = ada.state_dict()
    pipe2 = augment_pipe("bgc")
    ada2 = AdaController(pipe2, interval=4)
    ada2.load_state_dict(state)
    for a in (ada, ada2):
        a.accumulate(torch.full((8,), -1.0))
        a.step(8)
        a.accumulate(torch.full((8,), -1.0))
        a.step(8)
    assert float(pipe.p) == float(pipe2.p) and ada.steps == ada2.steps == 8
    assert torch.equal(ada.rt, ada2.rt)
    with pytest.raises(KeyError, match="missing"):
        ada2.load_state_dict({"p": 1.0})


def test_pipe_runs_on_generator_output_dtype():
    x = images(2, H=16, W=16).to(torch.bfloat16)
    y = augment_pipe("bgc")(x)
    assert y.dtype == torch.bfloat16 and y.isfinite().all() and math.isfinite(float(F.mse_loss(y.float(),
                                                                                                 x.float())))


# ----------------------------------------------------------------------------------------------------------------
# the pipe on the fused ops


class _AugmentOpsOnTriton:
    """gankern.ops.augment with each op forced onto its Triton kernel, for the pipe to call: on the CPU the rest of
    the pipe (upfirdn2d, whose 12-tap kernels take minutes in the interpreter and have their own tests) stays on
    ref."""

    def __getattr__(self, name):
        fn = getattr(augment_ops, name)

        def call(*args, **kwargs):
            with backend_ctx("triton"):
                return fn(*args, **kwargs)
        return call


def _pipe_grads(x, seed, backend, **kw):
    """bgc pipe at p = 0.8 on x with the random draws of seed: (y, grad of a D-like loss w.r.t. x, the second-order
    gradient R1 takes w.r.t. D's weights)."""
    pipe = augment_pipe("bgc", **kw)
    pipe.p.fill_(0.8)
    conv = torch.nn.Conv2d(x.shape[1], 2, 3).to(x.device)
    torch.manual_seed(seed)
    conv.reset_parameters()
    xr = x.clone().requires_grad_(True)
    with backend_ctx(backend):
        torch.manual_seed(seed)
        y = pipe(xr)
        (gx,) = torch.autograd.grad(conv(y).square().sum(), xr, create_graph=True)
        gx.square().sum().backward()
    return y.detach(), gx.detach(), conv.weight.grad.clone()


def _assert_pipes_close(got, want):
    # the kernel computes the sampling positions in fp32 from theta, the eager path through affine_grid's base grid
    # and a bmm: positions differ by a few ulp of the up-sampled size
    for label, g, w in zip(("y", "dx", "d2 conv.weight"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item(), msg=lambda m: f"{label}: {m}")


@pytest.mark.parametrize("C", [3, 1])
def test_pipe_on_fused_ops_matches_pipe_on_ref_to_second_order(C, monkeypatch):
    """The bgc pipe with affine_grid_sample and color_transform on their Triton kernels against the same pipe on
    the eager reference (F.affine_grid + F.grid_sample, bmm): the same random draws, values, the input gradient of
    a D-like loss and the second-order gradient R1 takes."""
    x = images(3, C=C, H=13, W=11, seed=int(torch.randint(1 << 16, ())))
    seed = int(torch.randint(1 << 16, ()))
    want = _pipe_grads(x, seed, "ref")
    monkeypatch.setattr(pipe_module, "augment_ops", _AugmentOpsOnTriton())
    from gankern.kernels import augment as k
    launches = []
    for name in ("affine_grid_sample", "affine_grid_sample_grad", "color_transform"):
        monkeypatch.setattr(k, name, lambda *a, _f=getattr(k, name), _n=name: launches.append(_n) or _f(*a))
    _assert_pipes_close(_pipe_grads(x, seed, "ref"), want)
    assert set(launches) == {"affine_grid_sample", "affine_grid_sample_grad", "color_transform"}, launches


@pytest.mark.gpu
@pytest.mark.parametrize("C", [3, 1])
def test_gpu_pipe_on_fused_ops_matches_pipe_on_ref(C):
    """On the GPU, every op of the pipe on its default (fused) backend against the pipe on ref."""
    x = images(8, C=C, H=64, W=48, seed=int(torch.randint(1 << 16, ()))).cuda()
    seed = int(torch.randint(1 << 16, ()))
    _assert_pipes_close(_pipe_grads(x, seed, "triton"), _pipe_grads(x, seed, "ref"))


@pytest.mark.gpu
def test_gpu_pipe_waits_for_the_gpu_once_per_call():
    """The padding (a shape) is the pipe's one host sync: constants live in buffers, the luma axis in numbers, and the
    margin is computed on the host from one copy of G_inv (torch's sync debug mode warns at each sync)."""
    import warnings
    pipe = augment_pipe("bgc").cuda()
    pipe.p.fill_(0.8)
    x = images(4, H=32, W=32).cuda()
    pipe(x)  # first call: one-time checks (the resampling filter's finiteness)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1, syncs
