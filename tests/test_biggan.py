"""gankern.models.biggan: BigGAN-PyTorch checkpoints load (a stand-in of BG's G and D written from reading BG's
BigGAN.py, BigGANdeep.py and layers.py, saved and loaded), the sampling helpers, orthogonal regularization, the
batched spectral norm over the model, cross-replica BatchNorm (two CPU ranks), and bench/bench_biggan.py's quick mode."""
import copy
import dataclasses
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankern.models import biggan as B
from gankern.nn import SpectralNormGroup
from gankern.nn.spectral_norm import SpectralNorm

from test_convert import BGConv2d, BGEmbedding, BGLinear
from test_train import one_thread  # noqa: F401  (autouse: one thread as the spawned ranks, float32 sums in one order)

# ---------------------------------------------------------------------------------------------------------------
# a stand-in of BigGAN-PyTorch (BG): its module layout, key names and eval-mode math


class BGccbn(nn.Module):
    def __init__(self, out, inp, which_linear, eps=1e-5):
        super().__init__()
        self.gain, self.bias, self.eps = which_linear(inp, out), which_linear(inp, out), eps
        self.register_buffer("stored_mean", torch.zeros(out))
        self.register_buffer("stored_var", torch.ones(out))

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training, 0.1, self.eps)
        return out * gain + bias


class BGbn(nn.Module):
    def __init__(self, out, eps=1e-5):
        super().__init__()
        self.gain, self.bias, self.eps = nn.Parameter(torch.ones(out)), nn.Parameter(torch.zeros(out)), eps
        self.register_buffer("stored_mean", torch.zeros(out))
        self.register_buffer("stored_var", torch.ones(out))

    def forward(self, x, y=None):
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training, 0.1, self.eps)


class BGAttention(nn.Module):
    def __init__(self, ch, which_conv):
        super().__init__()
        self.ch = ch
        self.theta = which_conv(ch, ch // 8, 1, bias=False)
        self.phi = which_conv(ch, ch // 8, 1, bias=False)
        self.g = which_conv(ch, ch // 2, 1, bias=False)
        self.o = which_conv(ch // 2, ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x, y=None):
        theta = self.theta(x).view(-1, self.ch // 8, x.shape[2] * x.shape[3])
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(-1, self.ch // 8, x.shape[2] * x.shape[3] // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(-1, self.ch // 2, x.shape[2] * x.shape[3] // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(-1, self.ch // 2, x.shape[2], x.shape[3]))
        return self.gamma * o + x


class BGGBlock(nn.Module):
    def __init__(self, i, o, which_conv, which_bn):
        super().__init__()
        self.conv1, self.conv2, self.conv_sc = which_conv(i, o), which_conv(o, o), which_conv(i, o, 1)
        self.bn1, self.bn2 = which_bn(i), which_bn(o)

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        x = F.interpolate(x, scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.conv_sc(x)


class BGDeepGBlock(nn.Module):
    def __init__(self, i, o, which_conv, which_bn, upsample):
        super().__init__()
        hid = i // 4
        self.i, self.o, self.upsample = i, o, upsample
        self.conv1, self.conv2 = which_conv(i, hid, 1), which_conv(hid, hid)
        self.conv3, self.conv4 = which_conv(hid, hid), which_conv(hid, o, 1)
        self.bn1, self.bn2, self.bn3, self.bn4 = which_bn(i), which_bn(hid), which_bn(hid), which_bn(hid)

    def forward(self, x, y):
        h = self.conv1(F.relu(self.bn1(x, y)))
        h = F.relu(self.bn2(h, y))
        if self.i != self.o:
            x = x[:, :self.o]
        if self.upsample:
            h, x = F.interpolate(h, scale_factor=2), F.interpolate(x, scale_factor=2)
        h = self.conv2(h)
        h = self.conv3(F.relu(self.bn3(h, y)))
        return self.conv4(F.relu(self.bn4(h, y))) + x


class BGDBlock(nn.Module):
    def __init__(self, i, o, which_conv, preactivation, downsample):
        super().__init__()
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1, self.conv2 = which_conv(i, o), which_conv(o, o)
        self.learnable_sc = i != o or downsample
        if self.learnable_sc:
            self.conv_sc = which_conv(i, o, 1)

    def shortcut(self, x):
        if self.preactivation:
            if self.learnable_sc:
                x = self.conv_sc(x)
            if self.downsample:
                x = F.avg_pool2d(x, 2)
        else:
            if self.downsample:
                x = F.avg_pool2d(x, 2)
            if self.learnable_sc:
                x = self.conv_sc(x)
        return x

    def forward(self, x):
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


class BGDeepDBlock(nn.Module):
    def __init__(self, i, o, which_conv, downsample):
        super().__init__()
        hid = o // 4
        self.downsample = downsample
        self.conv1, self.conv2 = which_conv(i, hid, 1), which_conv(hid, hid)
        self.conv3, self.conv4 = which_conv(hid, hid), which_conv(hid, o, 1)
        self.learnable_sc = i != o
        if self.learnable_sc:
            self.conv_sc = which_conv(i, o - i, 1)

    def forward(self, x):
        h = self.conv3(F.relu(self.conv2(F.relu(self.conv1(F.relu(x))))))
        h = F.relu(h)
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        if self.learnable_sc:
            x = torch.cat([x, self.conv_sc(x)], 1)
        return self.conv4(h) + x


# BG's arch tables: G (in_channels, out_channels) multipliers, block resolution 8 * 2**i; D per resolution:
# in / out multipliers, downsample flags and resolution labels (BigGAN and BigGAN-deep).
BG_G = {32: ([4, 4, 4], [4, 4, 4]), 64: ([16, 16, 8, 4], [16, 8, 4, 2])}
BG_D = {32: ([4, 4, 4], [4, 4, 4, 4], [True, True, False, False], [16, 16, 16, 16]),
        64: ([1, 2, 4, 8], [1, 2, 4, 8, 16], [True] * 4 + [False], [32, 16, 8, 4, 4])}
BG_DEEP_D = {64: ([1, 2, 4, 8], [2, 4, 8, 16], [True] * 4, [32, 16, 8, 4])}


def bg_layers(num_svs, eps):
    def conv(i, o, k=3, bias=True):
        return BGConv2d(i, o, k, padding=k // 2, bias=bias, num_svs=num_svs, eps=eps)

    def linear(i, o, bias=True):
        return BGLinear(i, o, bias, num_svs=num_svs, eps=eps)
    return conv, linear


class BGGenerator(nn.Module):
    def __init__(self, ch, dim_z, resolution, attn, n_classes, hier, shared, shared_dim, num_svs=1, eps=1e-6,
                 deep=False, depth=2):
        super().__init__()
        conv, linear = bg_layers(num_svs, eps)
        ins, outs = ([ch * m for m in t] for t in BG_G[resolution])
        self.hier, self.deep = hier, deep
        self.shared_dim = shared_dim if shared_dim > 0 else dim_z
        if hier and not deep:
            self.num_slots = len(ins) + 1
            self.z_chunk = dim_z // self.num_slots
            self.dim_z = self.z_chunk * self.num_slots
        else:
            self.num_slots, self.z_chunk, self.dim_z = 1, 0, dim_z
        cond = (self.shared_dim + (dim_z if deep else self.z_chunk)) if shared else n_classes
        bn_linear = (lambda i, o: linear(i, o, bias=False)) if shared else nn.Embedding

        def which_bn(c):
            return BGccbn(c, cond, bn_linear)
        self.shared = nn.Embedding(n_classes, self.shared_dim) if shared else nn.Identity()
        self.linear = linear(dim_z + self.shared_dim if deep else self.dim_z // self.num_slots, ins[0] * 16)
        blocks = []
        for i in range(len(outs)):
            if deep:
                blocks += [[BGDeepGBlock(ins[i], ins[i] if d == 0 else outs[i], conv, which_bn, d == depth - 1)]
                           for d in range(depth)]
            else:
                blocks += [[BGGBlock(ins[i], outs[i], conv, which_bn)]]
            if 8 * 2 ** i in attn:
                blocks[-1] += [BGAttention(outs[i], conv)]
        self.blocks = nn.ModuleList([nn.ModuleList(b) for b in blocks])
        self.output_layer = nn.Sequential(BGbn(outs[-1]), nn.ReLU(), conv(outs[-1], 3))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                nn.init.orthogonal_(m.weight)

    def forward(self, z, y):
        if self.deep:
            z = torch.cat([y, z], 1)
            ys = [z] * len(self.blocks)
        elif self.hier:
            zs = torch.split(z, self.z_chunk, 1)
            z, ys = zs[0], [torch.cat([y, item], 1) for item in zs[1:]]
        else:
            ys = [y] * len(self.blocks)
        h = self.linear(z).view(z.size(0), -1, 4, 4)
        for index, blocklist in enumerate(self.blocks):
            for block in blocklist:
                h = block(h, ys[index])
        return torch.tanh(self.output_layer(h))


class BGDiscriminator(nn.Module):
    def __init__(self, ch, resolution, attn, n_classes, num_svs=1, eps=1e-6, deep=False, depth=2):
        super().__init__()
        conv, linear = bg_layers(num_svs, eps)
        self.deep = deep
        if deep:
            ins, outs, down, res = BG_DEEP_D[resolution]
            ins, outs = [ch * m for m in ins], [ch * m for m in outs]
            self.input_conv = conv(3, ins[0])
            blocks = [[BGDeepDBlock(ins[i] if d == 0 else outs[i], outs[i], conv, down[i] and d == 0)
                       for d in range(depth)] for i in range(len(outs))]
        else:
            ins, outs, down, res = BG_D[resolution]
            ins, outs = [3] + [ch * m for m in ins], [ch * m for m in outs]
            blocks = [[BGDBlock(ins[i], outs[i], conv, i > 0, down[i])] for i in range(len(outs))]
        for i in range(len(outs)):
            if res[i] in attn:
                blocks[i] += [BGAttention(outs[i], conv)]
        self.blocks = nn.ModuleList([nn.ModuleList(b) for b in blocks])
        self.linear = linear(outs[-1], 1)
        self.embed = BGEmbedding(n_classes, outs[-1], num_svs=num_svs, eps=eps)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                nn.init.orthogonal_(m.weight)

    def forward(self, x, y):
        h = self.input_conv(x) if self.deep else x
        for blocklist in self.blocks:
            for block in blocklist:
                h = block(h)
        h = torch.sum(F.relu(h), [2, 3])
        return self.linear(h) + torch.sum(self.embed(y) * h, 1, keepdim=True)


# (BG's config as saved in state_dict.pth, what our test makes of it)
BG_CASES = {
    "biggan-32-hier-attn": dict(model="BigGAN", resolution=32, n_classes=5, G_ch=8, D_ch=8, dim_z=20,
                                shared_dim=12, G_shared=True, hier=True, G_attn="16", D_attn="16", SN_eps=1e-6,
                                num_svs=2),
    "biggan-32-cifar-layout": dict(model="BigGAN", resolution=32, n_classes=5, G_ch=4, D_ch=4, dim_z=16,
                                   shared_dim=0, G_shared=False, hier=False, G_attn="0", D_attn="0", SN_eps=1e-6),
    "biggan-deep-64": dict(model="BigGANdeep", resolution=64, n_classes=5, G_ch=4, D_ch=4, dim_z=16, shared_dim=8,
                           G_shared=True, hier=True, G_attn="32", D_attn="32", G_depth=2, D_depth=2, SN_eps=1e-6),
}


def bg_models(c):
    attn = {k: tuple(int(t) for t in c[k].split("_") if int(t)) for k in ("G_attn", "D_attn")}
    deep = c["model"] == "BigGANdeep"
    G = BGGenerator(c["G_ch"], c["dim_z"], c["resolution"], attn["G_attn"], c["n_classes"], c["hier"],
                    c["G_shared"], c["shared_dim"], c.get("num_svs", 1), c["SN_eps"], deep, c.get("G_depth", 1))
    D = BGDiscriminator(c["D_ch"], c["resolution"], attn["D_attn"], c["n_classes"], c.get("num_svs", 1),
                        c["SN_eps"], deep, c.get("D_depth", 1))
    return G, D


def trained_bg(c, seed):
    """BG's G and D after a few training-mode passes (running statistics, u0 and sv0 moved from their init),
    weights moved away from orthogonal (whose singular values are all 1: any u would give sigma = 1) and a random
    gamma (so that attention counts)."""
    torch.manual_seed(seed)
    G, D = bg_models(c)
    with torch.no_grad():
        for m in list(G.modules()) + list(D.modules()):
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                m.weight.add_(torch.randn_like(m.weight) * m.weight.std())
        for m in G.modules():
            if isinstance(m, BGAttention):
                m.gamma.fill_(0.7)
        for m in D.modules():
            if isinstance(m, BGAttention):
                m.gamma.fill_(-0.4)
        for _ in range(3):
            y = torch.randint(0, c["n_classes"], (6,))
            x = G(torch.randn(6, G.dim_z), G.shared(y))
            D(x, y)
    return G.eval(), D.eval()


def save_bg(tmp_path, G, D, config):
    torch.save(G.state_dict(), tmp_path / "G.pth")
    torch.save(D.state_dict(), tmp_path / "D.pth")
    torch.save({"itr": 3, "config": config}, tmp_path / "state_dict.pth")
    return str(tmp_path / "G.pth"), str(tmp_path / "D.pth")


@pytest.mark.parametrize("case", sorted(BG_CASES))
def test_biggan_pytorch_checkpoints_give_the_same_images(case, tmp_path):
    c = BG_CASES[case]
    bg_G, bg_D = trained_bg(c, seed=0)
    G_path, D_path = save_bg(tmp_path, bg_G, bg_D, {k: v for k, v in c.items() if k != "num_svs"})
    G, D = B.load_biggan_pytorch(G_path, D_path, config=None)   # config from state_dict.pth
    assert not G.training and not D.training
    assert G.z_dim == bg_G.dim_z
    torch.manual_seed(1)
    z, y = torch.randn(5, G.z_dim), torch.randint(0, c["n_classes"], (5,))
    with torch.no_grad():
        want = bg_G(z, bg_G.shared(y))
        got = G(z, y)
        assert want.std() > 0.05                        # not a constant image
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(D(got, y), bg_D(want, y).squeeze(1), rtol=1e-4, atol=1e-4)
        if c["G_shared"]:                               # interpolation in the class embedding
            torch.testing.assert_close(G(z, embedding=G.shared(y)), want, rtol=1e-4, atol=1e-5)
    for net in (G, D):                                   # the batched group takes every loaded layer
        assert len(SpectralNormGroup(net).entries) == sum(isinstance(m, SpectralNorm) for m in net.modules())


def test_biggan_pytorch_batchnorm_layouts_and_bad_checkpoints(tmp_path):
    """myBN's keys (bn.stored_mean, accumulation_counter) load like the default ones; a checkpoint of another
    config is refused with a message that says what to check."""
    c = BG_CASES["biggan-32-hier-attn"]
    bg_G, bg_D = trained_bg(c, seed=2)
    state = {}
    for k, v in bg_G.state_dict().items():
        if k.endswith(("stored_mean", "stored_var")):
            owner, stat = k.rsplit(".", 1)
            state[f"{owner}.bn.{stat}"] = v
            state[f"{owner}.bn.accumulation_counter"] = torch.zeros(1)
        else:
            state[k] = v
    torch.save(state, tmp_path / "G_ema.pth")
    G, _ = B.load_biggan_pytorch(str(tmp_path / "G_ema.pth"), config=c)
    z, y = torch.randn(3, G.z_dim), torch.tensor([0, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(G(z, y), bg_G(z, bg_G.shared(y)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="does not fit a BigGAN G of this config"):
        B.load_biggan_pytorch(str(tmp_path / "G_ema.pth"), config=dict(c, G_ch=16))
    with pytest.raises(ValueError, match="no config given"):
        B.load_biggan_pytorch(str(tmp_path / "G_ema.pth"))
    torch.save({"not": "tensors"}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="not a BigGAN-PyTorch G state dict"):
        B.load_biggan_pytorch(str(tmp_path / "junk.pth"), config=c)


# ---------------------------------------------------------------------------------------------------------------
# the model


def tiny(**changes):
    return B.preset("tiny", **changes)


@pytest.mark.parametrize("name", ["32", "64", "128", "tiny"])
@pytest.mark.parametrize("deep", [False, True])
def test_presets_build_and_run(name, deep):
    cfg = B.preset(name, deep=deep)
    small = dataclasses.replace(cfg, g_ch=8, d_ch=8, n_classes=3) if name in ("64", "128") else cfg
    G, D = B.build(small)
    z, y = torch.randn(2, G.z_dim), torch.tensor([0, 2])
    x = G(z, y)
    assert x.shape == (2, cfg.channels, cfg.resolution, cfg.resolution) and x.abs().max() <= 1
    assert D(x, y).shape == (2,)
    sn = [m for m in G.modules() if isinstance(m, SpectralNorm)]
    convs = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(sn) == len(convs)                       # every G layer but the embeddings
    assert G.shared is None or not hasattr(G.shared, "parametrizations")   # BG: no SN on the shared embedding
    assert sum(isinstance(m, SpectralNorm) for m in D.modules()) == sum(
        isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) for m in D.modules())


@pytest.mark.parametrize("deep", [False, True])
def test_16px_layout_is_the_32px_one_a_block_shorter(deep):
    """16 px (not BG's; CPU-sized digits): G one up block shorter than at 32 px, D down to 8 px in its first block
    and at 8 px after it, attention labelled 8 (as BG labels every 32 px block 16)."""
    cfg = B.preset("tiny", deep=deep, resolution=16, g_attn=(8,), d_attn=(8,))
    G, D = B.build(cfg)
    x = G(torch.randn(3, G.z_dim), torch.tensor([0, 4, 9]))
    assert x.shape == (3, 1, 16, 16) and D(x, torch.tensor([0, 4, 9])).shape == (3,)
    assert len(G.blocks) == (2 * cfg.g_depth if deep else 2) and (deep or G.z_dim == 30)   # 3 z chunks of 10
    assert [down for _, down, _ in B._d_plan(16, deep)] == [True, False] + [False] * (not deep)
    B.preset("tiny", resolution=16, g_attn=(16,), d_attn=(8,))         # G's second block outputs 16 px
    with pytest.raises(ValueError, match=r"d_attn \[16\]: attention goes after a block"):
        B.preset("tiny", resolution=16, g_attn=(8,), d_attn=(16,))


def test_bad_configs_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="resolution must be one of"):
        tiny(resolution=48).check()
    with pytest.raises(ValueError, match="attention goes after a block"):
        tiny(g_attn=(64,)).check()
    with pytest.raises(ValueError, match="fewer than 8 channels"):
        tiny(g_ch=1).check()
    with pytest.raises(ValueError, match="shared=False"):
        tiny(shared=False).check()
    with pytest.raises(ValueError, match="unknown BigGAN preset"):
        B.preset("96")
    G, D = B.build(tiny())
    z, y = torch.randn(2, G.z_dim), torch.tensor([1, 2])
    for bad in (lambda: G(z[:, :-1], y), lambda: G(z, y.float()), lambda: G(z, y[:1]), lambda: G(z),
                lambda: G(z, y, embedding=G.shared(y)), lambda: G(z, embedding=torch.randn(2, 3)),
                lambda: D(torch.randn(2, 3, 32, 32), y), lambda: D(torch.randn(2, 1, 32, 32), y[:1])):
        with pytest.raises(ValueError):
            bad()


def test_group_step_equals_per_layer_step():
    """One batched SpectralNormGroup update serves every spectral-normalized weight of G and D."""
    torch.manual_seed(0)
    G, D = B.build(tiny())
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    z, y = torch.randn(4, G.z_dim), torch.randint(0, 10, (4,))
    gG, gD = SpectralNormGroup(G), SpectralNormGroup(D)
    with gG.cached(), gD.cached():
        F.relu(1 - D(G(z, y), y)).mean().backward()
    F.relu(1 - D2(G2(z, y), y)).mean().backward()
    for (n, a), b in zip(list(G.named_parameters()) + list(D.named_parameters()),
                         list(G2.parameters()) + list(D2.parameters())):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_group_step_equals_per_layer_step(backend):
    import gankern
    torch.manual_seed(0)
    with torch.device("cuda"):
        G, D = B.build(tiny())
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    z, y = torch.randn(8, G.z_dim, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    with gankern.use_backend(backend):
        gG, gD = SpectralNormGroup(G), SpectralNormGroup(D)
        with gG.cached(), gD.cached():
            F.relu(1 - D(G(z, y), y)).mean().backward()
        F.relu(1 - D2(G2(z, y), y)).mean().backward()
    for (n, a), b in zip(list(G.named_parameters()) + list(D.named_parameters()),
                         list(G2.parameters()) + list(D2.parameters())):
        assert torch.isfinite(a.grad).all(), n
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=n)  # TF32 convs on both sides


def test_cross_replica_conversion_keeps_the_model():
    """cross_replica(G): the same keys and, without a process group of 2+ ranks, BatchNorm2d's results in both modes."""
    torch.manual_seed(0)
    G = B.Generator(tiny())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    synced = B.cross_replica(copy.deepcopy(G))
    assert n_bn > 0 and sum(isinstance(m, B.CrossReplicaBatchNorm2d) for m in synced.modules()) == n_bn
    assert synced.state_dict().keys() == G.state_dict().keys()
    z, y = torch.randn(4, G.z_dim), torch.tensor([3, 4, 0, 9])
    torch.testing.assert_close(synced(z, y), G(z, y))
    torch.testing.assert_close(synced.state_dict(), G.state_dict())
    G.eval(), synced.eval()
    torch.testing.assert_close(synced(z, y), G(z, y))


def _bn_and_G(seed):
    """A BatchNorm2d with random affine parameters and a tiny G (momentum None in one BatchNorm: the cumulative
    average), their inputs and output weights, the same on every rank."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(5, momentum=None)
    with torch.no_grad():
        bn.weight.normal_(), bn.bias.normal_()
    G = B.Generator(tiny())
    return bn, G, torch.randn(6, 5, 3, 2) * 3 + 1, torch.randn(6, 5, 3, 2), torch.randn(6, G.z_dim), \
        torch.randint(0, 10, (6,)), torch.randn(6, 1, 32, 32)


def _losses(bn, G, x, rx, z, y, rg, n):
    """Two BatchNorm calls (running statistics move twice) and one G call; weighted sums over this process's rows
    divided by the whole batch's n, so the ranks' losses add up to the single process's."""
    return sum((bn(x) * rx).sum() for _ in range(2)) / n + (G(z, y) * rg).sum() / n


def _cross_replica_rank(rank, world, tmp):
    from datetime import timedelta

    import torch.distributed as tdist
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world,
                             timeout=timedelta(seconds=60))
    try:
        bn, G, x, rx, z, y, rg = _bn_and_G(0)
        B.cross_replica(bn), B.cross_replica(G)
        part = [v.chunk(world)[rank] for v in (x, rx, z, y, rg)]
        xr = part[0].requires_grad_()
        _losses(bn, G, xr, *part[1:], n=6).backward()
        out = {"y": bn(xr).detach(), "x_grad": xr.grad, "bn": bn.state_dict(), "G": copy.deepcopy(G.state_dict())}
        for name, p in [*bn.named_parameters(), *G.named_parameters()]:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            tdist.all_reduce(g)                                           # the sum of the ranks' gradients
            out[f"grad {name}"] = g
        if rank == 0:                 # sampling on rank 0 alone: no all-reduce (rank 1 would never answer)
            B.standing_stats(G, 2, 4, generator=torch.Generator().manual_seed(1), sync=False)
            out["standing"] = G.state_dict()
        torch.save(out, f"{tmp}/rank{rank}.pt")
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


def test_cross_replica_batchnorm_on_two_cpu_ranks_is_one_process_on_the_whole_batch(tmp_path):
    """Two processes (gloo, CPU), each with half of the batch, against one process on all of it: outputs, input
    gradients, the summed parameter gradients, the running statistics (momentum 0.1 and None) of a BatchNorm2d and
    of BigGAN's G (conditional BatchNorms in its blocks); and standing statistics with sync=False on one rank."""
    import torch.multiprocessing as mp
    mp.start_processes(_cross_replica_rank, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    bn, G, x, rx, z, y, rg = _bn_and_G(0)
    xr = x.clone().requires_grad_()
    _losses(bn, G, xr, rx, z, y, rg, n=6).backward()
    want = {"y": bn(xr).detach(), "x_grad": xr.grad}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for k in ("y", "x_grad"):
            torch.testing.assert_close(got[k], want[k].chunk(2)[rank], msg=k)
        torch.testing.assert_close(got["bn"], bn.state_dict())
        torch.testing.assert_close(got["G"], G.state_dict())
        for name, p in [*bn.named_parameters(), *G.named_parameters()]:
            torch.testing.assert_close(got[f"grad {name}"], p.grad if p.grad is not None else torch.zeros_like(p),
                                       rtol=1e-4, atol=1e-5, msg=name)
    assert bn.num_batches_tracked == 3 and not torch.allclose(bn.running_var, torch.ones(5))
    B.standing_stats(G, 2, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.load(tmp_path / "rank0.pt", weights_only=True)["standing"], G.state_dict())


def test_standing_stats_average_batch_statistics_and_keep_spectral_norms():
    torch.manual_seed(0)
    G = B.Generator(tiny())
    G.train()
    G(torch.randn(4, G.z_dim), torch.randint(0, 10, (4,)))          # running stats away from their init
    bn = G.blocks[1][0].bn2.bn
    seen = []
    hook = bn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    u = G.linear.parametrizations.weight[0]._u.clone()
    B.standing_stats(G, num_batches=3, batch_size=5, generator=torch.Generator().manual_seed(1))
    hook.remove()
    assert not G.training and not bn.training and len(seen) == 3
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean([0, 2, 3]) for x in seen]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var([0, 2, 3]) for x in seen]).mean(0))
    assert bn.momentum == 0.1
    torch.testing.assert_close(G.linear.parametrizations.weight[0]._u, u, rtol=0, atol=0)


def test_truncated_z_resamples_beyond_the_threshold():
    g = torch.Generator().manual_seed(0)
    z = B.truncated_z(400, 50, 1.0, generator=g)
    assert z.shape == (400, 50) and z.abs().max() <= 1.0
    # a normal truncated at +-1 has std 0.5396 (variance scaling to the same range would give other moments)
    assert abs(z.std().item() - 0.5396) < 0.01 and abs(z.mean().item()) < 0.01
    assert (z.abs() > 0.9).float().mean().item() == pytest.approx(0.0744, abs=0.01)  # (0.6827 - 0.6319) / 0.6827
    torch.testing.assert_close(B.truncated_z(3, 4, 0.5, generator=torch.Generator().manual_seed(3)),
                               B.truncated_z(3, 4, 0.5, generator=torch.Generator().manual_seed(3)))
    for bad in (0, -1.0, "1"):
        with pytest.raises(ValueError, match="positive number"):
            B.truncated_z(2, 2, bad)


def bg_ortho_grad(w, strength):
    """BG's utils.ortho: the gradient it adds."""
    m = w.view(w.shape[0], -1)
    return (strength * 2 * ((m @ m.t()) * (1 - torch.eye(m.shape[0], dtype=m.dtype))) @ m).view(w.shape)


def test_orthogonal_regularization_has_bgs_gradient():
    ws = [torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True),     # out <= in: W W^T
          torch.randn(40, 6, dtype=torch.float64, requires_grad=True)]          # out > in: the Gram identity
    loss = B.orthogonal_regularization(ws, strength=1e-4)
    loss.backward()
    for w in ws:
        torch.testing.assert_close(w.grad, bg_ortho_grad(w.detach(), 1e-4))
    m = ws[1].detach()
    want = 0.5e-4 * (((m @ m.t()) * (1 - torch.eye(40, dtype=m.dtype))).square().sum()
                     + ((lambda a: (a @ a.t()) * (1 - torch.eye(5, dtype=a.dtype)))(ws[0].detach().view(5, -1))
                        ).square().sum())
    torch.testing.assert_close(loss.detach(), want)
    G = B.Generator(tiny())
    names = {id(p): n for n, p in G.named_parameters()}
    chosen = [names[id(p)] for p in B.ortho_weights(G)]
    assert "shared.weight" not in chosen and "linear.parametrizations.weight.original" in chosen
    assert all(p.dim() >= 2 for p in B.ortho_weights(G))
    assert len(chosen) == sum(p.dim() >= 2 for p in G.parameters()) - 1


def test_from_biggan_pytorch_config():
    cfg = B.BigGANConfig.from_biggan_pytorch({"dataset": "I128_hdf5", "G_ch": 96, "D_ch": 96, "dim_z": 120,
                                              "shared_dim": 128, "hier": True, "G_shared": True, "SN_eps": 1e-6,
                                              "G_attn": "64", "D_attn": "64"})
    assert cfg == B.preset("128")
    c10 = B.BigGANConfig.from_biggan_pytorch({"dataset": "C10", "G_attn": "0", "D_attn": "0"})
    assert (c10.resolution, c10.n_classes, c10.g_attn, c10.shared, c10.sn_eps) == (32, 10, (), False, 1e-8)


# ---------------------------------------------------------------------------------------------------------------
# the benchmark's CPU smoke size


def test_bench_biggan_quick_runs():
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_biggan.py")
    spec = importlib.util.spec_from_file_location("bench_biggan", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run(quick=True)
    by = {(r["workload"].split("-")[-1], r["backend"]): r for r in rows}
    assert set(by) == {(w, b) for w in ("step", "sn") for b in ("eager", "gankern-group")} | \
        {("step", "gankern-recipe")}
    for r in rows:
        assert r["ms"] is not None and r["ms"] > 0, r
        assert r["family"] == "biggan"
    for backend in ("eager", "gankern-group"):
        step, sn = by[("step", backend)], by[("sn", backend)]
        assert 0 < sn["sn_share"] == pytest.approx(sn["ms"] / step["ms"])
