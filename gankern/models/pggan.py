"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation"):
G and D of every resolution from 4x4 up to ``resolution``, run at a *stage* (the current resolution 4 * 2^stage) with
the fade-in weight ``alpha`` of that stage's new layers.

G: normalized z -> dense to 4x4 (as the official code: weight gain sqrt(2) / 4, one bias per channel) -> 3x3 conv,
then per doubling nearest upsampling and two 3x3 convs; leaky ReLU 0.2 and pixel normalization after the dense layer
and every conv; a 1x1 toRGB per resolution. While a stage fades in, the image is
``lerp(upsample(toRGB_prev(h_prev)), toRGB(h), alpha)``. D mirrors it: a 1x1 fromRGB per resolution, per halving two
3x3 convs and 2x2 average pooling (while fading in, ``lerp(fromRGB_prev(avgpool(x)), block(fromRGB(x)), alpha)``),
then minibatch stddev (gankern's fused op), a 3x3 conv and two dense layers. Every layer has an equalized learning
rate (gankern.nn's Conv2dLayer / FullyConnectedLayer: weights ~ N(0, 1) scaled by He's constant at run time; their
leaky ReLU's gain sqrt(2) multiplies the activation, not the weights: the same functions, the biases scaled by it).
Widths: min(ch_base // res, ch_max) (the paper's: 16384 and 512).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.minibatch import MinibatchStdDev
from ..nn.modulation import Conv2dLayer, FullyConnectedLayer
from .stylegan2 import normalize_2nd_moment as pixel_norm


@dataclass
class PGGANModelConfig:
    z_dim: int = 512
    ch_base: int = 16384         # width of the layers at resolution r: min(ch_base // r, ch_max)
    ch_max: int = 512
    mbstd_group: int = 4         # minibatch stddev group size in D (0 = off)


def num_stages(resolution: int) -> int:
    """Stages 0..n-1 of a network for ``resolution`` (a power of two >= 4): stage s works at 4 * 2^s pixels."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"PGGAN needs a power-of-two resolution >= 4, not {resolution}")
    return int(math.log2(resolution)) - 1


def _width(cfg: PGGANModelConfig, stage: int) -> int:
    return max(1, min(cfg.ch_base // (4 << stage), cfg.ch_max))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Generator(nn.Module):
    """G(z (N, z_dim), c=None, stage=None, alpha=None) -> (N, C, 4 * 2^stage, same) images; stage and alpha default
    to the ``stage`` / ``alpha`` buffers (set with :meth:`set_progress`; they travel with the state_dict and G_ema)."""

    def __init__(self, cfg: PGGANModelConfig, resolution: int, channels: int):
        super().__init__()
        n = num_stages(resolution)
        w = [_width(cfg, s) for s in range(n)]
        self.z_dim = cfg.z_dim
        self.dense = FullyConnectedLayer(cfg.z_dim, w[0] * 16, bias=False)
        self.bias = nn.Parameter(torch.zeros(w[0]))
        self.conv0 = Conv2dLayer(w[0], w[0], 3, activation="lrelu")
        self.blocks = nn.ModuleList([nn.ModuleList([Conv2dLayer(w[s - 1], w[s], 3, activation="lrelu"),
                                                    Conv2dLayer(w[s], w[s], 3, activation="lrelu")])
                                     for s in range(1, n)])
        self.to_rgb = nn.ModuleList([Conv2dLayer(w[s], channels, 1) for s in range(n)])
        self.register_buffer("stage", torch.tensor(n - 1))
        self.register_buffer("alpha", torch.tensor(1.0))

    def set_progress(self, stage: int, alpha: float) -> None:
        self.stage.fill_(stage)
        self.alpha.fill_(alpha)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, stage: int | None = None,
                alpha: float | None = None) -> torch.Tensor:
        stage = int(self.stage) if stage is None else stage          # host reads only when not given (sampling)
        alpha = float(self.alpha) if alpha is None else alpha
        x = self.dense(pixel_norm(z)).view(z.shape[0], -1, 4, 4) * (math.sqrt(2) / 4) + self.bias.view(1, -1, 1, 1)
        x = pixel_norm(F.leaky_relu(x, 0.2))
        x = pixel_norm(self.conv0(x))
        prev = x
        for conv1, conv2 in self.blocks[:stage]:
            prev = x
            x = pixel_norm(conv2(pixel_norm(conv1(_up(x)))))
        img = self.to_rgb[stage](x)
        if stage > 0 and alpha < 1:
            img = torch.lerp(_up(self.to_rgb[stage - 1](prev)), img, alpha)
        return img


class Discriminator(nn.Module):
    """D(x (N, C, r, r), c=None, alpha=1.0) -> scores (N,) at the stage of x's resolution r = 4 * 2^stage."""

    def __init__(self, cfg: PGGANModelConfig, resolution: int, channels: int):
        super().__init__()
        n = num_stages(resolution)
        w = [_width(cfg, s) for s in range(n)]
        self.from_rgb = nn.ModuleList([Conv2dLayer(channels, w[s], 1, activation="lrelu") for s in range(n)])
        self.blocks = nn.ModuleList([nn.Sequential(Conv2dLayer(w[s], w[s], 3, activation="lrelu"),
                                                   Conv2dLayer(w[s], w[s - 1], 3, activation="lrelu"),
                                                   nn.AvgPool2d(2)) for s in range(1, n)])
        self.mbstd = MinibatchStdDev(cfg.mbstd_group) if cfg.mbstd_group else None
        self.conv = Conv2dLayer(w[0] + (1 if cfg.mbstd_group else 0), w[0], 3, activation="lrelu")
        self.fc = FullyConnectedLayer(w[0] * 16, w[0], activation="lrelu")
        self.out = FullyConnectedLayer(w[0], 1)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
        stage = int(math.log2(img.shape[-1])) - 2
        if not 0 <= stage < len(self.from_rgb) or img.shape[-1] != 4 << stage:
            raise ValueError(f"D takes images of 4 * 2^s pixels up to {4 << (len(self.from_rgb) - 1)}, got "
                             f"{tuple(img.shape)}")
        x = self.from_rgb[stage](img)
        if stage > 0:
            x = self.blocks[stage - 1](x)
            if alpha < 1:
                x = torch.lerp(self.from_rgb[stage - 1](F.avg_pool2d(img, 2)), x, alpha)
        for s in range(stage - 1, 0, -1):
            x = self.blocks[s - 1](x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.out(self.fc(self.conv(x).flatten(1))).squeeze(1)
