"""Minibatch discrimination and minibatch standard deviation layers (see gankern/ops/minibatch.py)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import minibatch as ops


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: x (N, in_features) -> cat([x, o], 1) (N, in_features + num_kernels), with
    o = :func:`gankern.ops.minibatch_discrimination` (x, T, num_kernels, kernel_dim).

    Parameter ``T`` (in_features, num_kernels * kernel_dim), initialized from N(0, init_std^2) (init_std 1 as the
    common PyTorch ports). ``T`` is cast to x's dtype (mixed precision).
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int, init_std: float = 1.0, device=None,
                 dtype=None):
        super().__init__()
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.init_std = init_std
        self.T = nn.Parameter(torch.empty(in_features, num_kernels * kernel_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.T, 0.0, self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = ops.minibatch_discrimination(x, self.T.to(x.dtype), self.num_kernels, self.kernel_dim)
        return torch.cat([x, o.to(x.dtype)], 1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}, "
                f"init_std={self.init_std}")


class MinibatchStdDev(nn.Module):
    """PGGAN / StyleGAN2-ADA's MinibatchStdLayer: x (N, C, H, W) -> (N, C + num_channels, H, W), see
    :func:`gankern.ops.minibatch_stddev`. No parameters."""

    def __init__(self, group_size: int | None = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.minibatch_stddev(x, self.group_size, self.num_channels)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
