"""Autoencoder discriminators of the energy-based GANs (EBGAN, Zhao et al. 2017; BEGAN, Berthelot et al. 2017) and
BEGAN's generator (the decoder's architecture): 3x3 convolutions with ELU, widths growing linearly with depth,
strided-conv downsampling and nearest upsampling, an embedding of ``h_dim`` at 4x4."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AEModelConfig:
    z_dim: int = 64              # G's input
    h_dim: int = 64              # D's embedding (the autoencoder's bottleneck)
    g_ch: int = 32               # G / decoder width (BEGAN's n)
    d_ch: int = 32               # D's encoder width; widths d_ch * (i + 1) per level


class Decoder(nn.Module):
    """h (N, h_dim) -> (N, C, R, R): linear to (ch, 4, 4), then per 2x: conv-ELU-conv-ELU and nearest upsample; a
    last 3x3 conv to C (no output nonlinearity, as in BEGAN; ``tanh=True`` bounds it to [-1, 1])."""

    def __init__(self, h_dim: int, ch: int, resolution: int, channels: int, tanh: bool = False):
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(h_dim, ch * 16)
        layers: list[nn.Module] = []
        for i in range(int(math.log2(resolution)) - 2):
            layers += [nn.Conv2d(ch, ch, 3, 1, 1), nn.ELU(), nn.Conv2d(ch, ch, 3, 1, 1), nn.ELU(),
                       nn.Upsample(scale_factor=2, mode="nearest")]
        layers += [nn.Conv2d(ch, ch, 3, 1, 1), nn.ELU(), nn.Conv2d(ch, channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers, *([nn.Tanh()] if tanh else []))

    def forward(self, h: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.fc(h).view(-1, self.ch, 4, 4))


class Encoder(nn.Module):
    """x (N, C, R, R) -> h (N, h_dim): 3x3 conv-ELU, then per 2x: conv-ELU and a strided conv (width ch * (i + 2))."""

    def __init__(self, h_dim: int, ch: int, resolution: int, channels: int):
        super().__init__()
        n = int(math.log2(resolution)) - 2
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 3, 1, 1), nn.ELU()]
        for i in range(n):
            layers += [nn.Conv2d(ch * (i + 1), ch * (i + 1), 3, 1, 1), nn.ELU(),
                       nn.Conv2d(ch * (i + 1), ch * (i + 2), 3, 2, 1), nn.ELU()]
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(ch * (n + 1) * 16, h_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))


class AutoEncoderD(nn.Module):
    """D(x (N, C, R, R)) -> (reconstruction (N, C, R, R), embedding (N, h_dim))."""

    def __init__(self, cfg: AEModelConfig, resolution: int, channels: int):
        super().__init__()
        if resolution & (resolution - 1) or resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, not {resolution}")
        self.enc = Encoder(cfg.h_dim, cfg.d_ch, resolution, channels)
        self.dec = Decoder(cfg.h_dim, cfg.d_ch, resolution, channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.dec(h), h
