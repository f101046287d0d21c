"""SNGAN/SAGAN ResNets (Miyato et al. 2018, Zhang et al. 2018): pre-activation residual up/down blocks, global sum
pooling in D, optional self-attention at half the resolution."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layers import DHead, MinibatchStdDev, SelfAttention, label_maps, maybe_sn, norm2d


class GBlock(nn.Module):
    """(N, I, H, W) -> (N, O, 2H, 2W): norm-ReLU-up-conv3-norm-ReLU-conv3 + up-conv1 shortcut."""

    def __init__(self, i: int, o: int, norm: str, sn: bool):
        super().__init__()
        self.n1, self.n2 = norm2d(norm, i), norm2d(norm, o)
        self.c1 = maybe_sn(nn.Conv2d(i, o, 3, 1, 1), sn)
        self.c2 = maybe_sn(nn.Conv2d(o, o, 3, 1, 1), sn)
        self.sc = maybe_sn(nn.Conv2d(i, o, 1), sn)

    def forward(self, x):
        h = F.interpolate(F.relu(self.n1(x)), scale_factor=2.0)
        h = self.c2(F.relu(self.n2(self.c1(h))))
        return h + self.sc(F.interpolate(x, scale_factor=2.0))


class DBlock(nn.Module):
    """(N, I, H, W) -> (N, O, H/2, W/2): [ReLU]-conv3-ReLU-conv3-avgpool + conv1-avgpool shortcut."""

    def __init__(self, i: int, o: int, norm: str, sn: bool, first: bool):
        super().__init__()
        self.first = first
        self.c1 = maybe_sn(nn.Conv2d(i, o, 3, 1, 1), sn)
        self.c2 = maybe_sn(nn.Conv2d(o, o, 3, 1, 1), sn)
        self.sc = maybe_sn(nn.Conv2d(i, o, 1), sn)
        self.n = norm2d(norm, o)

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.c2(F.relu(self.n(self.c1(h)))), 2)
        s = self.sc(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.sc(x), 2)
        return h + s


class Generator(nn.Module):
    """z (N, z_dim), y (N,) | None -> (N, C, R, R); every block has width g_ch."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0):
        super().__init__()
        n, ch = int(math.log2(resolution)) - 2, cfg.g_ch
        self.ch = ch
        self.embed = nn.Embedding(num_classes, cfg.z_dim) if num_classes else None
        self.fc = maybe_sn(nn.Linear(cfg.z_dim * (2 if num_classes else 1), ch * 16), cfg.g_sn)
        blocks: list[nn.Module] = []
        for i in range(n):
            blocks.append(GBlock(ch, ch, cfg.g_norm, cfg.g_sn))
            if cfg.attn and 4 * 2 ** (i + 1) == resolution // 2:
                blocks.append(SelfAttention(ch, cfg.g_sn))
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(norm2d(cfg.g_norm, ch), nn.ReLU(),
                                 maybe_sn(nn.Conv2d(ch, channels, 3, 1, 1), cfg.g_sn), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        return self.out(self.blocks(self.fc(z).view(-1, self.ch, 4, 4)))


class Discriminator(nn.Module):
    """x (N, C, R, R), y (N,) | None -> logits (N,); blocks of width d_ch down to 4x4, ReLU, sum over H, W."""

    def __init__(self, cfg, resolution: int, channels: int, num_classes: int = 0):
        super().__init__()
        n, ch = int(math.log2(resolution)) - 2, cfg.d_ch
        self.num_classes, self.cond = num_classes, cfg.cond
        c_in = channels + (num_classes if cfg.cond == "concat" else 0)
        d_norm = cfg.d_norm if cfg.d_norm != "bn" else "none"      # SNGAN's D has no BatchNorm
        blocks: list[nn.Module] = []
        for i in range(n):
            blocks.append(DBlock(c_in if i == 0 else ch, ch, d_norm, cfg.d_sn, first=i == 0))
            if cfg.attn and resolution // 2 ** (i + 1) == resolution // 2:
                blocks.append(SelfAttention(ch, cfg.d_sn))
        self.blocks = nn.Sequential(*blocks)
        self.std = MinibatchStdDev(cfg.mbstd) if cfg.mbstd else None
        self.head = DHead(ch + (1 if cfg.mbstd else 0), cfg.d_sn, cfg.mbdisc,
                          num_classes if cfg.cond == "proj" else 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond == "concat":
            x = torch.cat([x, label_maps(y, self.num_classes, x)], 1)
        h = self.blocks(x)                                      # [N, ch, 4, 4]
        if self.std is not None:
            h = self.std(h)
        return self.head(F.relu(h).sum(dim=[2, 3]), y)
