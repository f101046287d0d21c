"""Modules of the modulation family: StyleGAN's AdaIN style block and StyleGAN2's modulated convolution layer."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.modulation import adain, modulated_conv2d
from ..ops.resample import conv2d_resample_size, setup_filter


class AdaIN(nn.Module):
    """StyleGAN (v1) style block: an affine map of the latent w to per-channel (gamma, beta), then
    ``instance_norm(x) * gamma + beta`` in one fused op.

    Args:
        num_features: C, the channels of x.
        style_dim: the size of w.
        eps: added to the variance.
    Shapes: x (N, C, H, W), w (N, style_dim) -> (N, C, H, W).
    """

    def __init__(self, num_features: int, style_dim: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.style_dim, self.eps = num_features, style_dim, eps
        self.affine = nn.Linear(style_dim, 2 * num_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.affine.reset_parameters()
        with torch.no_grad():  # start as the identity style: gamma = 1, beta = 0
            self.affine.bias[: self.num_features].fill_(1.0)
            self.affine.bias[self.num_features:].zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(w).chunk(2, dim=1)
        return adain(x, gamma, beta, self.eps)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, style_dim={self.style_dim}, eps={self.eps}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 synthesis layer: styles = affine(w), then :func:`gankern.ops.modulated_conv2d` with demodulation,
    per-pixel noise times a learned strength, bias and activation fused into one epilogue.

    Args:
        in_channels, out_channels, kernel_size: of the convolution (padding kernel_size // 2).
        style_dim: the size of w.
        demodulate: StyleGAN2's weight demodulation (False for toRGB layers: the styles are then scaled by
            1 / sqrt(in_channels * kernel_size^2), as StyleGAN2 does).
        up, down: FIR resampling (filter [1, 3, 3, 1]) fused around the convolution.
        act: a key of gankern.ops.modulation.ACTIVATIONS (its default gain applies).
        noise: learn a noise strength (a scalar, initialized to 0) and add per-pixel noise.
        clamp: clamp the output (StyleGAN2's conv_clamp), or None.
    Shapes: x (N, in_channels, H, W), w (N, style_dim) -> (N, out_channels, H', W').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, up: int = 1, down: int = 1, act: str = "lrelu", noise: bool = True,
                 clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.style_dim, self.demodulate, self.up, self.down, self.act, self.clamp = (style_dim, demodulate, up, down,
                                                                                     act, clamp)
        self.affine = nn.Linear(style_dim, in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.noise_strength = nn.Parameter(torch.empty(())) if noise else None
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]) if up > 1 or down > 1 else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.affine.reset_parameters()
        with torch.no_grad():
            self.affine.bias.fill_(1.0)  # styles start at 1
            self.weight.normal_()
            self.bias.zero_()
            if self.noise_strength is not None:
                self.noise_strength.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """noise_mode: "random" (fresh noise each call) or "none"."""
        if noise_mode not in ("random", "none"):
            raise ValueError(f"noise_mode must be 'random' or 'none', got {noise_mode!r}")
        styles = self.affine(w)
        if not self.demodulate:
            styles = styles * (self.in_channels * self.kernel_size ** 2) ** -0.5
        noise = None
        if self.noise_strength is not None and noise_mode == "random":
            k = self.kernel_size
            size = conv2d_resample_size(x.shape[2], x.shape[3], k, k, self.resample_filter, self.up, self.down, k // 2)
            noise = torch.randn(x.shape[0], 1, *size, device=x.device, dtype=x.dtype)
        return modulated_conv2d(x, self.weight, styles, self.demodulate, self.kernel_size // 2, self.up, self.down,
                                self.resample_filter, flip_weight=self.up == 1, bias=self.bias, noise=noise,
                                noise_strength=self.noise_strength if noise is not None else None, act=self.act,
                                clamp=self.clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"style_dim={self.style_dim}, demodulate={self.demodulate}, up={self.up}, down={self.down}, "
                f"act={self.act!r}, noise={self.noise_strength is not None}")
