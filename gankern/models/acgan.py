"""Extra heads on a classic discriminator's features (ACGAN's auxiliary classifier, Odena et al. 2017; InfoGAN's Q
head, Chen et al. 2016): the features are what D's DHead reads, so the heads share all of D's body."""
from __future__ import annotations

import torch
from torch import nn


class AuxHead(nn.Module):
    """D (an unconditional discriminator of gankern.models.build, with ``mbdisc`` minibatch-discrimination kernels)
    plus a linear head of ``n_out`` outputs on the features D's head reads.

    ``forward(x (N, C, R, R), y=None) -> logits (N,)`` (D unchanged: penalties and SN work as before);
    ``forward_aux(x) -> (logits (N,), aux (N, n_out))`` in one pass of D's body."""

    def __init__(self, D: nn.Module, n_out: int, mbdisc: int = 0):
        super().__init__()
        self.D = D
        self.aux = nn.Linear(D.head.out.in_features - mbdisc, n_out)
        self._features: list[torch.Tensor] = []
        D.head.register_forward_pre_hook(self._keep)

    def _keep(self, module, args):
        self._features.append(args[0])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.D(x)
        self._features.clear()
        return out

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.D(x)
        h = self._features.pop()
        self._features.clear()
        return out, self.aux(h)
