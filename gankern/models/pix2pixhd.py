"""pix2pixHD's networks (Wang et al. 2018, "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs"): the global generator (CycleGAN's ResNet generator with 4 down-sampling levels), the local enhancer
(a front end at full resolution whose features are added to the global generator's last features, computed on the
input at half resolution), the multi-scale discriminator (PatchGANs on the input at 1, 1/2, 1/4, ... resolution,
returning every layer's features for the feature-matching loss), and VGG19's feature layers for the perceptual loss
(weights from a file the user gives: nothing downloads)."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .cyclegan import ResBlock, ResnetGenerator
from .pix2pix import FusedAct, PatchGAN, norm_act


def downsample(x: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's 2x down-sampling between scales: 3x3 average pooling, stride 2, padding excluded from the mean."""
    return F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)


class LocalEnhancer(nn.Module):
    """G2 of pix2pixHD: x (N, in_ch, R, R) -> (N, out_ch, R, R) in [-1, 1]. ``global_`` (a ResnetGenerator of width
    2 * ngf, the G1 of a global run) runs on x at half resolution without its output layers; its features (N, 2 ngf,
    R/2, R/2) are added to the front end's (7x7 conv, stride-2 conv) and ``n_blocks`` ResBlocks, a transposed conv
    and a 7x7 conv + tanh make the image."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 32, n_blocks: int = 3, n_down_global: int = 4,
                 n_blocks_global: int = 9, norm: str = "instance"):
        super().__init__()
        bias = norm == "instance"
        self.global_ = ResnetGenerator(in_ch, out_ch, 2 * ngf, n_blocks_global, n_down_global, norm)
        self.front = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias),
                                   *norm_act(norm, ngf, "relu"), nn.Conv2d(ngf, 2 * ngf, 3, 2, 1, bias=bias),
                                   *norm_act(norm, 2 * ngf, "relu"))
        self.back = nn.Sequential(*[ResBlock(2 * ngf, norm) for _ in range(n_blocks)],
                                  nn.ConvTranspose2d(2 * ngf, ngf, 3, 2, 1, output_padding=1, bias=bias),
                                  *norm_act(norm, ngf, "relu"), nn.ReflectionPad2d(3),
                                  nn.Conv2d(ngf, out_ch, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.back(self.front(x) + self.global_.net[:-3](downsample(x)))


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs (``n_layers`` stride-2 layers each), D_i on x down-sampled i times: x (N, in_ch, R, R) ->
    a list per scale of the outputs of every layer group (conv[, norm], LeakyReLU), the last one the logits (N, 1,
    R', R'): the features of pix2pixHD's feature-matching loss."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_D: int = 3, norm: str = "instance"):
        super().__init__()
        self.scales = nn.ModuleList(PatchGAN(in_ch, ndf, n_layers, norm) for _ in range(num_D))

    @staticmethod
    def _features(d: PatchGAN, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in d.net:
            x = layer(x)
            if isinstance(layer, (nn.LeakyReLU, FusedAct)):  # FusedAct: a LeakyReLU fused into the norm
                out.append(x)
        return out + [x]

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        feats = []
        for i, d in enumerate(self.scales):
            feats.append(self._features(d, x))
            if i + 1 < len(self.scales):
                x = downsample(x)
        return feats


# VGG19's convolution widths ("M": 2x2 max-pool), in torchvision's layout: ``features.N`` with the same N
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_SLICES = (2, 7, 12, 21, 30)                 # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (pix2pixHD's VGGLoss)


class VGG19Features(nn.Module):
    """VGG19's convolutional layers up to relu5_1 (torchvision's ``features.0`` .. ``features.29``); ``forward(x)``:
    the five relu*_1 feature maps of x (N, 3, H, W) as pix2pixHD feeds it (its images in [-1, 1], unnormalized)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(True)]
                cin = v
        self.features = nn.Sequential(*layers[:_SLICES[-1]])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for end in _SLICES:
            x = self.features[start:end](x)
            out.append(x)
            start = end
        return out

    @classmethod
    def from_file(cls, path: str) -> VGG19Features:
        """VGG19 from torchvision's state dict (``vgg19-*.pth``; its ``features.*`` entries, the classifier ignored)
        or a .safetensors file of it; read without executing code (weights_only / safetensors)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such VGG19 weights file")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:                      # TorchScript, pickled code, truncated files
            raise ValueError(f"{path}: not a VGG19 state dict that loads without running code ({type(e).__name__}); "
                             f"give torchvision's vgg19 weights (.pth state dict) or a .safetensors copy") from None
        net = cls()
        want = net.state_dict()
        got = {k: v for k, v in state.items() if k in want} if isinstance(state, dict) else {}
        missing = sorted(set(want) - set(got))
        if missing:
            raise ValueError(f"{path}: not torchvision's VGG19 layout ({len(missing)} of its feature tensors missing, "
                             f"e.g. {missing[0]})")
        net.load_state_dict(got)
        return net
