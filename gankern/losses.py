"""GAN losses of the literature as one table: each row gives the D loss and the G loss on D's raw outputs (logits).

All functions take D outputs of any shape (usually (N,) or (N, 1)) and return a scalar (the mean over samples).

| name           | D loss                                         | G loss                 | paper                  |
|----------------|------------------------------------------------|------------------------|------------------------|
| saturating     | -log s(r) - log(1 - s(f))                      | log(1 - s(f))          | Goodfellow 2014 minimax |
| nonsaturating  | same D                                         | -log s(f)              | Goodfellow 2014 trick  |
| hinge          | relu(1 - r) + relu(1 + f)                      | -f                     | Lim 2017, Miyato 2018  |
| wasserstein    | f - r                                          | -f                     | Arjovsky 2017          |
| lsgan          | (r - 1)^2 / 2 + f^2 / 2                        | (f - 1)^2 / 2          | Mao 2017 (a=0,b=c=1)   |

s = sigmoid. One-sided label smoothing (Salimans 2016) replaces the real target 1 by ``real_target`` (e.g. 0.9) in the
D loss of the sigmoid losses and of lsgan; the other losses reject it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _bce_d(r: Tensor, f: Tensor, real_target: float) -> Tensor:
    # -t log s(r) - (1 - t) log(1 - s(r)) - log(1 - s(f)), in the stable softplus form.
    t = real_target
    real = t * F.softplus(-r) + (1.0 - t) * F.softplus(r)
    return real.mean() + F.softplus(f).mean()


def _no_smoothing(name: str, fn: Callable[[Tensor, Tensor], Tensor]):
    def d(r: Tensor, f: Tensor, real_target: float) -> Tensor:
        if real_target != 1.0:
            raise ValueError(f"label smoothing is defined for the sigmoid and least-squares losses, not '{name}'")
        return fn(r, f)
    return d


@dataclass(frozen=True)
class GanLoss:
    """One row of the table: ``d(real_logits, fake_logits, real_target)`` and ``g(fake_logits)``, both scalars."""
    name: str
    d: Callable[[Tensor, Tensor, float], Tensor]
    g: Callable[[Tensor], Tensor]
    doc: str


LOSSES: dict[str, GanLoss] = {row.name: row for row in [
    GanLoss("saturating", _bce_d, lambda f: -F.softplus(f).mean(),
            "minimax GAN: G minimizes log(1 - D(G(z))) (saturates early in training)"),
    GanLoss("nonsaturating", _bce_d, lambda f: F.softplus(-f).mean(),
            "G maximizes log D(G(z)) instead (Goodfellow 2014's practical choice; DCGAN)"),
    GanLoss("hinge", _no_smoothing("hinge", lambda r, f: F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()),
            lambda f: -f.mean(), "hinge loss (SNGAN, SAGAN, BigGAN)"),
    GanLoss("wasserstein", _no_smoothing("wasserstein", lambda r, f: f.mean() - r.mean()),
            lambda f: -f.mean(), "critic estimates W1 (WGAN with clipping, WGAN-GP)"),
    GanLoss("lsgan",
            lambda r, f, t: 0.5 * ((r - t) ** 2).mean() + 0.5 * (f ** 2).mean(),
            lambda f: 0.5 * ((f - 1.0) ** 2).mean(), "least squares GAN (a=0, b=c=1)"),
]}


def get_loss(name: str) -> GanLoss:
    """The table row called ``name``; a clear error that lists the names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; known: {', '.join(LOSSES)}") from None


def d_loss(name: str, real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """D's loss (scalar) for real_logits (N, ...) and fake_logits (M, ...)."""
    return get_loss(name).d(real_logits.float(), fake_logits.float(), real_target)


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """G's loss (scalar) for fake_logits (M, ...)."""
    return get_loss(name).g(fake_logits.float())
