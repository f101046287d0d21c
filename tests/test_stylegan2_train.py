"""StyleGAN2 / StyleGAN training (the stylegan2 recipe: S2A's loss, lazy R1 and path length, style mixing, ADA, exact
resume), generation from seeds and style-mixing grids as S2A's scripts, projection into W, and their CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gankern.models import stylegan2_tools as tools
from gankern.models.stylegan2 import Discriminator, Generator


def tiny_G(c_dim=0, layer="modconv", seed=0):
    torch.manual_seed(seed)
    return Generator(32, c_dim, 32, 16, 3, mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=256, channel_max=32, layer=layer)).eval()


def tiny_D(seed=1):
    torch.manual_seed(seed)
    return Discriminator(0, 16, 3, channel_base=256, channel_max=32).eval()


# ----------------------------------------------------------------------------------------------------------------
# generation, style mixing, projection


def test_seed_latents_are_s2a_latents():
    z = tools.seed_latents([3, 70000], 8)
    assert z.dtype == torch.float32 and z.shape == (2, 8)
    assert torch.equal(z[1], torch.from_numpy(np.random.RandomState(70000).randn(8)).float())
    assert tools.parse_range("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("a-3", ""):
        with pytest.raises(ValueError, match="integers and ranges"):
            tools.parse_range(bad)
    with pytest.raises(ValueError, match="seeds must be in"):
        tools.seed_latents([-1], 8)


@pytest.mark.parametrize("layer", ["modconv", "adain"])
def test_generate_images_from_seeds(layer):
    G = tiny_G(layer=layer)
    img = tools.generate_images(G, [5, 6, 7], truncation_psi=0.7, noise_mode="const", batch=2)
    with torch.no_grad():
        want = G(tools.seed_latents([5, 6, 7], 32), None, truncation_psi=0.7, noise_mode="const")
    torch.testing.assert_close(img, want)
    with pytest.raises(ValueError, match="unconditional"):
        tools.generate_images(G, [0], class_idx=1)


def test_generate_conditional_needs_a_class():
    G = tiny_G(c_dim=4)
    img = tools.generate_images(G, [1, 2], class_idx=3, noise_mode="none")
    with torch.no_grad():
        want = G(tools.seed_latents([1, 2], 32), torch.nn.functional.one_hot(torch.tensor([3, 3]), 4).float(),
                 noise_mode="none")
    torch.testing.assert_close(img, want)
    with pytest.raises(ValueError, match=r"conditional: give a class in \[0, 4\)"):
        tools.generate_images(G, [1])
    with pytest.raises(ValueError, match="got 4"):
        tools.generate_images(G, [1], class_idx=4)


def test_style_mixing_grid_is_s2a_figure():
    G = tiny_G()
    rows, cols, styles = [1, 2], [3, 4, 5], [0, 1]
    grid = tools.style_mixing_grid(G, rows, cols, styles, truncation_psi=0.5, noise_mode="const")
    assert grid.shape == ((len(rows) + 1) * (len(cols) + 1), 3, 16, 16)
    plain = tools.generate_images(G, rows + cols, truncation_psi=0.5, noise_mode="const")
    torch.testing.assert_close(grid[1:4], plain[2:])                       # first row: the column seeds
    torch.testing.assert_close(grid[[4, 8]], plain[:2])                    # first column: the row seeds
    with torch.no_grad():
        ws = G.mapping(tools.seed_latents([2, 4], 32), None, truncation_psi=0.5)
        mixed = ws[0].clone()
        mixed[styles] = ws[1][styles]
        want = G.synthesis(mixed[None], noise_mode="const")[0]
    torch.testing.assert_close(grid[8 + 2], want)                          # row seed 2 with styles of seed 4
    assert torch.all(grid[0] == -1)
    with pytest.raises(ValueError, match="col_styles"):
        tools.style_mixing_grid(G, rows, cols, [G.num_ws])


@pytest.mark.parametrize("use_D", [False, True])
def test_projection_finds_a_generated_image(use_D):
    G = tiny_G()
    with torch.no_grad():
        target = G(tools.seed_latents([9], 32), None, noise_mode="const")[0]
    dists = []
    ws = tools.project(G, target, num_steps=120, D=tiny_D() if use_D else None, w_avg_samples=500,
                       progress=lambda step, d: dists.append(d))
    assert ws.shape == (120, G.num_ws, 32) and len(dists) == 120
    assert dists[-1] < 0.25 * dists[0]
    with torch.no_grad():
        out = G.synthesis(ws[-1:], noise_mode="const")[0]
        far = G.synthesis(ws[:1], noise_mode="const")[0]
    assert (out - target).square().mean() < 0.5 * (far - target).square().mean()
    with pytest.raises(ValueError, match="target must be a tensor of shape"):
        tools.project(G, target[:1], num_steps=1)
    with pytest.raises(ValueError, match="unconditional"):
        tools.project(tiny_G(c_dim=2), target, num_steps=1)


# ----------------------------------------------------------------------------------------------------------------
# the recipe, driven by hand (what the trainer core does per phase), against S2A's loss.py written out here


class FakeEnv:
    """What the trainer gives a recipe (RECIPE_API.md's Env), on the CPU, without AMP."""

    def __init__(self, resolution=16, channels=3, num_classes=0):
        self.device, self.rank, self.world = torch.device("cpu"), 0, 1
        self.num_classes, self.channels, self.resolution, self.total_steps, self.seed = (num_classes, channels,
                                                                                         resolution, 100, 0)

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss):
        loss.backward()


def make_recipe(env=None, **options):
    from gankern.train.recipes.stylegan2 import StyleGAN2Options, StyleGAN2Recipe
    options = {"cfg": "tiny", **options}
    torch.manual_seed(0)
    return StyleGAN2Recipe(StyleGAN2Options(**options), env or FakeEnv())


def make_batch(recipe, seed, n=4, labels=False):
    from gankern.train.recipes.base import Batch
    g = torch.Generator().manual_seed(seed)
    env = recipe.env
    real = torch.rand(n, env.channels, env.resolution, env.resolution, generator=g) * 2 - 1
    c = torch.randint(0, env.num_classes, (n,), generator=g) if labels else None
    c_gen = torch.randint(0, env.num_classes, (n,), generator=g) if labels else None
    return Batch(real=real, c=c, z=torch.randn(n, recipe.z_dim, generator=g), c_gen=c_gen, seed=seed + 1000)


def grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def run_phase(recipe, phase, batch, gain=1.0):
    net = {"G": "G", "Greg": "G", "D": "D", "Dreg": "D"}[phase]
    for k, m in recipe.nets.items():
        m.train().requires_grad_(k == net)
        m.zero_grad(set_to_none=True)
    stats = recipe.accumulate_gradients(phase, batch, gain)
    return stats, grads(recipe.nets[net])


def s2a_loss(recipe, phase, b, gain):
    """S2A's StyleGAN2Loss.accumulate_gradients for one phase, with torch's RNG seeded as the recipe seeds it."""
    G, D, o = recipe.nets["G"], recipe.nets["D"], recipe.options
    torch.manual_seed(b.seed)
    kw = dict(force_fp32=True)

    def run_G(z):
        ws = G.mapping(z, None)
        if recipe.style_mixing > 0:
            cutoff = torch.randint(1, ws.shape[1], [])
            cutoff = torch.where(torch.rand([]) < recipe.style_mixing, cutoff, torch.full_like(cutoff, ws.shape[1]))
            ws = ws.clone()
            ws[:, int(cutoff):] = G.mapping(torch.randn_like(z), None, skip_w_avg_update=True)[:, int(cutoff):]
        return G.synthesis(ws, **kw), ws
    if phase == "G":
        img, _ = run_G(b.z)
        (torch.nn.functional.softplus(-D(img, None, **kw)).mean() * gain).backward()
    elif phase == "Greg":
        n = b.z.shape[0] // o.pl_batch_shrink
        img, ws = run_G(b.z[:n])
        noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
        g, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = g.square().sum(2).mean(1).sqrt()
        pl_mean = recipe.pl_mean.lerp(lengths.mean(), o.pl_decay)
        ((img[:, 0, 0, 0] * 0 + (lengths - pl_mean).square() * recipe.pl_weight).mean() * gain).backward()
        return pl_mean.detach()
    elif phase == "D":
        with torch.no_grad():
            img, _ = run_G(b.z)
        (torch.nn.functional.softplus(D(img, None, **kw)).mean() * gain).backward()
        (torch.nn.functional.softplus(-D(b.real, None, **kw)).mean() * gain).backward()
    else:
        x = b.real.detach().requires_grad_(True)
        logits = D(x, None, **kw)
        g, = torch.autograd.grad(logits.sum(), x, create_graph=True)
        ((logits * 0 + g.square().sum([1, 2, 3]) * (recipe.gamma / 2)).mean() * gain).backward()


@pytest.mark.parametrize("phase", ["G", "Greg", "D", "Dreg"])
def test_recipe_phases_are_s2a_loss(phase):
    recipe = make_recipe(aug="noaug", style_mixing=0.9, gamma=0.5)
    recipe.pl_mean.fill_(0.3)
    b = make_batch(recipe, 7)
    G_state = {k: v.clone() for k, v in recipe.nets["G"].state_dict().items()}
    stats, got = run_phase(recipe, phase, b, gain=4.0)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
    pl_after = recipe.pl_mean.clone()
    recipe.nets["G"].load_state_dict(G_state)                             # w_avg moved: start S2A's from the same
    recipe.pl_mean.fill_(0.3)
    net = recipe.nets["G" if phase.startswith("G") else "D"]
    net.zero_grad(set_to_none=True)
    want_pl = s2a_loss(recipe, phase, b, 4.0)
    want = grads(net)
    assert set(got) == set(want) and got
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)   # float32, other op order
    if phase == "Greg":
        torch.testing.assert_close(pl_after, want_pl)
        assert not torch.equal(pl_after, torch.tensor(0.3))


def test_style_mixing_cuts_the_ws():
    recipe = make_recipe(aug="noaug", style_mixing=1.0)
    torch.manual_seed(0)
    z = torch.randn(3, recipe.z_dim)
    _, ws = recipe.run_G(z, None, return_ws=True)
    same = (ws == recipe.nets["G"].mapping(z, None)).all(dim=2).all(dim=0)    # (num_ws,) which layers kept z's w
    cut = int(same.sum())
    assert 1 <= cut < ws.shape[1] and same[:cut].all() and not same[cut:].any()


def test_recipe_conditional_and_options():
    recipe = make_recipe(FakeEnv(num_classes=3), aug="ada", cond=True)
    assert recipe.nets["G"].c_dim == 3 and recipe.nets["D"].c_dim == 3
    for phase in ("G", "Greg", "D", "Dreg"):
        stats, g = run_phase(recipe, phase, make_batch(recipe, 3, labels=True))
        assert g and all(torch.isfinite(v) for v in stats.values())
    assert [p.name for p in recipe.phases] == ["G", "Greg", "D", "Dreg"]
    assert [p.interval for p in recipe.phases] == [1, 4, 1, 16]
    assert recipe.optimizers["G"].reg_interval == 4 and recipe.optimizers["D"].reg_interval == 16
    cifar = make_recipe(FakeEnv(resolution=32), cfg="cifar")               # S2A: no path length, no mixing
    assert [p.name for p in cifar.phases] == ["G", "D", "Dreg"] and cifar.style_mixing == 0
    assert cifar.nets["D"].b32.architecture == "orig"
    assert make_recipe(layer="adain").nets["G"].synthesis.b16.conv1.__class__.__name__ == "AdaINSynthesisLayer"
    for bad, match in ((dict(aug="sometimes"), "recipe.aug"), (dict(layer="x"), "recipe.layer"),
                       (dict(gamma=-2), "recipe.gamma"), (dict(p=1.5), "recipe.p"), (dict(cfg="paper128"), "recipe.cfg"), (dict(cond=True), "labelled"),
                       (dict(augpipe="xyz"), "recipe.augpipe"), (dict(r1_interval=0), "recipe.r1_interval")):
        with pytest.raises(ValueError, match=match):
            make_recipe(**bad)


def test_ada_moves_p_and_state_round_trips():
    recipe = make_recipe(aug="ada", ada_kimg=0.1, target=0.6)
    D = recipe.nets["D"]
    with torch.no_grad():                                                  # D says "real" to everything: r_t = 1
        D.b4.out.bias.fill_(100.0)
    steps = []
    for step in range(4):
        for ph in recipe.phases:
            if step % ph.interval == 0:
                run_phase(recipe, ph.name, make_batch(recipe, step))
                recipe.after_step(ph.name, step)
        steps.append(float(recipe.augment_pipe.p))
    assert steps[:3] == [0, 0, 0] and steps[3] == pytest.approx(4 * 4 / 100)   # 4 steps x 4 images / 0.1 kimg
    stats = recipe.log_stats()
    assert float(stats["ada/rt"]) == 1.0 and float(stats["ada/p"]) == pytest.approx(0.16)
    state = recipe.state_dict()
    assert torch.load(_saved(state), weights_only=True).keys() == state.keys()
    fresh = make_recipe(aug="ada", ada_kimg=0.1)
    fresh.load_state_dict(state)
    assert float(fresh.augment_pipe.p) == pytest.approx(0.16) and torch.equal(fresh.pl_mean, recipe.pl_mean)
    fixed = make_recipe(aug="fixed", p=0.3)
    assert fixed.ada is None and float(fixed.augment_pipe.p) == pytest.approx(0.3)


def _saved(state):
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_recipe_randomness_comes_from_the_batch_seed():
    a, b = make_recipe(aug="ada", p=0.5), make_recipe(aug="ada", p=0.5)
    batch = make_batch(a, 11)
    torch.manual_seed(1)
    sa, ga = run_phase(a, "G", batch)
    torch.manual_seed(2)                                                   # the global RNG does not matter
    sb, gb = run_phase(b, "G", batch)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and all(torch.equal(ga[k], gb[k]) for k in ga)
    state = torch.get_rng_state()
    run_phase(a, "D", batch)
    assert torch.equal(state, torch.get_rng_state())                       # and is left as it was
