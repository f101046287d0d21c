"""DCGAN (Radford et al. 2015): transposed-conv G with BatchNorm + ReLU, strided-conv D with LeakyReLU(0.2)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import DHead, MinibatchStdDev, SelfAttention, label_maps, maybe_sn, norm2d


class Generator(nn.Module):
    """z (N, z_dim), y (N,) | None -> (N, C, R, R). Widths: 4x4 at g_ch * 2^(n-1), halving per 2x upsample."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0):
        super().__init__()
        n = int(math.log2(resolution)) - 2                     # number of 2x upsamplings
        widths = [cfg.g_ch * 2 ** (n - 1 - i) for i in range(n)] + [channels]
        self.top = widths[0]
        self.embed = nn.Embedding(num_classes, cfg.z_dim) if num_classes else None
        z_in = cfg.z_dim * (2 if num_classes else 1)
        bn1d = (lambda c: nn.BatchNorm1d(c)) if cfg.g_norm == "bn" else (lambda c: nn.Identity())
        self.fc = nn.Sequential(maybe_sn(nn.Linear(z_in, self.top * 16), cfg.g_sn), bn1d(self.top * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            layers.append(maybe_sn(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=last), cfg.g_sn))
            layers += [nn.Tanh()] if last else [norm2d(cfg.g_norm, widths[i + 1]), nn.ReLU()]
            if cfg.attn and not last and 4 * 2 ** (i + 1) == resolution // 2:
                layers.append(SelfAttention(widths[i + 1], cfg.g_sn))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        return self.net(self.fc(z).view(-1, self.top, 4, 4))


class Discriminator(nn.Module):
    """x (N, C, R, R), y (N,) | None -> logits (N,). Widths d_ch * 2^i per 2x downsample down to 4x4."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0):
        super().__init__()
        n = int(math.log2(resolution)) - 2
        widths = [channels + (num_classes if cfg.cond == "concat" else 0)] + [cfg.d_ch * 2 ** i for i in range(n)]
        self.num_classes, self.cond = num_classes, cfg.cond
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(maybe_sn(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1), cfg.d_sn))
            if i > 0:
                layers.append(norm2d(cfg.d_norm, widths[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
            if cfg.attn and resolution // 2 ** (i + 1) == resolution // 2:
                layers.append(SelfAttention(widths[i + 1], cfg.d_sn))
        self.body = nn.Sequential(*layers)
        self.std = MinibatchStdDev(cfg.mbstd) if cfg.mbstd else None
        c = widths[-1] + (1 if cfg.mbstd else 0)
        self.head = DHead(c * 16, cfg.d_sn, cfg.mbdisc, num_classes if cfg.cond == "proj" else 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond == "concat":
            x = torch.cat([x, label_maps(y, self.num_classes, x)], 1)
        h = self.body(x)                                        # [N, C, 4, 4]
        if self.std is not None:
            h = self.std(h)
        return self.head(h.flatten(1), y)
