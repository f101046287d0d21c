"""The classic G/D architectures: shapes, conditioning, spectral norm, self-attention and the minibatch layers."""
import itertools

import pytest
import torch

from gankern.models import ModelConfig, build
from gankern.models.layers import MinibatchDiscrimination, MinibatchStdDev, SelfAttention


def _cfg(arch, cond="none", **kw):
    return ModelConfig(arch=arch, cond=cond, z_dim=16, g_ch=8, d_ch=8, **kw)


@pytest.mark.parametrize("arch,cond,extra", list(itertools.product(
    ["mlp", "dcgan", "resnet"], ["none", "concat", "proj"],
    [{}, dict(attn=True, g_sn=True, d_sn=True, mbstd=4, mbdisc=4, d_norm="none")])))
def test_shapes_and_ranges(arch, cond, extra, res=16):
    torch.manual_seed(0)
    k = 10 if cond != "none" else 0
    G, D = build(_cfg(arch, cond, **extra), res, 3, k)
    z, y = torch.randn(8, 16), (torch.arange(8) % 10 if k else None)
    x = G(z, y)
    assert x.shape == (8, 3, res, res) and x.abs().max() <= 1
    out = D(x, y)
    assert out.shape == (8,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in D.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("cond", ["concat", "proj"])
def test_labels_change_the_outputs(arch, cond):
    torch.manual_seed(0)
    G, D = build(_cfg(arch, cond, d_norm="none"), 16, 1, 10)
    G.eval()
    z = torch.randn(4, 16)
    a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.full((4,), 3))
    assert (a - b).abs().max() > 1e-4
    with torch.no_grad():
        D.head.out.bias.zero_()
        if D.head.embed is not None:
            D.head.embed.weight.normal_()
    assert (D(a, torch.zeros(4, dtype=torch.long)) - D(a, torch.full((4,), 3))).abs().max() > 1e-4


def test_projection_term_is_inner_product_with_class_embedding():
    torch.manual_seed(0)
    _, D = build(_cfg("mlp", "proj"), 8, 1, 5)
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 4, 2])
    h = D.body(x.flatten(1))
    want = D.head.out(h).squeeze(1) + (D.head.embed.weight[y] * h).sum(1)
    torch.testing.assert_close(D(x, y), want)


def test_spectral_norm_makes_top_singular_value_one():
    torch.manual_seed(0)
    _, D = build(_cfg("dcgan", d_sn=True, d_norm="none"), 16, 1)
    assert hasattr(D.body[0], "parametrizations")
    with torch.no_grad():
        D.body[0].parametrizations.weight.original.mul_(3.0)
    for _ in range(30):                     # power iterations run in training forwards
        D(torch.randn(4, 1, 16, 16))
    conv = D.body[0]
    w = conv.weight.detach().flatten(1)
    assert abs(torch.linalg.matrix_norm(w, 2).item() - 1) < 1e-2
    # the stored weight is far from norm 1: SN did the normalizing
    assert torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), 2).item() > 2


def test_self_attention_starts_as_identity_then_mixes_positions():
    torch.manual_seed(0)
    a = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(a(x), x)
    with torch.no_grad():
        a.gamma.fill_(1.0)
    y = a(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 5                     # a change at one position reaches far positions through attention
    assert (a(x2) - y)[:, :, 7, 7].abs().max() > 1e-4


def test_minibatch_stddev_matches_explicit_groups():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3)
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (8, 5, 3, 3)
    torch.testing.assert_close(out[:, :4], x)
    for i in range(8):                      # sample i is in the strided group {i % 2, i % 2 + 2, ...}
        grp = x[i % 2::2]
        want = (grp.var(0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 4], torch.full((3, 3), want.item()), rtol=1e-5, atol=1e-6)


def test_minibatch_discrimination_matches_pair_loop():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(6, num_kernels=3, kernel_dim=2)
    f = torch.randn(5, 6)
    out = layer(f)
    assert out.shape == (5, 9)
    M = (f @ layer.T).view(5, 3, 2)
    for i in range(5):
        for b in range(3):
            want = sum(torch.exp(-(M[i, b] - M[j, b]).abs().sum()) for j in range(5) if j != i)
            torch.testing.assert_close(out[i, 6 + b], want, rtol=1e-5, atol=1e-6)


def test_minibatch_layers_make_d_see_the_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    x2 = x.clone()
    x2[1:] = torch.randn(7, 1, 16, 16)      # same first sample, different batch mates
    for extra, sees in [({}, False), (dict(mbstd=4), True), (dict(mbdisc=4), True)]:
        _, D = build(_cfg("dcgan", d_norm="none", **extra), 16, 1)
        changed = (D(x)[0] - D(x2)[0]).abs().item() > 1e-6
        assert changed == sees, extra


def test_build_rejects_bad_options():
    with pytest.raises(ValueError, match="labelled"):
        build(_cfg("dcgan", "proj"), 16, 1, 0)
    with pytest.raises(ValueError, match="power of two"):
        build(_cfg("dcgan"), 24, 1)
    with pytest.raises(ValueError, match="known"):
        build(_cfg("vit"), 16, 1)
