"""StyleGAN2 / StyleGAN training (the stylegan2 recipe: S2A's loss, lazy R1 and path length, style mixing, ADA, exact
resume, a short run on digits whose FID falls), generation from seeds, style-mixing grids and interpolation frames as
S2A's scripts, projection into W and the noise maps (pixel, D or VGG16 distance), and their CLI."""
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


def test_slerp_is_on_the_sphere_and_uniform_in_angle():
    a, b = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    s = tools.slerp(a, b, t)
    torch.testing.assert_close(s.norm(dim=1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(s[0], a / a.norm())
    torch.testing.assert_close(s[-1], b / b.norm())
    angles = torch.acos((s[1:] * s[:-1]).sum(1).clamp(-1, 1))                 # equal steps along the great circle
    torch.testing.assert_close(angles, angles[:1].expand(4))
    torch.testing.assert_close(tools.slerp(a, a, t), (a / a.norm()).expand(5, 7))    # same seed: no NaN


@pytest.mark.parametrize("space", ["z", "z-lerp", "w"])
def test_interpolation_frames_go_from_seed_to_seed(space):
    G = tiny_G(c_dim=3)
    frames = tools.interpolation_frames(G, [4, 5, 6], 5, space, 0.8, "const", class_idx=2)
    assert frames.shape == (2, 5, 3, 16, 16)
    ends = tools.generate_images(G, [4, 5, 6], 0.8, "const", class_idx=2)
    for i in range(2):
        torch.testing.assert_close(frames[i, 0], ends[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(frames[i, -1], ends[i + 1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        c = torch.nn.functional.one_hot(torch.tensor([2, 2]), 3).float()
        z = tools.seed_latents([4, 5], 32)
        if space == "w":                                                     # the middle frame: the mean w
            mid = G.synthesis(G.mapping(z, c, truncation_psi=0.8).mean(0, keepdim=True), noise_mode="const")
        else:
            zm = tools.slerp(z[0], z[1], torch.tensor([[0.5]])) if space == "z" else z.mean(0, keepdim=True)
            mid = G(zm, c[:1], truncation_psi=0.8, noise_mode="const")
    torch.testing.assert_close(frames[0, 2], mid[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(frames[0, 2], ends[0], atol=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        tools.interpolation_frames(G, [4], 5, space, class_idx=0)


def vgg16_state_dict(seed=0):
    """torchvision's vgg16().state_dict() layout (features and classifier) with He-initialized random weights."""
    g = torch.Generator().manual_seed(seed)
    sd, c, i = {}, 3, 0
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(v)
        c, i = v, i + 2
    sd["classifier.0.weight"], sd["classifier.0.bias"] = torch.zeros(8, 25088), torch.zeros(8)   # ignored
    return sd


def lpips_state_dict(seed=0, channels=(64, 128, 256, 512, 512)):
    """The lpips package's weights/v0.1/vgg.pth layout: LPIPS' 1x1 convolutions (after a dropout, hence model.1),
    non-negative as LPIPS' training keeps them, random here."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.2 for i, c in enumerate(channels)}


def lpips_oracle(vgg_sd, lin, x, y):
    """LPIPS (v0.1, VGG trunk) of x, y (N, 3, H, W) in [-1, 1] written out from the paper's code: ScalingLayer, the
    torchvision features in 5 slices ending at relu1_2 ... relu5_3, unit features along channels (+ 1e-10), squared
    difference, the 1x1 lin conv (unit weights when lin is None), spatial mean, sum over the slices. (N,)"""
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    ends, out = (4, 9, 16, 23, 30), 0
    h = [(x - shift) / scale, (y - shift) / scale]
    start = 0
    for k, end in enumerate(ends):
        for j in range(start, end):
            if f"features.{j}.weight" in vgg_sd:
                h = [torch.nn.functional.conv2d(t, vgg_sd[f"features.{j}.weight"], vgg_sd[f"features.{j}.bias"],
                                                padding=1) for t in h]
            elif j in (4, 9, 16, 23):
                h = [torch.nn.functional.max_pool2d(t, 2) for t in h]
            else:
                h = [t.relu() for t in h]
        start = end
        f0, f1 = (t / (t.square().sum(1, keepdim=True).sqrt() + 1e-10) for t in h)
        d = (f0 - f1) ** 2
        w = torch.ones(1, d.shape[1], 1, 1) if lin is None else lin[f"lin{k}.model.1.weight"]
        out = out + torch.nn.functional.conv2d(d, w).mean([2, 3])[:, 0]
    return out


def noisy_G(layer="modconv", strength=0.05):
    """tiny_G whose noise inputs matter (S2A initializes their strengths at 0)."""
    G = tiny_G(layer=layer)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(strength)
    return G


@pytest.mark.parametrize("distance", ["pixels", "D", "vgg16"])
def test_projection_finds_a_generated_image(distance):
    G = noisy_G()
    with torch.no_grad():
        target = G(tools.seed_latents([9], 32), None, noise_mode="const")[0]
    vgg = None
    if distance == "vgg16":
        vgg = tools.VGG16Features().eval().requires_grad_(False)
        vgg.features.load_state_dict({k[9:]: v for k, v in vgg16_state_dict().items() if k.startswith("features.")})
        for i, w in enumerate(lpips_state_dict().values()):                # LPIPS' learned weights
            setattr(vgg, f"lin{i}", w)
    dists, n = [], 40 if vgg else 100                           # VGG16 on 32 px: 0.2 s a step on one CPU thread
    ws, noise = tools.project(G, target, num_steps=n, D=tiny_D() if distance == "D" else None, vgg16=vgg,
                              w_avg_samples=500, progress=lambda step, d: dists.append(d))
    assert ws.shape == (n, G.num_ws, 32) and len(dists) == n
    assert dists[-1] < 0.2 * dists[0], (dists[0], dists[-1])
    bufs = dict(G.synthesis.named_buffers())
    assert sorted(noise) == sorted(n for n in bufs if n.endswith("noise_const")) and len(noise) == 5
    for n, m in noise.items():                                   # S2A's normalization after each step
        assert m.shape == bufs[n].shape and abs(float(m.mean())) < 1e-5 and abs(float(m.square().mean()) - 1) < 1e-4
    G2 = noisy_G()                                               # the network itself was not modified
    assert all(torch.equal(v, G2.state_dict()[k]) for k, v in G.state_dict().items())
    with torch.no_grad():
        far = G.synthesis(ws[:1], noise_mode="const")[0]
        for n, m in noise.items():
            bufs[n].copy_(m)
        out = G.synthesis(ws[-1:], noise_mode="const")[0]
    assert (out - target).square().mean() < 0.2 * (far - target).square().mean()
    with pytest.raises(ValueError, match="target must be a tensor of shape"):
        tools.project(G, target[:1], num_steps=1)
    with pytest.raises(ValueError, match="unconditional"):
        tools.project(tiny_G(c_dim=2), target, num_steps=1)


@pytest.mark.parametrize("layer", ["modconv", "adain"])
def test_projection_optimizes_the_noise_maps(layer):
    def maps(strength, **kw):
        G = noisy_G(layer, strength)
        with torch.no_grad():
            target = G(tools.seed_latents([3], 32), None, noise_mode="const")[0]
        return tools.project(G, target, num_steps=10, w_avg_samples=100, seed=5, **kw)[1]
    still = maps(0.0, regularize_noise_weight=0)
    g = torch.Generator().manual_seed(5)                         # the initial draws of the maps, normalized
    first = {n: torch.randn(m.shape, generator=g) for n, m in still.items()}
    first = {n: (m - m.mean()) / (m - m.mean()).square().mean().sqrt() for n, m in first.items()}
    # without the regularizer, the distance's gradient moves the maps when they matter (strength != 0) and only then
    for n, m in still.items():
        torch.testing.assert_close(m, first[n])
    for n, m in maps(0.3, regularize_noise_weight=0).items():
        assert (m - first[n]).abs().max() > 1e-2, n
    for n, m in maps(0.0).items():                               # the regularizer alone moves them too
        assert (m - first[n]).abs().max() > 1e-2, n
    assert maps(0.3, optimize_noise=False) == {}
    x = torch.linspace(-1, 1, 16)                                # S2A's regularizer: large on a correlated map
    smooth = (x[:, None] + x[None, :]) / 0.82
    white = torch.randn(16, 16, generator=g)
    assert tools._noise_regularization(smooth) > 100 * tools._noise_regularization(white)


@pytest.mark.parametrize("layer", ["modconv", "adain"])
def test_synthesis_layers_take_a_noise_map_that_requires_grad(layer):
    blk = noisy_G(layer, 0.3).synthesis.b8.conv1.double()
    x, w = torch.randn(2, blk.in_channels, 8, 8, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    want = blk(x, w, noise_mode="const")                          # the fused path: noise a constant
    noise = blk.noise_const.clone().requires_grad_(True)

    def f(m):
        blk.noise_const = m
        return blk(x, w, noise_mode="const")
    torch.testing.assert_close(f(noise), want)
    assert torch.autograd.gradcheck(f, (noise,))


def test_vgg16_weights_load_from_state_dicts_and_torchscript_is_refused(tmp_path):
    from safetensors.torch import save_file
    sd = vgg16_state_dict(1)
    torch.save(sd, tmp_path / "vgg16.pth")
    save_file(sd, str(tmp_path / "vgg16.safetensors"))
    a, b = tools.load_vgg16(tmp_path / "vgg16.pth"), tools.load_vgg16(tmp_path / "vgg16.safetensors")
    assert torch.equal(a.features[28].weight, sd["features.28.weight"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    feats = a(x)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4),
                                               (2, 512, 2, 2)]                  # 16 px up-sampled to 32
    for f, g in zip(feats, b(x)):
        torch.testing.assert_close(f, g)
    d = a.distance(feats, a(x.flip(0)))
    assert d.shape == (2,) and torch.all(d > 0) and torch.allclose(a.distance(feats, feats), torch.zeros(2))
    assert tools.load_vgg16(tmp_path / "vgg16.pth").features[0].weight.requires_grad is False
    script = torch.jit.script(torch.nn.Linear(2, 2))             # S2A's vgg16.pt is such a file
    script.save(str(tmp_path / "vgg16.pt"))
    with pytest.raises(ValueError, match="TorchScript file.*run the code.*S2A's vgg16.pt distance is LPIPS.*--lpips"):
        tools.load_vgg16(tmp_path / "vgg16.pt")
    del sd["features.26.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"not torchvision's VGG16 state dict \(features.26.bias"):
        tools.load_vgg16(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        tools.load_vgg16(tmp_path / "none.pth")


@pytest.mark.parametrize("learned", [True, False])
def test_vgg16_distance_is_lpips(tmp_path, learned):
    from safetensors.torch import save_file
    sd, lin = vgg16_state_dict(2), lpips_state_dict(3)
    torch.save(sd, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    save_file(lin, str(tmp_path / "vgg.safetensors"))
    vgg = tools.load_vgg16(tmp_path / "vgg16.pth", lpips=tmp_path / "vgg.pth" if learned else None)
    g = torch.Generator().manual_seed(4)
    x, y = (torch.rand(3, 3, 32, 48, generator=g) * 2 - 1 for _ in range(2))
    y[1] = x[1]
    got = vgg.distance(vgg(x), vgg(y))
    want = lpips_oracle(sd, lin if learned else None, x, y)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)       # float32 sums over up to 512 channels
    assert got[1] == 0 and torch.all(got[[0, 2]] > 0)
    if learned:
        assert all(getattr(vgg, f"lin{i}").requires_grad is False for i in range(5))
        other = tools.load_vgg16(tmp_path / "vgg16.pth", lpips=tmp_path / "vgg.safetensors")
        torch.testing.assert_close(other.distance(other(x), other(y)), got)
        assert tools.read_lpips(tmp_path / "vgg.pth")[4].shape == (1, 512, 1, 1)


def test_lpips_weights_that_are_not_lpips_vgg_are_refused(tmp_path):
    lin = lpips_state_dict()
    cases = {
        "missing": ({k: v for k, v in lin.items() if not k.startswith("lin3")}, r"lin3.model.1.weight: expected .*"
                                                                               r"\(1, 512, 1, 1\), got none"),
        "alex": (lpips_state_dict(channels=(64, 192, 384, 256, 256)), r"lin1.model.1.weight: .*got \(1, 192, 1, 1\)"),
        "flat": ({k: v.flatten() for k, v in lin.items()}, r"lin0.model.1.weight: .*got \(64,\)"),
        "tensor": (torch.zeros(3), "lin0.model.1.weight: .*got none"),
    }
    for name, (obj, msg) in cases.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        with pytest.raises(ValueError, match="not LPIPS' VGG16 weights .*" + msg):
            tools.read_lpips(tmp_path / f"{name}.pth")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "script.pt"))
    with pytest.raises(ValueError, match="TorchScript file.*run the code.*weights/v0.1/vgg.pth"):
        tools.read_lpips(tmp_path / "script.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a state dict that loads without running code"):
        tools.read_lpips(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="no such LPIPS weights file"):
        tools.read_lpips(tmp_path / "none.pth")


# ----------------------------------------------------------------------------------------------------------------
# the recipe, driven by hand (what the trainer core does per phase), against S2A's loss.py written out here


def cpu_env(resolution=16, channels=3, num_classes=0):
    """What the trainer gives a recipe, on the CPU, without AMP."""
    from gankern.train.recipes import Env
    return Env(torch.device("cpu"), 0, 1, num_classes, channels, resolution, 100, 0)


def make_recipe(env=None, **options):
    from gankern.train.recipes.stylegan2 import StyleGAN2Options, StyleGAN2Recipe
    options = {"cfg": "tiny", **options}
    torch.manual_seed(0)
    return StyleGAN2Recipe(StyleGAN2Options(**options), env or cpu_env())


def make_batch(recipe, seed, n=4, labels=False):
    from gankern.train.recipes import Batch
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
    recipe = make_recipe(cpu_env(num_classes=3), aug="ada", cond=True)
    assert recipe.nets["G"].c_dim == 3 and recipe.nets["D"].c_dim == 3
    for phase in ("G", "Greg", "D", "Dreg"):
        stats, g = run_phase(recipe, phase, make_batch(recipe, 3, labels=True))
        assert g and all(torch.isfinite(v) for v in stats.values())
    assert [p.name for p in recipe.phases] == ["G", "Greg", "D", "Dreg"]
    assert [p.interval for p in recipe.phases] == [1, 4, 1, 16]
    assert recipe.optimizers["G"].reg_interval == 4 and recipe.optimizers["D"].reg_interval == 16
    cifar = make_recipe(cpu_env(resolution=32), cfg="cifar", fmaps=1 / 128)   # S2A: no path length, no mixing
    assert [p.name for p in cifar.phases] == ["G", "D", "Dreg"] and cifar.style_mixing == 0
    assert cifar.nets["D"].b32.architecture == "orig"
    assert make_recipe(layer="adain").nets["G"].synthesis.b16.conv1.__class__.__name__ == "AdaINSynthesisLayer"
    for bad, match in ((dict(aug="sometimes"), "recipe.aug"), (dict(layer="x"), "recipe.layer"),
                       (dict(gamma=-2), "recipe.gamma"), (dict(p=1.5), "recipe.p"), (dict(cond=True), "labelled"),
                       (dict(cfg="paper128"), "recipe.cfg"), (dict(augpipe="xyz"), "recipe.augpipe"),
                       (dict(r1_interval=0), "recipe.r1_interval")):
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


# ----------------------------------------------------------------------------------------------------------------
# through the trainer core and the CLI


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_run(steps=8, batch=8, res=16, layer="modconv", **train):
    from gankern.train import named_config
    cfg = named_config("stylegan" if layer == "adain" else "stylegan2")
    o, t = cfg.options, cfg.train
    o.cfg, o.fmaps = "tiny", 1 / 128                                      # 32 channels at 16 px
    # regularizers and ADA every other step, so that a short run exercises them all (and p moves)
    o.r1_interval, o.pl_interval, o.ada_interval, o.ada_kimg, o.p = 4, 2, 2, 0.2, 0.5
    t.resolution, t.batch, t.kimg, t.log_steps, t.snap_steps, t.ckpt_steps = res, batch, batch * steps / 1000, 4, 4, 4
    t.metrics, t.grid, t.metric_samples = "none", 4, 100
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["modconv", "adain"])
def test_tiny_training_on_digits_lowers_fid(tmp_path, one_thread, monkeypatch, layer):
    """A 16 px StyleGAN2 (StyleGAN with adain), 16 channels, on digits for 140 steps of 8 with S2A's lazy R1 (every
    16) and path length (every 4), style mixing 0.9 and ADA: no NaN (the trainer stops on one) and digits-FID falls."""
    import json
    import os

    from gankern.train import Trainer
    monkeypatch.setattr("gankern.train.snapshots.plot_run", lambda *a, **k: None)   # matplotlib: seconds, not tested
    steps = 140
    cfg = tiny_run(steps=steps, batch=8, layer=layer, metrics="digits-fid", metric_samples=500, log_steps=20,
                   snap_steps=steps, ckpt_steps=steps)
    o = cfg.options
    o.fmaps, o.r1_interval, o.pl_interval, o.ada_interval, o.ada_kimg, o.p = 1 / 256, 16, 4, 4, 2.0, 0.0
    tr = Trainer(cfg, str(tmp_path), progress=False)
    assert tr.recipe.style_mixing == 0.9 and tr.recipe.gamma > 0 and tr.recipe.pl_weight == 2
    tr.train()
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    fids = [r["fid_digits"] for r in rows if "fid_digits" in r]
    assert len(fids) == 2 and fids[1] < 0.7 * fids[0], fids
    ps = [r["ada/p"] for r in rows if "ada/p" in r]
    assert len(ps) == steps // 20 and max(ps) > 0                       # ADA moved p
    assert all(r["D/r1_penalty"] > 0 and r["G/pl_penalty"] >= 0 for r in rows if "D/loss" in r)
    assert float(tr.recipe.pl_mean) > 0


def test_training_resumes_exactly_with_pl_mean_and_ada_p(tmp_path, one_thread):
    from gankern.train import Trainer
    cfg = tiny_run(res=8)
    full = Trainer(cfg, str(tmp_path / "full"), progress=False)
    full.train()
    crashing = Trainer(cfg, str(tmp_path / "part"), progress=False)
    run_phase = crashing.run_phase

    def crash_at_6(phase, step):
        if step == 6 and phase.name == "D":
            raise RuntimeError("crash")
        return run_phase(phase, step)
    crashing.run_phase = crash_at_6
    with pytest.raises(RuntimeError, match="crash"):
        crashing.train()
    part = Trainer(cfg, str(tmp_path / "part"), progress=False).resume()
    assert part.step == 4
    part.train()
    for name, a, b in (("G", full.nets["G"], part.nets["G"]), ("D", full.nets["D"], part.nets["D"]),
                       ("G_ema", full.G_ema, part.G_ema)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), f"{name}.{k}"
    ra, rb = full.recipe, part.recipe
    assert float(ra.pl_mean) > 0 and torch.equal(ra.pl_mean, rb.pl_mean)
    assert ra.ada.steps == rb.ada.steps == 8 and torch.isfinite(ra.ada.rt)   # p was adjusted 4 times
    assert torch.equal(ra.augment_pipe.p, rb.augment_pipe.p) and torch.equal(ra.ada.rt, rb.ada.rt)


def test_cli_train_generate_project_with_digits_fid(tmp_path, one_thread, capsys):
    import json
    import os

    from PIL import Image

    from gankern.cli import main
    out = tmp_path / "runs"
    assert main(["train", "--config", "stylegan", "--data", "digits", "--res", "16", "--batch", "8", "--kimg", "0.032",
                 "--snap", "4", "--outdir", str(out), "-q", "--set", "recipe.cfg=tiny",
                 "--set", "recipe.fmaps=0.0078125", "--set", "train.metric_samples=200"]) == 0
    run = str(out / os.listdir(out)[0])
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    fids = [r["fid_digits"] for r in rows if "fid_digits" in r]
    assert len(fids) == 2 and all(np.isfinite(fids)) and fids[1] < fids[0]      # at step 0 and step 4
    logged = {k for r in rows for k in r}
    assert {"G/loss", "D/loss", "G/pl_mean", "ada/p", "ada/rt", "D/r1_penalty", "G/pl_penalty"} <= logged
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["recipe"] == "stylegan2" and cfg["options"]["layer"] == "adain"
    grid = str(tmp_path / "seeds.png")
    assert main(["generate", "--run", run, "--seeds", "0-3", "--trunc", "0.7", "--noise-mode", "const",
                 "--out", grid]) == 0
    assert Image.open(grid).size[0] > 0
    assert main(["generate", "--run", run, "--mix-rows", "1,2", "--mix-cols", "3", "--out", grid]) == 0
    assert main(["generate", "--run", run, "--n", "4", "--out", grid]) == 0       # the trainer's own path
    assert main(["project", "--run", run, "--target", grid, "--num-steps", "5", "--outdir", str(tmp_path / "p")]) == 0
    assert sorted(os.listdir(tmp_path / "p")) == ["proj.png", "projected_noise.npz", "projected_w.npz", "target.png"]
    assert np.load(tmp_path / "p" / "projected_w.npz")["w"].shape[0] == 1
    assert main(["generate", "--run", run, "--seeds", "x", "--out", grid]) == 2
    assert "integers and ranges" in capsys.readouterr().err


def test_cli_generates_from_a_network_file(tmp_path, capsys):
    import os

    from gankern.cli import main
    G, D = tiny_G(), tiny_D()
    path = str(tmp_path / "net.pt")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}, path)
    grid = str(tmp_path / "g.png")
    assert main(["generate", "--network", path, "--seeds", "1-4", "--trunc", "0.5", "--out", grid]) == 0
    assert os.path.exists(grid)
    assert main(["project", "--network", path, "--target", grid, "--num-steps", "3", "--d-weight", "0",
                 "--outdir", str(tmp_path / "p")]) == 0
    torch.save(vgg16_state_dict(), tmp_path / "vgg16.pth")
    assert main(["project", "--network", path, "--target", grid, "--num-steps", "3", "--vgg16",
                 str(tmp_path / "vgg16.pth"), "--outdir", str(tmp_path / "v")]) == 0
    noise = np.load(tmp_path / "v" / "projected_noise.npz")
    assert sorted(noise.files) == sorted(n for n, _ in G.synthesis.named_buffers() if n.endswith("noise_const"))
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "vgg16.pt"))
    assert main(["project", "--network", path, "--target", grid, "--vgg16", str(tmp_path / "vgg16.pt")]) == 2
    assert "TorchScript" in capsys.readouterr().err
    assert main(["project", "--network", str(tmp_path / "none.pkl"), "--target", grid]) == 2
    assert "no such network file" in capsys.readouterr().err
    sheet = str(tmp_path / "interp.png")
    assert main(["generate", "--network", path, "--interp", "w", "--seeds", "0-3", "--frames", "5", "--out",
                 sheet]) == 0
    from PIL import Image
    assert Image.open(sheet).size == (5 * 64 + 6 * 2, 3 * 64 + 4 * 2)      # 3 seed pairs x 5 frames, tiles >= 64 px
    assert main(["generate", "--network", path, "--interp", "z", "--seeds", "0-2", "--frames", "4", "--out",
                 str(tmp_path / "frames")]) == 0                            # a folder: 2 x 3 + 1 frames of the path
    names = sorted(os.listdir(tmp_path / "frames"))
    assert names == [f"frame{i:05d}.png" for i in range(7)] and Image.open(tmp_path / "frames" / names[0]).size == (
        16, 16)
    first = np.asarray(Image.open(tmp_path / "frames" / names[0]), dtype=np.float32) / 127.5 - 1
    torch.testing.assert_close(torch.from_numpy(first).permute(2, 0, 1),
                               tools.generate_images(G, [0], noise_mode="const")[0].clamp(-1, 1), atol=0.01, rtol=0)
    assert main(["generate", "--network", path, "--interp", "w", "--seeds", "3", "--out", sheet]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    assert main(["generate", "--network", path, "--interp", "class", "--seeds", "0-3", "--out", sheet]) == 2
    assert "--interp class: BigGAN's" in capsys.readouterr().err


def test_cli_projects_with_lpips_weights(tmp_path, capsys):
    import re

    from gankern.cli import main
    path, img = str(tmp_path / "net.pt"), str(tmp_path / "target.png")
    G = noisy_G()
    torch.save({"G": G.state_dict(), "G_ema": G.state_dict()}, path)
    assert main(["generate", "--network", path, "--seeds", "9", "--out", img]) == 0
    torch.save(vgg16_state_dict(), tmp_path / "vgg16.pth")
    torch.save(lpips_state_dict(), tmp_path / "vgg.pth")
    vgg = ["--vgg16", str(tmp_path / "vgg16.pth")]
    capsys.readouterr()
    assert main(["project", "--network", path, "--target", img, "--num-steps", "30", *vgg, "--lpips",
                 str(tmp_path / "vgg.pth"), "--outdir", str(tmp_path / "p")]) == 0
    dists = [float(d) for d in re.findall(r"dist ([0-9.]+)", capsys.readouterr().err)]     # steps 1 and 30
    assert len(dists) == 2 and dists[1] < 0.5 * dists[0], dists
    assert np.load(tmp_path / "p" / "projected_w.npz")["w"].shape == (1, G.num_ws, 32)
    lin = lpips_state_dict()
    lin["lin2.model.1.weight"] = lin["lin2.model.1.weight"][:, :128]
    torch.save(lin, tmp_path / "bad.pth")
    for args, msg in (([*vgg, "--lpips", str(tmp_path / "bad.pth")], "not LPIPS' VGG16 weights (lin2.model.1.weight"),
                      (["--lpips", str(tmp_path / "vgg.pth")], "--lpips FILE (LPIPS' weights on VGG16 features) goes "
                                                               "with --vgg16 FILE")):
        assert main(["project", "--network", path, "--target", img, *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gankern project: error: ") and msg in err and "Traceback" not in err


def test_train_flags_of_s2a_map_onto_the_recipe(capsys):
    import json

    from gankern.cli import main
    assert main(["train", "--config", "stylegan", "--gamma", "0.5", "--aug", "fixed", "--p", "0.2", "--target", "0.7",
                 "--device", "cpu", "--dry-run"]) == 0
    o = json.loads(capsys.readouterr().out)["options"]
    assert (o["gamma"], o["aug"], o["p"], o["target"], o["layer"]) == (0.5, "fixed", 0.2, 0.7, "adain")
    assert main(["train", "--config", "dcgan", "--gamma", "1", "--dry-run"]) == 2       # not ignored: an error
    assert "--gamma: config 'dcgan' (recipe classic) has no such option" in capsys.readouterr().err
    assert main(["train", "--config", "stylegan2", "--p", "1.5", "--dry-run"]) == 2
    assert "recipe.p must be in [0, 1]" in capsys.readouterr().err


def test_cli_generates_from_a_conditional_network_by_class(tmp_path, capsys):
    from PIL import Image

    from gankern.cli import main
    G = tiny_G(c_dim=3)
    path, out = str(tmp_path / "cond.pt"), str(tmp_path / "c.png")
    torch.save({"G": G.state_dict(), "G_ema": G.state_dict()}, path)
    assert main(["generate", "--network", path, "--seeds", "0-1", "--class", "2", "--out", out]) == 0
    want = tools.generate_images(G, [0, 1], class_idx=2)
    got = torch.from_numpy(np.asarray(Image.open(out), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(got[:, 2:66:4, 2:66:4], want[0].clamp(-1, 1), atol=0.01, rtol=0)   # tile 1, x4
    assert main(["generate", "--network", path, "--seeds", "0-2", "--class", "1", "--interp", "z", "--frames",
                 "3", "--out", out]) == 0
    assert main(["generate", "--network", path, "--seeds", "0-1", "--class", "0,1", "--out", out]) == 2
    assert "one class for StyleGAN networks" in capsys.readouterr().err
    assert main(["generate", "--network", path, "--seeds", "0-1", "--out", out]) == 2
    assert "conditional: give a class" in capsys.readouterr().err
