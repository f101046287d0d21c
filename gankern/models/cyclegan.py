"""CycleGAN's networks (Zhu et al. 2017): the ResNet generator (reflection padding, instance norm) and the pair of
generators / discriminators of the two directions as one module each (one optimizer each, as the official code)."""
from __future__ import annotations

import torch
from torch import nn

from .pix2pix import PatchGAN, norm_act, norm_layer


class ResBlock(nn.Module):
    """x + (reflect-pad, conv 3x3, norm, ReLU, reflect-pad, conv 3x3, norm)(x)."""

    def __init__(self, ch: int, norm: str):
        super().__init__()
        bias = norm == "instance"
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias), *norm_act(norm, ch, "relu"),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias), norm_layer(norm, ch))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """ResNet G: x (N, in_ch, R, R) -> (N, out_ch, R, R) in [-1, 1], R divisible by 2**n_down: a 7x7 conv (reflection
    padded), ``n_down`` stride-2 3x3 convs doubling the width, ``n_blocks`` ResBlocks (6 for 128 px, 9 for 256 px in
    the paper), ``n_down`` transposed convs back, a 7x7 conv and tanh; norm and ReLU after every conv but the last."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_blocks: int = 6, n_down: int = 2,
                 norm: str = "instance"):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias), *norm_act(norm, ngf, "relu")]
        for i in range(n_down):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), *norm_act(norm, 2 * c, "relu")]
        layers += [ResBlock(ngf * 2 ** n_down, norm) for _ in range(n_blocks)]
        for i in reversed(range(n_down)):
            c = ngf * 2 ** (i + 1)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias),
                       *norm_act(norm, c // 2, "relu")]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CycleGenerators(nn.Module):
    """G_AB (A -> B) and G_BA (B -> A), ResnetGenerators on ``ch`` channels; ``forward(x, "AB" | "BA")``."""

    def __init__(self, ch: int, **kw):
        super().__init__()
        self.AB, self.BA = ResnetGenerator(ch, ch, **kw), ResnetGenerator(ch, ch, **kw)

    def forward(self, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        if direction not in ("AB", "BA"):
            raise ValueError(f"direction must be AB or BA, not '{direction}'")
        return getattr(self, direction)(x)


class CycleDiscriminators(nn.Module):
    """D_A (real A vs G_BA's fakes) and D_B (real B vs G_AB's fakes), PatchGANs; ``forward(x, "A" | "B")``."""

    def __init__(self, ch: int, **kw):
        super().__init__()
        self.A, self.B = PatchGAN(ch, **kw), PatchGAN(ch, **kw)

    def forward(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return getattr(self, domain)(x)
