"""pix2pix's networks (Isola et al. 2017): a U-Net generator with skip connections and dropout as its noise, and the
PatchGAN discriminator (70x70 receptive field with 3 layers) that the image-to-image GANs share."""
from __future__ import annotations

import torch
from torch import nn

from ..nn.modulation import InstanceNorm2d

ACT_MODULES = {"relu": lambda: nn.ReLU(True), "lrelu": lambda: nn.LeakyReLU(0.2, True)}


def norm_layer(kind: str, ch: int, act: str = "linear") -> nn.Module:
    """'batch' (BatchNorm2d, affine) or 'instance' (gankern's InstanceNorm2d without affine or running stats, as
    pix2pix and CycleGAN use it, fused with ``act``) over ch channels."""
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return InstanceNorm2d(ch, act=act)
    raise ValueError(f"norm must be batch or instance, not '{kind}'")


class FusedAct(nn.Identity):
    """The place of an activation that the instance norm before it applies (fused): it keeps Sequential indices,
    so state_dict keys, those of the unfused pair, and marks where the activation's output is (pix2pixHD's feature
    matching reads the outputs of the activations)."""


def norm_act(kind: str, ch: int, act: str) -> list[nn.Module]:
    """[norm, activation] over ch channels, act "relu" or "lrelu" (slope 0.2); instance norm: [the fused norm,
    FusedAct()]."""
    if kind == "instance":
        return [norm_layer(kind, ch, act), FusedAct()]
    return [norm_layer(kind, ch), ACT_MODULES[act]()]


class UNet(nn.Module):
    """U-Net G: x (N, in_ch, R, R) in [-1, 1] -> (N, out_ch, R, R) in [-1, 1]; R must divide by 2**depth.

    ``depth`` stride-2 4x4 convolutions (widths ngf * min(2**i, 8); LeakyReLU 0.2, norm except on the first and the
    innermost) down to R / 2**depth, then transposed convolutions back up, each joined to the encoder feature of its
    size (skip connections); dropout 0.5 after the up blocks of the ``n_dropout`` widest levels below the innermost
    (pix2pix's noise source: it is active in train mode only)."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, depth: int = 5, norm: str = "batch",
                 n_dropout: int = 3):
        super().__init__()
        if depth < 2:
            raise ValueError(f"U-Net depth must be at least 2, got {depth}")
        self.depth = depth
        w = [ngf * min(2 ** i, 8) for i in range(depth)]
        bias = norm == "instance"                   # BatchNorm's shift replaces the bias (as the official code)
        # a down block's LeakyReLU acts in place on the previous block's output, which is also its skip: instance
        # norm takes it into its fused op (same values in both places) and a FusedAct keeps its index
        fused = norm == "instance"
        self.down = nn.ModuleList()
        for i in range(depth):
            layers = [] if i == 0 else [FusedAct() if fused and 1 < i else nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(in_ch if i == 0 else w[i - 1], w[i], 4, 2, 1, bias=bias or i in (0, depth - 1)))
            if 0 < i < depth - 1:
                layers.append(norm_layer(norm, w[i], "lrelu" if fused else "linear"))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            cin = w[i] if i == depth - 1 else 2 * w[i]
            if i == 0:
                layers = [nn.ReLU(True), nn.ConvTranspose2d(cin, out_ch, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(True), nn.ConvTranspose2d(cin, w[i - 1], 4, 2, 1, bias=bias),
                          norm_layer(norm, w[i - 1])]
                if depth - 1 - n_dropout <= i < depth - 1:
                    layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 ** self.depth or x.shape[-2] % 2 ** self.depth:
            raise ValueError(f"U-Net of depth {self.depth}: image sides must divide by {2 ** self.depth}, got "
                             f"{tuple(x.shape[-2:])}")
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)
        x = self.up[0](skips.pop())
        for u in self.up[1:]:
            x = u(torch.cat([x, skips.pop()], 1))
        return x


class PatchGAN(nn.Module):
    """PatchGAN D: x (N, in_ch, R, R) -> logits (N, 1, R', R'), one per overlapping patch. 4x4 convolutions:
    ``n_layers`` of stride 2 (widths ndf * min(2**i, 8), norm except on the first), one of stride 1, then the 1-channel
    head; n_layers=3 is pix2pix's 70x70 PatchGAN (R' = R / 8 - 2), 2 a 34x34 one."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm == "instance"
        layers, cin = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)], ndf
        for i in range(1, n_layers + 1):
            cout = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(cin, cout, 4, 2 if i < n_layers else 1, 1, bias=bias), *norm_act(norm, cout, "lrelu")]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix / CycleGAN initialization: conv weights N(0, gain), biases 0, BatchNorm weights N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
