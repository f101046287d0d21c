"""StyleGAN2's path length regularization as a module that owns its running mean (a buffer, so it is saved in the
state_dict and restored from checkpoints with ``torch.load(weights_only=True)``)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.penalty import path_length_penalty


class PathLengthRegularizer(nn.Module):
    """``penalty = reg(img, ws)``: mean_i (lengths_i - pl_mean)^2 with the running mean ``pl_mean`` updated by
    ``decay`` on every call (see :func:`gankern.ops.penalty.path_length_penalty`).

    StyleGAN2 uses it lazily: every 4th G step, ``loss = 2 * 4 * reg(img, ws)`` (pl_weight 2, interval 4), on a
    half-size batch.

    Args:
        decay: weight of the new batch mean in the running mean (StyleGAN2: 0.01).
        through_mean: differentiate through the updated mean, as the official StyleGAN2 and StyleGAN2-ADA do
            (default), or hold it constant.
    Shapes:
        img: (N, C, H, W) = G(ws); ws: (N, L, w_dim) or (N, w_dim) with requires_grad; returns ().
    """

    def __init__(self, decay: float = 0.01, through_mean: bool = True):
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise ValueError(f"decay must be a float in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.through_mean = bool(through_mean)
        self.register_buffer("pl_mean", torch.zeros(()))

    def reset_parameters(self) -> None:
        """Forget the running mean."""
        self.pl_mean.zero_()

    def forward(self, img: torch.Tensor, ws: torch.Tensor, *, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return path_length_penalty(img, ws, self.pl_mean, self.decay, noise=noise, generator=generator,
                                   through_mean=self.through_mean)[0]

    def extra_repr(self) -> str:
        return f"decay={self.decay}, through_mean={self.through_mean}"
