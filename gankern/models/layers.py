"""Building blocks shared by the classic G/D architectures: spectral-norm wrapping, SAGAN self-attention,
minibatch stddev / minibatch discrimination layers, and the D head (linear output + projection conditioning)."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import MinibatchDiscrimination, MinibatchStdDev  # noqa: F401  (the models' D options)
from ..nn.utils import spectral_norm


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module``'s weight with gankern's spectral norm (gankern.nn.utils.spectral_norm) if enabled."""
    return spectral_norm(module) if enabled else module


def norm2d(kind: str, channels: int) -> nn.Module:
    """'bn' (BatchNorm2d), 'ln' (layer norm over C, H, W: GroupNorm with one group) or 'none'."""
    return {"bn": lambda: nn.BatchNorm2d(channels), "ln": lambda: nn.GroupNorm(1, channels),
            "none": nn.Identity}[kind]()


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2018): x (N, C, H, W) -> x + gamma * attention output, gamma starts at 0.

    Queries/keys have C/8 channels, values C/2 (as in BigGAN's implementation); keys/values are max-pooled 2x.
    """

    def __init__(self, channels: int, sn: bool = False):
        super().__init__()
        c8, c2 = max(channels // 8, 1), max(channels // 2, 1)
        self.q = maybe_sn(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.k = maybe_sn(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.v = maybe_sn(nn.Conv2d(channels, c2, 1, bias=False), sn)
        self.o = maybe_sn(nn.Conv2d(c2, channels, 1, bias=False), sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        q = self.q(x).flatten(2)                                    # [N, c8, HW]
        pool = (lambda t: nn.functional.max_pool2d(t, 2)) if H % 2 == 0 and W % 2 == 0 else (lambda t: t)
        k = pool(self.k(x)).flatten(2)                              # [N, c8, HW']
        v = pool(self.v(x)).flatten(2)                              # [N, c2, HW']
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)        # [N, HW, HW']
        o = (v @ attn.transpose(1, 2)).view(N, -1, H, W)            # [N, c2, H, W]
        return x + self.gamma * self.o(o)


class DHead(nn.Module):
    """D's last layers: features (N, A) -> [minibatch discrimination] -> linear -> logits (N,), plus the projection
    term <embed(y), features> of Miyato & Koyama 2018 when ``proj_classes`` > 0."""

    def __init__(self, in_features: int, sn: bool, mbdisc: int = 0, proj_classes: int = 0):
        super().__init__()
        self.mbdisc = MinibatchDiscrimination(in_features, mbdisc, 8, init_std=0.1) if mbdisc else None
        self.out = maybe_sn(nn.Linear(in_features + mbdisc, 1), sn)
        self.embed = maybe_sn(nn.Embedding(proj_classes, in_features), sn) if proj_classes else None

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.out(self.mbdisc(h) if self.mbdisc is not None else h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


def label_maps(y: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot labels y (N,) as constant maps (N, num_classes, H, W) shaped like ``like`` (N, C, H, W)."""
    oh = nn.functional.one_hot(y, num_classes).to(like.dtype)
    return oh[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])
