"""gankern.nn.convert of the spectral norms people already have: torch's older hook (StudioGAN's; strict round trips,
old checkpoints) and BigGAN-PyTorch's SN layers (a stand-in written from reading BG's layers.py)."""
import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm as TorchHookSN
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook, SpectralNormStateDictHook

from gankern.nn import SpectralNormGroup, convert
from gankern.nn.convert import ConvertWarning
from gankern.nn.spectral_norm import SpectralNorm
from gankern.nn.utils import spectral_norm

from conftest import CPU_BACKENDS, backend_ctx

# ---------------------------------------------------------------------------------------------------------------
# torch.nn.utils.spectral_norm (the hook), as StudioGAN uses it


def legacy_net(seed):
    torch.manual_seed(seed)
    sn = torch.nn.utils.spectral_norm
    return nn.Sequential(sn(nn.Conv2d(3, 6, 3, padding=1), eps=1e-6), nn.ReLU(),
                         sn(nn.ConvTranspose2d(6, 4, 3, padding=1)), nn.Flatten(),
                         sn(nn.Linear(4 * 5 * 5, 7)))


def step(net, opt, seed):
    g = torch.Generator().manual_seed(seed)
    y = net(torch.randn(3, 3, 5, 5, generator=g))
    opt.zero_grad()
    y.square().mean().backward()
    opt.step()


def legacy_hooks(module):
    found = []
    for hooks in (module._forward_pre_hooks, module._state_dict_hooks, module._load_state_dict_pre_hooks):
        for h in hooks.values():
            h = getattr(h, "hook", h)
            if isinstance(h, (TorchHookSN, SpectralNormStateDictHook, SpectralNormLoadStateDictPreHook)):
                found.append(h)
    return found


def bare_load_hooks(net):
    """Store the load_state_dict pre-hooks unwrapped, as a torch that does not wrap them would."""
    for m in net.modules():
        for k, h in list(m._load_state_dict_pre_hooks.items()):
            m._load_state_dict_pre_hooks[k] = getattr(h, "hook", h)
    return net


@pytest.mark.parametrize("storage", ["wrapped", "bare"])
def test_converted_legacy_model_round_trips_strictly(storage):
    """Converted, trained a step, saved, loaded strictly (torch stores load pre-hooks wrapped in _WrappedHook in
    2.6 .. 2.13; 'bare' covers a torch that stores them unwrapped)."""
    net = legacy_net(0)
    assert any(legacy_hooks(m) for m in net.modules())
    if storage == "bare":
        bare_load_hooks(net)
    conv = convert(net)
    assert not any(legacy_hooks(m) for m in conv.modules())
    step(conv, torch.optim.Adam(conv.parameters(), 1e-2), seed=1)
    buf = io.BytesIO()
    torch.save(conv.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    conv.load_state_dict(saved, strict=True)           # its own state dict
    other = legacy_net(5)
    if storage == "bare":
        bare_load_hooks(other)
    other = convert(other)
    other.load_state_dict(saved, strict=True)          # a fresh conversion resumes from it
    for a, b in zip(conv.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    conv.eval(), other.eval()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(other(x), conv(x), rtol=0, atol=0)


def test_old_legacy_checkpoints_load_into_gankern_layers():
    old = legacy_net(2)
    opt = torch.optim.Adam(old.parameters(), 1e-2)
    for s in range(2):
        step(old, opt, seed=s)
    old.eval()
    x = torch.randn(2, 3, 5, 5)
    want = old(x)
    ckpt = old.state_dict()
    assert {"0.weight_orig", "0.weight_u", "0.weight_v"} <= ckpt.keys()
    torch.manual_seed(3)                                        # gankern layers built directly
    ours = nn.Sequential(spectral_norm(nn.Conv2d(3, 6, 3, padding=1), eps=1e-6), nn.ReLU(),
                         spectral_norm(nn.ConvTranspose2d(6, 4, 3, padding=1)), nn.Flatten(),
                         spectral_norm(nn.Linear(4 * 5 * 5, 7)))
    ours.load_state_dict(ckpt, strict=True)
    ours.eval()
    torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-6)
    conv = convert(legacy_net(4))                               # a converted model resuming an old run
    conv.load_state_dict(ckpt, strict=True)
    conv.eval()
    torch.testing.assert_close(conv(x), want, rtol=1e-5, atol=1e-6)
    assert set(ckpt) == set(old.state_dict())                   # the caller's dict is not changed


def test_legacy_checkpoint_without_v_derives_it():
    """torch < 1.1 saved no weight_v: v = normalize(Wm^T u)."""
    old = legacy_net(6)
    ckpt = {k: v for k, v in old.state_dict().items() if not k.endswith("_v")}
    ours = convert(legacy_net(7))
    ours.load_state_dict(ckpt, strict=True)
    w, u = ckpt["4.weight_orig"], ckpt["4.weight_u"]
    torch.testing.assert_close(ours[4].parametrizations.weight[0]._v, F.normalize(w.t() @ u, dim=0))


# ---------------------------------------------------------------------------------------------------------------
# BigGAN-PyTorch's SN layers: a stand-in written from reading BG's layers.py (SN mixin, power_iteration with
# Gram-Schmidt over num_svs singular pairs, SNConv2d / SNLinear / SNEmbedding).


def bg_power_iteration(W, us, update, eps):
    """One v-first step per singular pair; the later pairs are kept orthogonal to the earlier ones."""
    vs_done, us_done, svs = [], [], []
    for i, u in enumerate(us):
        with torch.no_grad():
            v = u @ W
            for y in vs_done:
                v = v - (y @ v.t()) * y / (y @ y.t())
            v = F.normalize(v, eps=eps)
            vs_done.append(v)
            u_new = v @ W.t()
            for y in us_done:
                u_new = u_new - (y @ u_new.t()) * y / (y @ y.t())
            u_new = F.normalize(u_new, eps=eps)
            us_done.append(u_new)
            if update:
                us[i][:] = u_new
        svs.append(torch.squeeze((v @ W.t()) @ u_new.t()))
    return svs


class BGSN:
    def init_sn(self, num_svs, num_itrs, num_outputs, eps):
        self.num_svs, self.num_itrs, self.eps, self.transpose = num_svs, num_itrs, eps, False
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))
            self.register_buffer(f"sv{i}", torch.ones(1))

    def W_(self):
        W = self.weight.view(self.weight.size(0), -1)
        us = [getattr(self, f"u{i}") for i in range(self.num_svs)]
        for _ in range(self.num_itrs):
            svs = bg_power_iteration(W, us, self.training, self.eps)
        if self.training:
            with torch.no_grad():
                for i, sv in enumerate(svs):
                    getattr(self, f"sv{i}")[:] = sv
        return self.weight / svs[0]


class BGConv2d(nn.Conv2d, BGSN):
    def __init__(self, i, o, k, padding=0, bias=True, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Conv2d.__init__(self, i, o, k, padding=padding, bias=bias)
        self.init_sn(num_svs, num_itrs, o, eps)

    def forward(self, x):
        return F.conv2d(x, self.W_(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class BGLinear(nn.Linear, BGSN):
    def __init__(self, i, o, bias=True, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Linear.__init__(self, i, o, bias)
        self.init_sn(num_svs, num_itrs, o, eps)

    def forward(self, x):
        return F.linear(x, self.W_(), self.bias)


class BGEmbedding(nn.Embedding, BGSN):
    def __init__(self, n, d, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Embedding.__init__(self, n, d)
        self.init_sn(num_svs, num_itrs, n, eps)

    def forward(self, y):
        return F.embedding(y, self.W_())


class BGNet(nn.Module):
    """A small projection D of BG's layers."""

    def __init__(self, num_svs=1, num_itrs=1, eps=1e-6):
        super().__init__()
        kw = dict(num_svs=num_svs, num_itrs=num_itrs, eps=eps)
        self.conv1 = BGConv2d(3, 6, 3, padding=1, **kw)
        self.conv2 = BGConv2d(6, 5, 1, bias=False, **kw)
        self.linear = BGLinear(5, 1, **kw)
        self.embed = BGEmbedding(4, 5, **kw)

    def forward(self, x, y):
        h = self.conv2(F.relu(self.conv1(x))).relu().sum([2, 3])
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def bg_train(net, steps, seed, group=None):
    opt = torch.optim.Adam(net.parameters(), lr=2e-2, betas=(0.0, 0.999))
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(steps):
        x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)
        if group is not None:
            group.update()
        out = net(x, y)
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()
        outs.append(out.detach())
    return outs


def assert_converted_matches(bg, conv, num_svs=1):
    for name in ("conv1", "conv2", "linear", "embed"):
        a, b = getattr(bg, name), getattr(conv, name)
        sn = b.parametrizations.weight[0]
        torch.testing.assert_close(b.parametrizations.weight.original, a.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sn._u, a.u0.reshape(-1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sn.sv0, a.sv0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_itrs", [1, 2])
def test_biggan_pytorch_layers_convert_and_train_like_bg(num_itrs):
    torch.manual_seed(0)
    bg = BGNet(num_itrs=num_itrs)
    bg_train(bg, 1, seed=9)                     # a trained state: u0 and sv0 not at their initial values
    conv = convert(copy.deepcopy(bg))
    for name, kind in (("conv1", nn.Conv2d), ("conv2", nn.Conv2d), ("linear", nn.Linear), ("embed", nn.Embedding)):
        m = getattr(conv, name)
        assert isinstance(m, kind) and not hasattr(m, "u0")
        sn = m.parametrizations.weight[0]
        assert isinstance(sn, SpectralNorm) and sn.style == "biggan"
        assert sn.n_power_iterations == num_itrs and sn.eps == 1e-6
    assert conv.conv2.bias is None
    assert_converted_matches(bg, conv)
    got, want = bg_train(conv, 3, seed=1), bg_train(bg, 3, seed=1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert_converted_matches(bg, conv)
    svs = {k: v for k, v in conv.state_dict().items() if "sv" in k}  # what BG's utils.get_SVs reads
    assert set(svs) == {f"{n}.parametrizations.weight.0.sv0" for n in ("conv1", "conv2", "linear", "embed")}
    bg.eval(), conv.eval()                      # BG's eval: one unstored iteration from u0
    x, y = torch.randn(3, 3, 6, 6), torch.tensor([0, 3, 1])
    torch.testing.assert_close(conv(x, y), bg(x, y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_converted_biggan_pytorch_model_trains_in_the_group(name):
    torch.manual_seed(1)
    bg = BGNet()
    conv = convert(copy.deepcopy(bg))
    with backend_ctx(name):
        group = SpectralNormGroup(conv)
        assert len(group.entries) == 4
        got = bg_train(conv, 3, seed=2, group=group)
    want = bg_train(bg, 3, seed=2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert_converted_matches(bg, conv)
    torch.testing.assert_close(group.sigmas["linear.weight"], bg.linear.sv0[0], rtol=1e-5, atol=1e-6)


def test_biggan_pytorch_many_singular_values_convert_with_a_warning_naming_the_layers():
    torch.manual_seed(2)
    bg = BGNet(num_svs=3)
    bg_train(bg, 1, seed=3)
    with pytest.warns(ConvertWarning, match=r"num_svs > 1.*: conv1, conv2, linear, embed"):
        conv = convert(copy.deepcopy(bg))
    assert not any(k.endswith(("u1", "sv1", "u2")) for k in conv.state_dict())
    got, want = bg_train(conv, 2, seed=4), bg_train(bg, 2, seed=4)   # W / sigma uses the first pair only
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_biggan_pytorch_checkpoint_loads_strictly_into_converted_model():
    torch.manual_seed(3)
    bg = BGNet(num_svs=2)
    bg_train(bg, 2, seed=5)
    ckpt = bg.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvertWarning)
        conv = convert(BGNet(num_svs=2))
    conv.load_state_dict(ckpt, strict=True)
    bg.eval(), conv.eval()
    x, y = torch.randn(2, 3, 6, 6), torch.tensor([2, 1])
    torch.testing.assert_close(conv(x, y), bg(x, y), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv.linear.parametrizations.weight[0].sv0, bg.linear.sv0)


def test_biggan_pytorch_conversion_keeps_the_parameters():
    bg = BGNet()
    params = {n: getattr(bg, n).weight for n in ("conv1", "linear", "embed")}
    bias = bg.conv1.bias
    conv = convert(bg)
    for n, p in params.items():
        assert getattr(conv, n).parametrizations.weight.original is p
    assert conv.conv1.bias is bias


def test_biggan_pytorch_transposed_sn_is_refused():
    m = BGLinear(3, 4)
    m.transpose = True
    with pytest.raises(ValueError, match="transpose"):
        convert(nn.Sequential(m))
