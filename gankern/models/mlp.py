"""GAN with MLPs (Goodfellow et al. 2014): fully connected G and D on flattened images."""
from __future__ import annotations

import torch
from torch import nn

from .layers import DHead, MinibatchStdDev, maybe_sn


class Generator(nn.Module):
    """z (N, z_dim), y (N,) | None -> (N, C, R, R); hidden width 4 * g_ch."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0, hidden: int | None = None):
        super().__init__()
        self.z_dim, self.num_classes, self.shape = cfg.z_dim, num_classes, (channels, resolution, resolution)
        h = hidden or 4 * cfg.g_ch
        norm = (lambda: nn.BatchNorm1d(h)) if cfg.g_norm == "bn" else nn.Identity
        self.embed = nn.Embedding(num_classes, cfg.z_dim) if num_classes else None
        z_in = cfg.z_dim * (2 if num_classes else 1)
        self.net = nn.Sequential(
            maybe_sn(nn.Linear(z_in, h), cfg.g_sn), norm(), nn.LeakyReLU(0.2),
            maybe_sn(nn.Linear(h, h), cfg.g_sn), norm(), nn.LeakyReLU(0.2),
            maybe_sn(nn.Linear(h, channels * resolution * resolution), cfg.g_sn), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        return self.net(z).view(-1, *self.shape)


class Discriminator(nn.Module):
    """x (N, C, R, R), y (N,) | None -> logits (N,); hidden width 4 * d_ch."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0, hidden: int | None = None):
        super().__init__()
        h = hidden or 4 * cfg.d_ch
        self.num_classes, self.cond = num_classes, cfg.cond
        n_in = channels * resolution * resolution + (num_classes if cfg.cond == "concat" else 0)
        self.body = nn.Sequential(
            maybe_sn(nn.Linear(n_in, h), cfg.d_sn), nn.LeakyReLU(0.2),
            maybe_sn(nn.Linear(h, h), cfg.d_sn), nn.LeakyReLU(0.2))
        self.std = MinibatchStdDev(cfg.mbstd) if cfg.mbstd else None
        self.head = DHead(h + (1 if cfg.mbstd else 0), cfg.d_sn, cfg.mbdisc,
                          num_classes if cfg.cond == "proj" else 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        f = x.flatten(1)
        if self.cond == "concat":
            f = torch.cat([f, nn.functional.one_hot(y, self.num_classes).to(f.dtype)], 1)
        h = self.body(f)
        if self.std is not None:
            h = self.std(h[:, :, None, None]).flatten(1)
        return self.head(h, y)
