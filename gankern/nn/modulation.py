"""Modules of the modulation family: StyleGAN's AdaIN style block."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.modulation import adain


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
