"""LAPGAN (Denton et al. 2015, "Deep Generative Image Models using a Laplacian Pyramid of Adversarial Networks"):
a Laplacian pyramid of generators, coarse to fine. Level 0 generates the coarsest image (resolution R / 2^(L-1)) from
a latent vector with an MLP; each finer level l generates the band-pass residual h_l = G_l(noise plane, u(I_{l-1}))
with a small convnet that takes the noise as an extra colour plane of the upsampled coarser image, and
I_l = u(I_{l-1}) + h_l. Each D_l judges h_l + u(I_{l-1}) (the paper adds the low-pass image to the residual before
D's first layer); D_0 is an MLP. d and u: binomial 5-tap blur with 2x down/upsampling (Burt and Adelson's pyramid),
gankern.ops.resample's downsample2d / upsample2d.

Levels are numbered coarse to fine here (level 0 = the coarsest; the paper numbers them fine to coarse). The latent
z of G is (N, z0_dim + sum_l r_l^2): level 0's vector, then one noise plane per finer level, so one z fixes a
sample of the whole pyramid; it is Gaussian (the trainer's latents; the paper drew uniform noise). Widths and depths
are ours (the paper's CIFAR-10 nets were wider)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops import resample

BLUR = (1, 4, 6, 4, 1)            # binomial approximation of the Gaussian of Burt and Adelson's pyramid


@dataclass
class LAPGANModelConfig:
    levels: int = 3              # pyramid levels; the coarsest is resolution / 2^(levels - 1) (>= 4)
    z0_dim: int = 100            # level 0's latent vector
    g0_hidden: int = 600         # hidden units of the level-0 MLPs (G_0 and D_0, two hidden layers each)
    g_ch: int = 64               # channels of the finer levels' G convnets (3 conv layers, 5x5)
    d_ch: int = 64               # channels of the finer levels' D convnets (2 conv layers, then linear)


def level_sizes(cfg: LAPGANModelConfig, resolution: int) -> list[int]:
    """Resolutions of the levels, coarse to fine (the last is ``resolution``)."""
    if cfg.levels < 1:
        raise ValueError(f"model.levels={cfg.levels} must be >= 1")
    if resolution & (resolution - 1) or resolution >> (cfg.levels - 1) < 4:
        raise ValueError(f"LAPGAN with model.levels={cfg.levels} needs a power-of-two resolution >= "
                         f"{4 << (cfg.levels - 1)} (levels of at least 4 pixels), not {resolution}")
    return [resolution >> (cfg.levels - 1 - i) for i in range(cfg.levels)]


class Pyramid(nn.Module):
    """The pyramid's d (blur, 2x down) and u (2x up, blur) on (N, C, H, W), and the Laplacian pyramid of images."""

    def __init__(self):
        super().__init__()
        self.register_buffer("f", resample.setup_filter(list(BLUR)), persistent=False)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return resample.downsample2d(x, self.f)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return resample.upsample2d(x, self.f)

    def laplacian(self, x: torch.Tensor, levels: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Coarse to fine [(I_0, None), (h_1, u(I_0)), ..., (h_L-1, u(I_L-2))] of images x: the coarsest Gaussian
        level, then per finer level its band-pass residual and the upsampled coarser level it is added to."""
        gauss = [x]
        for _ in range(levels - 1):
            gauss.insert(0, self.down(gauss[0]))
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = [(gauss[0], None)]
        for coarse, fine in zip(gauss, gauss[1:]):
            low = self.up(coarse)
            out.append((fine - low, low))
        return out


def _mlp(n_in: int, hidden: int, n_out: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), act, nn.Linear(hidden, hidden), act, nn.Linear(hidden, n_out))


class Generator(nn.Module):
    """G(z (N, z_dim), c=None) -> (N, C, R, R): the pyramid sampled coarse to fine. ``level(l, z, low)``: level l's
    output for conditioning ``low`` = u(I_{l-1}) (N, C, r_l, r_l): I_0 (N, C, r_0, r_0) for l = 0 (low unused),
    else the residual h_l (N, C, r_l, r_l)."""

    def __init__(self, cfg: LAPGANModelConfig, resolution: int, channels: int):
        super().__init__()
        self.sizes, self.channels, self.z0_dim = level_sizes(cfg, resolution), channels, cfg.z0_dim
        self.z_dim = cfg.z0_dim + sum(r * r for r in self.sizes[1:])
        self.pyramid = Pyramid()
        self.g0 = nn.Sequential(_mlp(cfg.z0_dim, cfg.g0_hidden, channels * self.sizes[0] ** 2, nn.ReLU()), nn.Tanh())
        c = cfg.g_ch
        self.refine = nn.ModuleList([nn.Sequential(
            nn.Conv2d(channels + 1, c, 5, padding=2), nn.ReLU(), nn.Conv2d(c, c, 5, padding=2), nn.ReLU(),
            nn.Conv2d(c, channels, 5, padding=2)) for _ in self.sizes[1:]])

    def noise(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """Level l's part of z: (N, z0_dim) for l = 0, else the noise plane (N, 1, r_l, r_l)."""
        if level == 0:
            return z[:, :self.z0_dim]
        start = self.z0_dim + sum(r * r for r in self.sizes[1:level])
        r = self.sizes[level]
        return z[:, start:start + r * r].reshape(-1, 1, r, r)

    def level(self, level: int, z: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        if level == 0:
            return self.g0(self.noise(z, 0)).view(z.shape[0], self.channels, self.sizes[0], self.sizes[0])
        return self.refine[level - 1](torch.cat([low, self.noise(z, level).to(low.dtype)], 1))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}) (z0_dim + one noise plane per finer level), got "
                             f"{tuple(z.shape)}")
        img = self.level(0, z, None)
        for lv in range(1, len(self.sizes)):
            low = self.pyramid.up(img)
            img = low + self.level(lv, z, low)
        return img


class Discriminator(nn.Module):
    """D(level, x (N, C, r_l, r_l)) -> logits (N,): D_0 an MLP on the coarsest image, D_l (l >= 1) a convnet on
    h_l + u(I_{l-1}) (the caller adds them)."""

    def __init__(self, cfg: LAPGANModelConfig, resolution: int, channels: int):
        super().__init__()
        sizes, c, act = level_sizes(cfg, resolution), cfg.d_ch, nn.LeakyReLU(0.2)
        self.d0 = _mlp(channels * sizes[0] ** 2, cfg.g0_hidden, 1, act)
        self.judge = nn.ModuleList([nn.Sequential(
            nn.Conv2d(channels, c, 5, padding=2), act, nn.Conv2d(c, c, 5, stride=2, padding=2), act, nn.Flatten(),
            nn.Linear(c * (r // 2) ** 2, 1)) for r in sizes[1:]])

    def forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return (self.d0(x.flatten(1)) if level == 0 else self.judge[level - 1](x)).squeeze(1)
