"""MLPs for 2-D points (the unrolled GAN paper's toy experiments, Metz et al. 2017): G z (N, z_dim) -> points
(N, 1, 1, 2) (the 'image' layout of gankern.data.ring), D points -> logits (N,)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ToyModelConfig:
    z_dim: int = 256
    g_ch: int = 128              # G's hidden width (two ReLU layers)
    d_ch: int = 128              # D's hidden width (one ReLU layer; the paper's D)


class Generator(nn.Module):
    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        h = cfg.g_ch
        self.net = nn.Sequential(nn.Linear(cfg.z_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, 1, 1, 2)


class Discriminator(nn.Module):
    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, cfg.d_ch), nn.ReLU(), nn.Linear(cfg.d_ch, 1))
        nn.init.zeros_(self.net[-1].weight)      # D starts indifferent (logit 0 everywhere), so its first steps
        nn.init.zeros_(self.net[-1].bias)        # learn to separate rather than undo a random tilt

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.reshape(-1, 2)).squeeze(1)
