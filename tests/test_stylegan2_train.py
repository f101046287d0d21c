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
