"""gankern.compat.stylegan2_ada: patch() swaps StyleGAN2-ADA's op functions for gankern's, and S2A's call patterns
(ToRGB's bias_act without act, impl=, noise already times a learnable strength, (H, W) const noise, fused_modconv,
fp16 with large styles) give S2A's results through it. S2A itself is not installed here: the test writes a small
``torch_utils.ops`` / ``training.networks`` package with S2A's module layout, signatures and reference formulas
(as read in stylegan2-ada-pytorch), then runs a synthesis block with S2A's functions and again after patch()."""
import math
import sys
import textwrap

import pytest
import torch

import gankern
from gankern.compat import stylegan2_ada
from gankern.ops import modulation, resample

from conftest import backend_ctx

FAKE_S2A = {
    "torch_utils/__init__.py": "",
    "torch_utils/ops/__init__.py": "",
    "torch_utils/ops/bias_act.py": '''
        import math
        import torch
        import torch.nn.functional as F

        # name: (func, def_alpha, def_gain)
        activation_funcs = {
            "linear": (lambda x, **_: x, 0, 1),
            "relu": (lambda x, **_: F.relu(x), 0, math.sqrt(2)),
            "lrelu": (lambda x, alpha, **_: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
        }

        def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="cuda"):
            func, def_alpha, def_gain = activation_funcs[act]
            alpha = float(alpha if alpha is not None else def_alpha)
            gain = float(gain if gain is not None else def_gain)
            clamp = float(clamp if clamp is not None else -1)
            if b is not None:
                x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
            x = func(x, alpha=alpha)
            if gain != 1:
                x = x * gain
            if clamp >= 0:
                x = x.clamp(-clamp, clamp)
            return x
    ''',
    "torch_utils/ops/upfirdn2d.py": '''
        import torch
        import torch.nn.functional as F

        def _pair(v):
            return (v, v) if isinstance(v, int) else tuple(v)

        def _pad4(p):
            if isinstance(p, int):
                return [p] * 4
            return [p[0], p[0], p[1], p[1]] if len(p) == 2 else list(p)

        def _size(f):
            return (1, 1) if f is None else (f.shape[-1], f.shape[0])

        def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None):
            f = torch.as_tensor(f, dtype=torch.float32)
            if separable is None:
                separable = f.ndim == 1 and f.numel() >= 8
            if f.ndim == 1 and not separable:
                f = f.ger(f)
            if normalize:
                f /= f.sum()
            if flip_filter:
                f = f.flip(list(range(f.ndim)))
            return (f * (gain ** (f.ndim / 2))).to(device=device)

        def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="cuda"):
            if f is None:
                f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
            (upx, upy), (downx, downy) = _pair(up), _pair(down)
            px0, px1, py0, py1 = _pad4(padding)
            N, C, H, W = x.shape
            x = F.pad(x.reshape(N, C, H, 1, W, 1), [0, upx - 1, 0, 0, 0, upy - 1]).reshape(N, C, H * upy, W * upx)
            x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
            x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
            f = f * (gain ** (f.ndim / 2))
            f = f.to(x.dtype)
            if not flip_filter:
                f = f.flip(list(range(f.ndim)))
            f = f[None, None].repeat([C, 1] + [1] * f.ndim)
            if f.ndim == 4:
                x = F.conv2d(x, f, groups=C)
            else:
                x = F.conv2d(F.conv2d(x, f.unsqueeze(2), groups=C), f.unsqueeze(3), groups=C)
            return x[:, :, ::downy, ::downx]

        def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
            px0, px1, py0, py1 = _pad4(padding)
            fw, fh = _size(f)
            p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
            return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

        def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
            upx, upy = _pair(up)
            px0, px1, py0, py1 = _pad4(padding)
            fw, fh = _size(f)
            p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
            return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)

        def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
            downx, downy = _pair(down)
            px0, px1, py0, py1 = _pad4(padding)
            fw, fh = _size(f)
            p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2,
                 py1 + (fh - downy) // 2]
            return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
    ''',
    "torch_utils/ops/conv2d_resample.py": '''
        import torch

        def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
            assert up == 1 and down == 1 and isinstance(padding, int), "the test's S2A stand-in: up = down = 1 only"
            if not flip_weight:
                w = w.flip([2, 3])
            return torch.nn.functional.conv2d(x, w, padding=padding, groups=groups)
    ''',
    "training/__init__.py": "",
    "training/networks.py": '''
        import numpy as np
        import torch
        from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

        def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                             demodulate=True, flip_weight=True, fused_modconv=True):
            batch_size = x.shape[0]
            out_channels, in_channels, kh, kw = weight.shape
            if x.dtype == torch.float16 and demodulate:
                weight = weight * (1 / np.sqrt(in_channels * kh * kw) /
                                   weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
                styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
            w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None
            if not fused_modconv:
                x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
                x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                                    padding=padding, flip_weight=flip_weight)
                if demodulate:
                    x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
                return x if noise is None else x + noise.to(x.dtype)
            if demodulate:
                w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
            x = x.reshape(1, -1, *x.shape[2:])
            w = w.reshape(-1, in_channels, kh, kw)
            x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                                padding=padding, groups=batch_size, flip_weight=flip_weight)
            x = x.reshape(batch_size, -1, *x.shape[2:])
            return x if noise is None else x + noise

        class SynthesisLayer(torch.nn.Module):
            def __init__(self, in_channels, out_channels, w_dim, resolution, conv_clamp=None):
                super().__init__()
                self.affine = torch.nn.Linear(w_dim, in_channels)
                self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
                self.bias = torch.nn.Parameter(torch.randn([out_channels]) * 0.1)
                self.register_buffer("noise_const", torch.randn([resolution, resolution]))
                self.noise_strength = torch.nn.Parameter(torch.tensor(0.2))
                self.conv_clamp = conv_clamp
                self.resolution = resolution

            def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
                styles = self.affine(w)
                noise = None
                if noise_mode == "random":
                    noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution]) * self.noise_strength
                if noise_mode == "const":
                    noise = self.noise_const * self.noise_strength
                x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, padding=1,
                                     flip_weight=True, fused_modconv=fused_modconv)
                clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
                return bias_act.bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=np.sqrt(2) * gain, clamp=clamp)

        class ToRGBLayer(torch.nn.Module):
            def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
                super().__init__()
                self.affine = torch.nn.Linear(w_dim, in_channels)
                self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
                self.bias = torch.nn.Parameter(torch.randn([out_channels]) * 0.1)
                self.weight_gain = 1 / np.sqrt(in_channels)
                self.conv_clamp = conv_clamp

            def forward(self, x, w, fused_modconv=True):
                styles = self.affine(w) * self.weight_gain
                x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False,
                                     fused_modconv=fused_modconv)
                return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

        class Block(torch.nn.Module):
            """conv, conv, toRGB, and the skip architecture's image upsampling / a downsampled copy."""
            def __init__(self, ch, w_dim, res):
                super().__init__()
                self.conv0 = SynthesisLayer(ch, ch, w_dim, res, conv_clamp=256)
                self.conv1 = SynthesisLayer(ch, ch, w_dim, res)
                self.torgb = ToRGBLayer(ch, 3, w_dim, conv_clamp=256)
                self.register_buffer("resample_filter", upfirdn2d.setup_filter([1, 3, 3, 1]))

            def forward(self, x, ws, img, **kw):
                x = self.conv0(x, ws[:, 0], **kw)
                x = self.conv1(x, ws[:, 1], **kw)
                y = self.torgb(x, ws[:, 2], fused_modconv=kw.get("fused_modconv", True))
                img = upfirdn2d.upsample2d(img, self.resample_filter) + y
                f = self.resample_filter
                return x, img, upfirdn2d.downsample2d(img, f), upfirdn2d.filter2d(img, f)
    ''',
}


@pytest.fixture
def s2a(tmp_path, monkeypatch):
    """The stand-in S2A package on sys.path; the modules and the patch are gone afterwards."""
    for rel, text in FAKE_S2A.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    stylegan2_ada.unpatch()
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "training")]:
        del sys.modules[name]


SWAPPED = ["torch_utils.ops.bias_act.bias_act", "torch_utils.ops.upfirdn2d.upfirdn2d",
           "torch_utils.ops.upfirdn2d.filter2d", "torch_utils.ops.upfirdn2d.upsample2d",
           "torch_utils.ops.upfirdn2d.downsample2d", "torch_utils.ops.conv2d_resample.conv2d_resample",
           "training.networks.modulated_conv2d"]


def test_patch_swaps_s2a_functions_and_unpatch_restores_them(s2a):
    from torch_utils.ops import bias_act, upfirdn2d
    from training import networks
    before = (bias_act.bias_act, upfirdn2d.upsample2d, networks.modulated_conv2d)
    assert stylegan2_ada.patch() == SWAPPED
    assert stylegan2_ada.patch() == SWAPPED  # idempotent: the originals are kept once
    assert stylegan2_ada.patched()
    assert bias_act.bias_act is modulation.bias_act and upfirdn2d.upsample2d is resample.upsample2d
    assert networks.modulated_conv2d is modulation.modulated_conv2d
    assert sorted(stylegan2_ada.unpatch()) == sorted(SWAPPED)
    assert (bias_act.bias_act, upfirdn2d.upsample2d, networks.modulated_conv2d) == before
    assert not stylegan2_ada.patched()


def _run_block(block, x, ws, img, seed, **kw):
    torch.manual_seed(seed)  # S2A's noise_mode="random" draws inside the layers
    outs = block(x, ws, img, **kw)
    grads = torch.autograd.grad(sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs),
                                list(block.parameters()), allow_unused=True, materialize_grads=True)
    return outs, grads


@pytest.mark.parametrize("name", ["ref", "triton"])
@pytest.mark.parametrize("noise_mode", ["random", "const", "none"])
@pytest.mark.parametrize("fused_modconv", [True, False])
def test_s2a_block_gives_s2a_results_through_patch(s2a, name, noise_mode, fused_modconv):
    """A synthesis block (modulated convs with noise forms, ToRGB's bias_act without act, upsample2d /
    downsample2d / filter2d of the image): values and gradients of every parameter (noise_strength included)
    equal S2A's own functions' before and after patch()."""
    from training import networks
    torch.manual_seed(0)
    block = networks.Block(4, 6, 8)
    x, ws, img = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 6), torch.randn(2, 3, 4, 4)
    kw = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
    want = _run_block(block, x, ws, img, 1, **kw)
    stylegan2_ada.patch()
    with backend_ctx(name):
        got = _run_block(block, x, ws, img, 1, **kw)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    if noise_mode != "none":
        names = [n for n, _ in block.named_parameters()]
        assert got[1][names.index("conv0.noise_strength")] != 0  # learns through the patched modulated_conv2d


def test_s2a_fp16_modulated_conv_with_large_styles_through_patch(s2a):
    """S2A's fp16 layers: |x| up to 256 and large styles stay finite and equal S2A's own fp16 path."""
    from training import networks
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 8, 5, 5, generator=g) * 512 - 256).half()
    weight, styles = torch.randn(6, 8, 3, 3, generator=g), torch.randn(2, 8, generator=g) * 500
    want = networks.modulated_conv2d(x.float(), weight, styles, padding=1)  # S2A's formula in fp32
    stylegan2_ada.patch()
    for name in ("ref", "triton"):
        with backend_ctx(name):
            got = networks.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
        assert bool(torch.isfinite(got).all()), name
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))


def test_patch_without_s2a_on_the_path_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_utils", None)  # import torch_utils fails
    with pytest.raises(ImportError, match="stylegan2-ada-pytorch repository on sys.path"):
        stylegan2_ada.patch()
    assert not stylegan2_ada.patched()


def test_ops_keep_s2a_signatures():
    """The names S2A's callers pass by keyword exist, with S2A's defaults; gankern's extras are keyword-only."""
    import inspect
    want = {
        gankern.ops.bias_act: "(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None)",
        gankern.ops.upfirdn2d: "(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None)",
        resample.conv2d_resample: "(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, "
                                  "flip_filter=False)",
    }
    for fn, sig in want.items():
        params = inspect.signature(fn).parameters.values()
        assert "(" + ", ".join(p.name + ("" if p.default is p.empty else f"={p.default!r}") for p in params) + ")" \
            == sig, fn.__name__
    mc = inspect.signature(gankern.ops.modulated_conv2d).parameters
    assert list(mc)[:11] == ["x", "weight", "styles", "noise", "up", "down", "padding", "resample_filter",
                             "demodulate", "flip_weight", "fused_modconv"]
    assert mc["padding"].default == 0 and mc["fused_modconv"].default is True
    assert all(mc[k].kind is inspect.Parameter.KEYWORD_ONLY for k in list(mc)[11:])
    assert math.isclose(modulation.ACTIVATIONS["lrelu"].def_gain, math.sqrt(2))
