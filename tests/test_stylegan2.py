"""StyleGAN2 / StyleGAN networks (gankern.models.stylegan2, gankern.nn.modulation's layers) against an independent
eager description of StyleGAN2-ADA's (S2A's) networks written here from S2A's code as read (per-sample weights,
transposed convolutions, explicit FIR filtering, S2A's state_dict names), and S2A's network pickles read without
running code: a pickle is made here in S2A's persistence layout with stand-ins of its modules."""
import collections
import io
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gankern
from gankern.augment import AugmentPipe, augment_pipe
from gankern.models import safe_pickle
from gankern.models.stylegan2 import (Discriminator, Generator, config_spec, load_stylegan2_ada, network_kwargs)
from gankern.nn import SynthesisLayer, ToRGBLayer

from conftest import backend_ctx

SQRT2 = math.sqrt(2)

# ----------------------------------------------------------------------------------------------------------------
# S2A's networks, described functionally over a state dict with S2A's names (the oracle)

_F4 = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
_F4 = _F4 / _F4.sum()


def fir(x, pad, gain=1.0):
    """Zero-pad (left, right, top, bottom), then the 4x4 binomial filter times gain, 'valid'."""
    C = x.shape[1]
    return F.conv2d(F.pad(x, pad), (_F4 * gain).to(x).expand(C, 1, 4, 4), groups=C)


def upsample_img(x):
    up = x.new_zeros(x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])
    up[:, :, ::2, ::2] = x
    return fir(up, (2, 1, 2, 1), gain=4.0)


def downsample_img(x):
    return fir(x, (1, 1, 1, 1))[:, :, ::2, ::2]


def conv_up(x, w):
    """S2A's conv2d_resample with up=2 and flip_weight=False: a transposed convolution, then FIR with gain 4."""
    k = w.shape[-1]
    a = k // 2 + 2 - (k - 1)
    return fir(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), (a, a, a, a), gain=4.0)


def conv_down(x, w):
    """S2A's conv2d_resample with down=2: FIR, then a stride-2 correlation."""
    p = w.shape[-1] // 2 + 1
    return F.conv2d(fir(x, (p, p, p, p)), w, stride=2)


def act(x, name, gain=1.0, clamp=None):
    if name == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


def fc(sd, name, x, lr=1.0, activation="linear"):
    W, b = sd[name + ".weight"], sd[name + ".bias"]
    return act(x @ (W * (lr / math.sqrt(W.shape[1]))).t() + b * lr, activation)


def normalize(x):
    return x / (x.square().mean(1, keepdim=True) + 1e-8).sqrt()


def mapping(sd, pre, kw, z, c, num_ws, psi=1, cutoff=None):
    lr, n = kw.get("lr_multiplier", 0.01), kw.get("num_layers", 8)
    parts = ([normalize(z)] if z is not None else []) + ([normalize(fc(sd, pre + "embed", c))] if c is not None else [])
    x = torch.cat(parts, 1)
    for i in range(n):
        x = fc(sd, f"{pre}fc{i}", x, lr, "lrelu")
    if num_ws is None:
        return x
    x = x[:, None].repeat(1, num_ws, 1)
    if psi != 1:
        cut = num_ws if cutoff is None else cutoff
        w_avg = sd[pre + "w_avg"]
        x[:, :cut] = w_avg + psi * (x[:, :cut] - w_avg)
    return x


def synthesis_layer(sd, pre, x, w, up, noise, clamp, gain=1.0):
    styles = fc(sd, pre + ".affine", w)
    W = sd[pre + ".weight"]
    out = []
    for n in range(x.shape[0]):  # per-sample weights, demodulated
        wn = W * styles[n][None, :, None, None]
        wn = wn * (wn.square().sum([1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        out.append(conv_up(x[n:n + 1], wn) if up == 2 else F.conv2d(x[n:n + 1], wn, padding=W.shape[-1] // 2))
    y = torch.cat(out)
    if noise is not None:
        y = y + noise * sd[pre + ".noise_strength"]
    y = y + sd[pre + ".bias"][None, :, None, None]
    return act(y, "lrelu", gain, None if clamp is None else clamp * gain)


def torgb(sd, pre, x, w, clamp):
    W = sd[pre + ".weight"]
    styles = fc(sd, pre + ".affine", w) / math.sqrt(W.shape[1] * W.shape[2] * W.shape[3])
    y = torch.cat([F.conv2d(x[n:n + 1], W * styles[n][None, :, None, None]) for n in range(x.shape[0])])
    return act(y + sd[pre + ".bias"][None, :, None, None], "linear", 1.0, clamp)


def reference_G(sd, kw, z, c, psi=1, cutoff=None, noise_mode="random"):
    sk, R = kw["synthesis_kwargs"], kw["img_resolution"]
    arch, clamp = sk.get("architecture", "skip"), sk.get("conv_clamp")
    resolutions = [2 ** i for i in range(2, int(math.log2(R)) + 1)]
    num_ws = 2 * len(resolutions)
    N = z.shape[0]
    ws = mapping(sd, "mapping.", kw["mapping_kwargs"], z, c if kw["c_dim"] else None, num_ws, psi, cutoff)
    x = img = None
    idx = 0
    for res in resolutions:
        b = f"synthesis.b{res}."

        def noise(layer):
            if noise_mode == "random":
                return torch.randn([N, 1, res, res])
            return sd[b + layer + ".noise_const"] if noise_mode == "const" else None

        nconv = 1 if res == 4 else 2
        bws = ws[:, idx: idx + nconv + 1]
        idx += nconv
        if res == 4:
            x = synthesis_layer(sd, b + "conv1", sd[b + "const"][None].repeat(N, 1, 1, 1), bws[:, 0], 1,
                                noise("conv1"), clamp)
        else:
            if arch == "resnet":
                Wskip = sd[b + "skip.weight"]
                y = conv_up(x, Wskip / math.sqrt(Wskip.shape[1])) * math.sqrt(0.5)
            x = synthesis_layer(sd, b + "conv0", x, bws[:, 0], 2, noise("conv0"), clamp)
            x = synthesis_layer(sd, b + "conv1", x, bws[:, 1], 1, noise("conv1"), clamp,
                                math.sqrt(0.5) if arch == "resnet" else 1.0)
            if arch == "resnet":
                x = y + x
        if img is not None:
            img = upsample_img(img)
        if arch == "skip" or res == R:
            y = torgb(sd, b + "torgb", x, bws[:, nconv], clamp)
            img = y if img is None else img + y
    return img


def conv_layer(sd, pre, x, activation, clamp, down=1, gain=1.0, bias=True):
    W = sd[pre + ".weight"]
    W = W / math.sqrt(W.shape[1] * W.shape[2] * W.shape[3])
    y = conv_down(x, W) if down == 2 else F.conv2d(x, W, padding=W.shape[-1] // 2)
    if bias:
        y = y + sd[pre + ".bias"][None, :, None, None]
    return act(y, activation, gain, None if clamp is None else clamp * gain)


def minibatch_std(x, group, num_channels):
    N, C, H, W = x.shape
    G = N if group is None else min(group, N)
    y = x.reshape(G, -1, num_channels, C // num_channels, H, W)
    y = ((y - y.mean(0)).square().mean(0) + 1e-8).sqrt().mean([2, 3, 4])
    return torch.cat([x, y.reshape(-1, num_channels, 1, 1).repeat(G, 1, H, W)], 1)


def reference_D(sd, kw, img, c):
    arch, R, clamp = kw.get("architecture", "resnet"), kw["img_resolution"], kw.get("conv_clamp")
    ek = kw.get("epilogue_kwargs", {})
    x = None
    for res in [2 ** i for i in range(int(math.log2(R)), 2, -1)]:
        b = f"b{res}."
        if x is None or arch == "skip":
            y = conv_layer(sd, b + "fromrgb", img, "lrelu", clamp)
            x = y if x is None else x + y
            img = downsample_img(img) if arch == "skip" else None
        if arch == "resnet":
            y = conv_layer(sd, b + "skip", x, "linear", None, down=2, gain=math.sqrt(0.5), bias=False)
            x = conv_layer(sd, b + "conv0", x, "lrelu", clamp)
            x = y + conv_layer(sd, b + "conv1", x, "lrelu", clamp, down=2, gain=math.sqrt(0.5))
        else:
            x = conv_layer(sd, b + "conv1", conv_layer(sd, b + "conv0", x, "lrelu", clamp), "lrelu", clamp, down=2)
    if arch == "skip":
        x = x + conv_layer(sd, "b4.fromrgb", img, "lrelu", None)
    x = minibatch_std(x, ek.get("mbstd_group_size", 4), ek.get("mbstd_num_channels", 1))
    x = conv_layer(sd, "b4.conv", x, "lrelu", clamp)
    x = fc(sd, "b4.out", fc(sd, "b4.fc", x.flatten(1), activation="lrelu"))
    if kw["c_dim"]:
        cmap = mapping(sd, "mapping.", kw.get("mapping_kwargs", {}), None, c, None)
        x = (x * cmap).sum(1, keepdim=True) / math.sqrt(cmap.shape[1])
    return x


def s2a_G_keys(kw):
    """S2A's state_dict names of a Generator (from networks.py as read)."""
    sk, mk, R = kw["synthesis_kwargs"], kw["mapping_kwargs"], kw["img_resolution"]
    arch = sk.get("architecture", "skip")
    keys = {f"mapping.fc{i}.{p}" for i in range(mk.get("num_layers", 8)) for p in ("weight", "bias")}
    keys |= {"mapping.w_avg"} | ({"mapping.embed.weight", "mapping.embed.bias"} if kw["c_dim"] else set())
    layer = ("affine.weight", "affine.bias", "weight", "bias", "noise_const", "noise_strength", "resample_filter")
    for res in [2 ** i for i in range(2, int(math.log2(R)) + 1)]:
        b = f"synthesis.b{res}."
        keys |= {b + "resample_filter"} | {b + "conv1." + p for p in layer}
        keys |= {b + "const"} if res == 4 else {b + "conv0." + p for p in layer}
        if arch == "skip" or res == R:
            keys |= {b + "torgb." + p for p in ("affine.weight", "affine.bias", "weight", "bias")}
        if arch == "resnet" and res > 4:
            keys |= {b + "skip.weight", b + "skip.resample_filter"}
    return keys


def s2a_D_keys(kw):
    arch, R = kw.get("architecture", "resnet"), kw["img_resolution"]
    keys = set()
    conv = ("weight", "bias", "resample_filter")
    for res in [2 ** i for i in range(int(math.log2(R)), 2, -1)]:
        b = f"b{res}."
        keys |= {b + "resample_filter"} | {b + n + "." + p for n in ("conv0", "conv1") for p in conv}
        if res == R or arch == "skip":
            keys |= {b + "fromrgb." + p for p in conv}
        if arch == "resnet":
            keys |= {b + "skip.weight", b + "skip.resample_filter"}
    keys |= {"b4.conv." + p for p in conv} | {f"b4.{n}.{p}" for n in ("fc", "out") for p in ("weight", "bias")}
    if arch == "skip":
        keys |= {"b4.fromrgb." + p for p in conv}
    if kw["c_dim"]:
        keys |= {f"mapping.fc{i}.{p}" for i in range(kw["mapping_kwargs"]["num_layers"]) for p in ("weight", "bias")}
        keys |= {"mapping.embed.weight", "mapping.embed.bias"}
    return keys


# Tiny configurations (16 px, <= 16 channels): unconditional skip/resnet, conditional with an active clamp.
CONFIGS = {
    "skip": dict(G=dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16)),
                 D=dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)),
    "resnet-cond-clamp": dict(
        G=dict(z_dim=6, c_dim=3, w_dim=8, img_resolution=16, img_channels=3,
               mapping_kwargs=dict(num_layers=3, lr_multiplier=0.1),
               synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture="resnet", conv_clamp=1.0)),
        D=dict(c_dim=3, img_resolution=16, img_channels=3, architecture="skip", channel_base=64, channel_max=8,
               conv_clamp=1.0, mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_group_size=2))),
    "orig": dict(G=dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=1),
                        synthesis_kwargs=dict(channel_base=32, channel_max=8, architecture="orig")),
                 D=dict(c_dim=0, img_resolution=8, img_channels=1, architecture="orig", channel_base=32,
                        channel_max=8, epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=2))),
}


def randomized(net, seed):
    """Perturb every parameter and buffer so that biases, noise strengths and w_avg all matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not name.endswith("resample_filter"):
                t.add_(torch.randn(t.shape, generator=g) * 0.3)
    return net


def make_nets(cfg, seed=0):
    torch.manual_seed(seed)
    kw = CONFIGS[cfg]
    return randomized(Generator(**kw["G"]), seed).eval(), randomized(Discriminator(**kw["D"]), seed + 1).eval()


def inputs(kw, N=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, kw["z_dim"], generator=g)
    c = F.one_hot(torch.arange(N) % kw["c_dim"], kw["c_dim"]).float() if kw["c_dim"] else None
    return z, c


TOL = dict(rtol=1e-4, atol=1e-4)  # fp32, different summation orders (grouped vs split convolutions)


# ----------------------------------------------------------------------------------------------------------------
# the networks


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_networks_match_s2a_reference(cfg):
    G, D = make_nets(cfg)
    kw = CONFIGS[cfg]
    sd_G, sd_D = G.state_dict(), D.state_dict()
    assert set(sd_G) == s2a_G_keys(kw["G"])
    assert set(sd_D) == s2a_D_keys(kw["D"])
    z, c = inputs(kw["G"])
    for psi, cutoff, mode in ((1, None, "const"), (0.7, None, "none"), (0.5, 2, "random")):
        torch.manual_seed(5)
        got = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode=mode)
        torch.manual_seed(5)
        want = reference_G(sd_G, kw["G"], z, c, psi, cutoff, mode)
        torch.testing.assert_close(got, want, **TOL)
    img = got.detach()
    torch.testing.assert_close(D(img, c), reference_D(sd_D, kw["D"], img, c), **TOL)
    ws = G.mapping(z, c)
    assert ws.shape == (4, G.num_ws, G.w_dim)
    torch.testing.assert_close(G.synthesis(ws, noise_mode="none"), reference_G(sd_G, kw["G"], z, c, 1, None, "none"),
                               **TOL)


def test_mapping_tracks_w_avg_in_training_only():
    G, _ = make_nets("skip")
    z, c = inputs(CONFIGS["skip"]["G"])
    before = G.mapping.w_avg.clone()
    G.eval()(z, c)
    torch.testing.assert_close(G.mapping.w_avg, before)
    G.train()
    w = G.mapping(z, c, skip_w_avg_update=True)[:, 0]
    torch.testing.assert_close(G.mapping.w_avg, before)
    G.mapping(z, c)
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0) + 0.995 * (before - w.mean(0)))
    ws = G.eval().mapping(z, c, truncation_psi=0)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand_as(ws))


def test_gradients_and_r1_second_order():
    G, D = make_nets("resnet-cond-clamp")
    G.train(), D.train()
    z, c = inputs(CONFIGS["resnet-cond-clamp"]["G"])
    img = G(z, c)
    D(img, c).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in G.parameters())
    x = img.detach().requires_grad_(True)
    r1 = gankern.ops.r1_penalty(D(x, c), x)
    grads = torch.autograd.grad(r1, list(D.parameters()), allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


class _OpCalls:
    """Record which gankern ops (and which torch convolutions) code in gankern.nn / models / augment calls."""

    OPS = {gankern.ops.modulation: ("modulated_conv2d", "bias_act", "adain", "noise_bias_act"),
           gankern.ops.resample: ("conv2d_resample", "upsample2d", "downsample2d", "upfirdn2d"),
           gankern.ops.minibatch: ("minibatch_stddev",),
           F: ("conv2d", "conv_transpose2d", "leaky_relu", "instance_norm")}

    def __init__(self, monkeypatch):
        self.calls = set()
        for mod, names in self.OPS.items():
            for name in names:
                monkeypatch.setattr(mod, name, self._wrap(name, getattr(mod, name)))

    def _wrap(self, name, fn):
        def call(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith(("gankern.nn", "gankern.models", "gankern.augment")):
                self.calls.add(name)
            return fn(*args, **kwargs)
        return call


@pytest.mark.parametrize("layer", ["modconv", "adain"])
def test_model_calls_gankern_ops(monkeypatch, layer):
    """G (skip architecture) and D (skip architecture, conditional) call gankern's fused ops for every hot op, and
    no torch convolution or activation directly."""
    kw_G, kw_D = CONFIGS["skip"]["G"], CONFIGS["resnet-cond-clamp"]["D"]
    torch.manual_seed(0)
    G = Generator(**{**kw_G, "synthesis_kwargs": {**kw_G["synthesis_kwargs"], "layer": layer}})
    D = Discriminator(**kw_D)
    rec = _OpCalls(monkeypatch)
    z, _ = inputs(kw_G)
    G(z, None, noise_mode="random")
    gen = rec.calls.copy()
    rec.calls.clear()
    D(torch.randn(4, 3, 16, 16), torch.eye(3)[[0, 1, 2, 0]])
    styles = set() if layer == "modconv" else {"adain", "noise_bias_act", "conv2d_resample"}
    assert gen == {"bias_act", "upsample2d", "modulated_conv2d"} | styles
    assert rec.calls == {"bias_act", "conv2d_resample", "downsample2d", "minibatch_stddev"}


def test_stylegan1_adain_mode():
    kw = dict(CONFIGS["skip"]["G"], synthesis_kwargs=dict(channel_base=128, channel_max=16, layer="adain"))
    torch.manual_seed(0)
    G = randomized(Generator(**kw), 3)
    keys = set(G.state_dict())
    assert "synthesis.b8.conv0.adain.affine.weight" in keys and "synthesis.b8.conv0.noise_strength" in keys
    assert G.synthesis.b16.conv0.noise_strength.shape == (8,)  # StyleGAN's per-channel noise strength
    z, _ = inputs(kw)
    img = G(z, None, noise_mode="const")
    assert img.shape == (4, 3, 16, 16) and img.isfinite().all()
    # the layer's meaning: conv -> noise * strength + bias -> lrelu -> AdaIN(w)
    layer, x, w = G.synthesis.b16.conv1, torch.randn(2, 8, 16, 16), torch.randn(2, 8)
    sd = {k: v for k, v in layer.state_dict().items()}
    Wc = sd["weight"] / math.sqrt(8 * 9)
    y = F.conv2d(x, Wc, padding=1) + sd["noise_const"] * sd["noise_strength"][None, :, None, None]
    y = act(y + sd["bias"][None, :, None, None], "lrelu")
    gb = fc(sd, "adain.affine", w)
    want = F.instance_norm(y, eps=1e-5) * gb[:, :8, None, None] + gb[:, 8:, None, None]
    torch.testing.assert_close(layer(x, w, noise_mode="const"), want, **TOL)
    G.train()(z, None).square().mean().backward()
    assert all(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_blocks(half):
    kw = CONFIGS["skip"]
    torch.manual_seed(0)
    G = randomized(Generator(**{**kw["G"], "synthesis_kwargs": {**kw["G"]["synthesis_kwargs"], "num_fp16_res": 2,
                                                                "conv_clamp": 256, "half_dtype": half}}), 0).eval()
    D = randomized(Discriminator(**{**kw["D"], "num_fp16_res": 2, "conv_clamp": 256,
                                    "block_kwargs": {"half_dtype": half}}), 1).eval()
    assert [G.synthesis.b4.use_fp16, G.synthesis.b8.use_fp16, G.synthesis.b16.use_fp16] == [False, True, True]
    seen = {}
    G.synthesis.b16.conv0.register_forward_pre_hook(lambda m, i: seen.update(g=(i[0].dtype, i[0].is_contiguous(
        memory_format=torch.channels_last))))
    z, c = inputs(kw["G"])
    img = G(z, c, noise_mode="const")
    assert img.dtype == torch.float32 and seen["g"] == (getattr(torch, half), True)
    ref = G(z, c, noise_mode="const", force_fp32=True)
    tol = 0.05 if half == "float16" else 0.3  # 10 (fp16) or 7 (bf16) mantissa bits through ~5 layers
    torch.testing.assert_close(img, ref, rtol=tol, atol=tol)
    logits = D(img, c)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, D(img, c, force_fp32=True), rtol=tol, atol=tol)


def test_synthesis_and_torgb_layers_load_s2a_state_dicts():
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 5, w_dim=6, resolution=10, up=2, conv_clamp=0.8)
    sd = {"affine.weight": torch.randn(4, 6), "affine.bias": torch.randn(4) + 1, "weight": torch.randn(5, 4, 3, 3),
          "noise_const": torch.randn(10, 10), "noise_strength": torch.tensor(0.7), "bias": torch.randn(5),
          "resample_filter": _F4.clone()}
    layer.load_state_dict(sd, strict=True)
    x, w = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    sd_dot = {"." + k: v for k, v in sd.items()}
    want = synthesis_layer(sd_dot, "", x, w, 2, sd["noise_const"], 0.8, gain=1.3)
    torch.testing.assert_close(layer(x, w, noise_mode="const", gain=1.3), want, **TOL)
    rgb = ToRGBLayer(5, 3, w_dim=6, conv_clamp=0.5)
    sd = {"affine.weight": torch.randn(5, 6), "affine.bias": torch.randn(5), "weight": torch.randn(3, 5, 1, 1),
          "bias": torch.randn(3)}
    rgb.load_state_dict(sd, strict=True)
    x = torch.randn(2, 5, 7, 7)
    torch.testing.assert_close(rgb(x, w), torgb({"." + k: v for k, v in sd.items()}, "", x, w, 0.5), **TOL)
    with pytest.raises(ValueError, match="noise_mode"):
        layer(torch.randn(2, 4, 5, 5), w, noise_mode="fixed")


def test_kernel_backend_matches_ref():
    """One tiny G + D forward and backward on the Triton kernels (interpreted) against the ref backend."""
    kw = CONFIGS["orig"]
    G, D = make_nets("orig")
    z, _ = inputs(kw["G"], N=2)

    def run():
        G.zero_grad(), D.zero_grad()
        img = G(z, None, noise_mode="const")
        D(img, None).sum().backward()
        return [img] + [p.grad.clone() for p in list(G.parameters()) + list(D.parameters())]

    with backend_ctx("ref"):
        want = run()
    with backend_ctx("triton"):
        got = run()
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-3)


BAD = {
    "z shape": (lambda G, D: G(torch.randn(2, 7), None), ValueError, "z must have shape"),
    "c missing": (lambda G, D: G(torch.randn(2, 6), None), TypeError, "c must be a torch.Tensor"),
    "ws shape": (lambda G, D: G.synthesis(torch.randn(2, 3, 8)), ValueError, "ws must have shape"),
    "img shape": (lambda G, D: D(torch.randn(2, 3, 8, 8), torch.zeros(2, 3)), ValueError, "img must have shape"),
    "c batch": (lambda G, D: D(torch.randn(2, 3, 16, 16), torch.zeros(3, 3)), ValueError, "c must have shape"),
    "noise mode": (lambda G, D: G(torch.randn(2, 6), torch.zeros(2, 3), noise_mode="x"), ValueError, "noise_mode"),
    "resolution": (lambda G, D: Generator(8, 0, 8, 12, 3), ValueError, "power of two"),
    "architecture": (lambda G, D: Discriminator(0, 8, 3, architecture="x"), ValueError, "architecture"),
    "half dtype": (lambda G, D: Generator(8, 0, 8, 8, 3, synthesis_kwargs=dict(half_dtype="fp8")), ValueError,
                   "half_dtype"),
    "truncation": (lambda G, D: D.mapping(None, torch.zeros(2, 3), truncation_psi=0.5), ValueError, "w_avg"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_says_why(case):
    G, D = make_nets("resnet-cond-clamp")
    fn, err, match = BAD[case]
    with pytest.raises(err, match=match):
        fn(G, D)


def test_configs_follow_s2a():
    spec = config_spec("auto", 256, gpus=2)
    assert (spec["mb"], spec["mbstd"], spec["fmaps"], spec["lrate"], spec["ema"]) == (32, 4, 0.5, 0.0025, 10)
    assert spec["gamma"] == pytest.approx(0.0002 * 256 ** 2 / 32)
    G_kw, D_kw = network_kwargs("paper256", 256)
    assert G_kw["synthesis_kwargs"] == dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256)
    assert G_kw["mapping_kwargs"] == dict(num_layers=8) and D_kw["epilogue_kwargs"] == dict(mbstd_group_size=8)
    assert network_kwargs("cifar", 32)[1]["architecture"] == "orig"
    with pytest.raises(ValueError, match="unknown config"):
        config_spec("paper128", 128)


# ----------------------------------------------------------------------------------------------------------------
# S2A's network pickles: stand-ins of S2A's persistence layout


@pytest.fixture
def s2a_modules(monkeypatch):
    """Stand-ins of the modules an S2A pickle names (torch_utils.persistence, dnnlib.util), so that pickle can
    write references to them. The reconstruct function raises: loading must never call it."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("S2A's reconstruct function was called")

    class EasyDict(dict):
        pass

    mods = {"torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": types.ModuleType("dnnlib.util")}
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


class PersistentModule:
    """What S2A's persistent_class decorator makes pickle write for a module: (reconstruct, (meta,)) with the
    module's __dict__ as meta["state"] and its class's module source as text."""

    SRC = "import os\nos.makedirs('{marker}')\n"  # the source a pickle carries: loading must not run it

    def __init__(self, s2a, class_name, state, marker):
        self.s2a, self.class_name, self.state, self.marker = s2a, class_name, state, marker

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.SRC.format(marker=self.marker),
                    class_name=self.class_name, state=self.state)
        return self.s2a.reconstruct, (meta,)


def stand_in(s2a, class_name, tensors, init_kwargs, marker, params=True):
    """An S2A module tree (as persistent stand-ins) holding ``tensors`` (a flat state dict with S2A's names)."""
    tree = {}
    for name, t in tensors.items():
        node = tree
        *path, leaf = name.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = t

    def make(cls, node, kwargs):
        is_buffer = lambda k: k in ("resample_filter", "noise_const", "w_avg", "p", "Hz_geom", "Hz_fbank")  # noqa
        state = dict(training=False, _parameters=collections.OrderedDict(), _buffers=collections.OrderedDict(),
                     _non_persistent_buffers_set=set(), _modules=collections.OrderedDict(),
                     _forward_hooks=collections.OrderedDict(), _init_args=(),
                     _init_kwargs=s2a.EasyDict(kwargs), weight_gain=np.float64(0.125), activation="lrelu")
        for k, v in node.items():
            if isinstance(v, dict):
                state["_modules"][k] = make(k.rstrip("0123456789").capitalize() or "Layer", v, {})
            elif is_buffer(k) or not params:
                state["_buffers"][k] = v.clone()
            else:
                state["_parameters"][k] = torch.nn.Parameter(v.clone(), requires_grad=False)
        return PersistentModule(s2a, cls, state, marker)

    return make(class_name, tree, init_kwargs)


def easy(s2a, kw):
    return s2a.EasyDict({k: easy(s2a, v) if isinstance(v, dict) else v for k, v in kw.items()})


def write_s2a_pickle(s2a, path, cfg, protocol, marker):
    G, D = make_nets(cfg)
    G_ema = randomized(Generator(**CONFIGS[cfg]["G"]), 7).eval()
    pipe = augment_pipe("bgc", xint_max=0.25)
    pipe.p.fill_(0.3)
    kw = CONFIGS[cfg]
    data = dict(training_set_kwargs=dict(path="data.zip", resolution=16, use_labels=bool(kw["G"]["c_dim"])),
                G=stand_in(s2a, "Generator", G.state_dict(), easy(s2a, kw["G"]), marker),
                D=stand_in(s2a, "Discriminator", D.state_dict(), easy(s2a, kw["D"]), marker),
                G_ema=stand_in(s2a, "Generator", G_ema.state_dict(), easy(s2a, kw["G"]), marker),
                augment_pipe=stand_in(s2a, "AugmentPipe", pipe.state_dict(),
                                      dict(AUGPIPE_BGC, xint_max=0.25), marker, params=False))
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return G, D, G_ema


AUGPIPE_BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
                   lumaflip=1, hue=1, saturation=1)


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("cfg", ["skip", "resnet-cond-clamp"])
def test_load_s2a_pickle_gives_the_same_images(s2a_modules, tmp_path, cfg, protocol):
    path, marker = tmp_path / "network-snapshot-000000.pkl", tmp_path / "code-ran"
    G0, D0, G_ema0 = write_s2a_pickle(s2a_modules, path, cfg, protocol, marker)
    nets = load_stylegan2_ada(path)
    assert not marker.exists()
    kw = CONFIGS[cfg]
    z, c = inputs(kw["G"])
    for name, ref in (("G", G0), ("G_ema", G_ema0)):
        G = nets[name]
        assert isinstance(G, Generator) and not G.training
        for psi, cutoff, mode in ((1, None, "const"), (0.6, 3, "random")):
            torch.manual_seed(2)
            got = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode=mode)
            torch.manual_seed(2)
            want = reference_G(ref.state_dict(), kw["G"], z, c, psi, cutoff, mode)
            torch.testing.assert_close(got, want, **TOL)
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(nets["D"](img, c), reference_D(D0.state_dict(), kw["D"], img, c), **TOL)
    pipe = nets["augment_pipe"]
    assert isinstance(pipe, AugmentPipe) and float(pipe.p) == pytest.approx(0.3) and pipe.xint_max == 0.25
    assert nets["training_set_kwargs"]["path"] == "data.zip"


def test_load_s2a_pickle_overrides(s2a_modules, tmp_path):
    path = tmp_path / "net.pkl"
    G0, _, _ = write_s2a_pickle(s2a_modules, path, "skip", 4, tmp_path / "m")
    nets = load_stylegan2_ada(path, G_kwargs=dict(synthesis_kwargs=dict(num_fp16_res=1, conv_clamp=256)))
    assert nets["G"].synthesis.b16.use_fp16 and nets["G_ema"].synthesis.num_fp16_res == 1
    z, _ = inputs(CONFIGS["skip"]["G"])
    torch.testing.assert_close(nets["G"](z, None, noise_mode="none", force_fp32=True),
                               reference_G(G0.state_dict(), CONFIGS["skip"]["G"], z, None, 1, None, "none"), **TOL)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


class _EvilSystem:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_malicious_pickle_is_refused_without_running(s2a_modules, tmp_path):
    marker = tmp_path / "pwned"
    for payload, named in ((_Evil(marker), "os.makedirs"), (_EvilSystem(), "system")):
        path = tmp_path / "evil.pkl"
        with open(path, "wb") as f:
            pickle.dump({"G": payload}, f)
        with pytest.raises(safe_pickle.RefusedGlobal, match=named):
            load_stylegan2_ada(path)
    assert not marker.exists()
    # the evil object inside an otherwise valid S2A state
    G, _ = make_nets("skip")
    net = stand_in(s2a_modules, "Generator", G.state_dict(), easy(s2a_modules, CONFIGS["skip"]["G"]), marker)
    net.state["_forward_hooks"] = collections.OrderedDict(hook=_Evil(marker))
    with open(path, "wb") as f:
        pickle.dump({"G": net}, f)
    with pytest.raises(safe_pickle.RefusedGlobal, match="os.makedirs"):
        load_stylegan2_ada(path)
    assert not marker.exists()


def test_pickle_of_other_networks_says_why(s2a_modules, tmp_path):
    path = tmp_path / "net.pkl"
    G, _ = make_nets("skip")
    with open(path, "wb") as f:
        pickle.dump({"G": stand_in(s2a_modules, "SuperResGenerator", G.state_dict(), {}, tmp_path / "m")}, f)
    with pytest.raises(ValueError, match="SuperResGenerator"):
        load_stylegan2_ada(path)
    sd = dict(G.state_dict())
    sd.pop("synthesis.b8.conv0.bias")
    with open(path, "wb") as f:
        pickle.dump({"G": stand_in(s2a_modules, "Generator", sd, easy(s2a_modules, CONFIGS["skip"]["G"]),
                                   tmp_path / "m")}, f)
    with pytest.raises(ValueError, match="missing.*b8.conv0.bias"):
        load_stylegan2_ada(path)
    with open(path, "wb") as f:
        pickle.dump({"G": 1}, f)
    with pytest.raises(ValueError, match="not an S2A network"):
        load_stylegan2_ada(path)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_load_s2a_state_dicts(tmp_path, cfg):
    G0, D0 = make_nets(cfg)
    kw = CONFIGS[cfg]
    extra_G = {k: v for k, v in kw["G"]["synthesis_kwargs"].items() if k == "conv_clamp"}
    extra_G = dict(synthesis_kwargs=extra_G, mapping_kwargs={k: v for k, v in kw["G"]["mapping_kwargs"].items()
                                                             if k == "lr_multiplier"})
    extra_D = {k: v for k, v in kw["D"].items() if k == "conv_clamp"}
    extra_D["epilogue_kwargs"] = {k: v for k, v in kw["D"].get("epilogue_kwargs", {}).items()
                                  if k == "mbstd_group_size"}
    torch.save({"G": G0.state_dict(), "D": D0.state_dict(), "G_ema": G0.state_dict()}, tmp_path / "nets.pt")
    torch.save(G0.state_dict(), tmp_path / "g.pth")
    nets = load_stylegan2_ada(tmp_path / "nets.pt", G_kwargs=extra_G, D_kwargs=extra_D)
    G1 = load_stylegan2_ada(tmp_path / "g.pth", G_kwargs=extra_G)["G"]
    z, c = inputs(kw["G"])
    want = reference_G(G0.state_dict(), kw["G"], z, c, 0.8, None, "const")
    for G in (nets["G"], nets["G_ema"], G1):
        torch.testing.assert_close(G(z, c, truncation_psi=0.8, noise_mode="const"), want, **TOL)
    img = torch.randn(4, kw["G"]["img_channels"], kw["G"]["img_resolution"], kw["G"]["img_resolution"])
    torch.testing.assert_close(nets["D"](img, c), reference_D(D0.state_dict(), kw["D"], img, c), **TOL)


def test_safe_pickle_reads_numpy_scalars_and_refuses_arrays():
    buf = io.BytesIO()
    pickle.dump({"gain": np.float64(0.5), "n": np.int32(3)}, buf, protocol=4)
    assert safe_pickle.load(io.BytesIO(buf.getvalue())) == {"gain": 0.5, "n": 3}
    buf = io.BytesIO()
    pickle.dump(np.zeros(3), buf)
    with pytest.raises(safe_pickle.RefusedGlobal, match="numpy"):
        safe_pickle.load(io.BytesIO(buf.getvalue()))


def test_bench_quick_runs_on_the_cpu():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_stylegan2.py")
    spec = importlib.util.spec_from_file_location("bench_stylegan2", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(quick=True)
    assert {r["workload"] for r in rows} == {"step", "PL phase", "R1 phase", "step + R1 + PL",
                                            "step, amortized (PL / 4, R1 / 16)"}
    assert all(r["ms"] and r["ms"] > 0 and "error" not in r for r in rows)
    assert all(r["img_per_s"] > 0 for r in rows if r["workload"].startswith("step"))
    assert all(r["floor_ms"] > 0 for r in rows if not r.get("derived"))


def test_cli_generates_and_projects_from_an_s2a_pickle(s2a_modules, tmp_path):
    from gankern.cli import main
    from gankern.models.stylegan2_tools import generate_images
    path, marker = tmp_path / "network-snapshot-000000.pkl", tmp_path / "code-ran"
    _, _, G_ema = write_s2a_pickle(s2a_modules, path, "skip", 4, marker)
    png = str(tmp_path / "seeds.png")
    assert main(["generate", "--network", str(path), "--seeds", "0-3", "--trunc", "0.7", "--out", png]) == 0
    torch.testing.assert_close(generate_images(load_stylegan2_ada(path)["G_ema"], [0, 1, 2, 3], 0.7),
                               generate_images(G_ema, [0, 1, 2, 3], 0.7), **TOL)
    assert main(["project", "--network", str(path), "--target", png, "--num-steps", "2",
                 "--outdir", str(tmp_path / "proj")]) == 0
    assert not marker.exists() and os.path.exists(tmp_path / "proj" / "projected_w.npz")
