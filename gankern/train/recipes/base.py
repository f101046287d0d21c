"""The contract between the trainer core (loop.py) and a GAN family's recipe (StyleGAN2-ADA's training_loop / loss
split): a recipe owns its nets, how G and D run (augmentation, noise, style mixing) and its losses. See the README."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass
class Phase:
    """``accum`` rounds (0: train.accum) of ``accumulate_gradients(name, ...)``, then an optimizer step of ``net``;
    every ``interval`` steps (lazy regularization), ``repeats`` times a step, each on a fresh real batch (n_critic)."""
    name: str
    net: str
    interval: int = 1
    repeats: int = 1
    accum: int = 0


@dataclass
class OptSpec:
    """The optimizer of one net. ``reg_interval`` > 1 (the net is lazily regularized): StyleGAN2's correction
    ``mb_ratio = reg_interval / (reg_interval + 1)``, lr *= mb_ratio, betas **= mb_ratio (see :meth:`build`)."""
    kind: str = "adam"           # adam | rmsprop (no betas) | sgd (momentum betas[0])
    lr: float = 2e-3
    betas: tuple = (0.0, 0.99)
    eps: float = 1e-8
    reg_interval: int = 1

    def build(self, params) -> torch.optim.Optimizer:
        r = self.reg_interval / (self.reg_interval + 1) if self.reg_interval > 1 else 1.0
        lr, betas, k = self.lr * r, tuple(b ** r for b in self.betas), self.kind
        if k not in ("adam", "rmsprop", "sgd"):
            raise ValueError(f"optimizer kind must be adam, rmsprop or sgd, not '{k}'")
        return torch.optim.Adam(params, lr, betas=betas, eps=self.eps) if k == "adam" else torch.optim.SGD(
            params, lr, momentum=betas[0]) if k == "sgd" else torch.optim.RMSprop(params, lr, eps=self.eps)


@dataclass
class Batch:
    """One accumulation round's slice of this rank's batch, on the device."""
    real: Tensor                 # (b, C, H, W) float in [-1, 1]
    c: Tensor | None             # (b,) long labels of the reals (None: unconditional)
    z: Tensor                    # (b, z_dim) latents, fixed by (seed, step, phase, repeat)
    c_gen: Tensor | None         # (b,) labels for the generated images
    seed: int                    # fixed by (run seed, step, phase, repeat, round, rank): seed recipe-side randomness


@dataclass
class Env:
    """What the trainer gives a recipe. ``autocast()``: the run's AMP context; ``backward(loss)``: backward through
    the gradient scaler of the phase being run."""
    device: torch.device
    rank: int
    world: int
    num_classes: int             # of the data set (0: unlabelled)
    channels: int
    resolution: int
    total_steps: int
    seed: int
    autocast: Callable[[], Any] = contextlib.nullcontext
    backward: Callable[[Tensor], None] = lambda loss: loss.backward()


class Recipe:
    """Base class of the recipes. Subclasses set ``Options`` (a dataclass of hyperparameters, written to config.json,
    set with ``--set recipe.X=V``) and fill, in ``__init__``, ``nets`` (built on the CPU: the trainer moves them),
    ``optimizers`` (an OptSpec per trained net), ``phases``, ``z_dim`` and ``num_classes`` (the labels the nets take:
    0 or env.num_classes). ``ema``: the net the trainer keeps an EMA copy of (G_ema), or None. ``batch``: the real
    images (and latents) of the next step over all ranks, read before each step (0: train.batch; PGGAN sets its own per
    resolution). ``opt``: the optimizers the trainer built from ``optimizers`` (set after __init__)."""
    Options: type = type(None)
    ema: str | None = "G"
    batch: int = 0

    def __init__(self, options, env: Env):
        self.options, self.env = options, env
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, OptSpec] = {}
        self.phases: list[Phase] = []
        self.z_dim, self.num_classes = 0, 0

    def run_G(self, z: Tensor, c: Tensor | None, **kw) -> Tensor:
        return self.nets["G"](z, c)                  # the one place where G runs (style mixing, truncation, ...)

    def run_D(self, img: Tensor, c: Tensor | None, **kw) -> Tensor:
        return self.nets["D"](img, c)                # the one place where D runs (augmentation, instance noise, ...)

    def accumulate_gradients(self, phase: str, batch: Batch, gain: float) -> dict[str, Tensor]:
        """One accumulation round of ``phase``: ``env.backward(loss * gain)`` (gain = phase interval / rounds);
        returns detached scalar stats on the device (never ``.item()``: the trainer reads them per log_steps)."""
        raise NotImplementedError

    def after_step(self, phase: str, step: int) -> None:
        """After each optimizer step of ``phase`` (weight clipping, ADA's p update, ...)."""

    def log_stats(self) -> dict[str, Tensor]:
        """Extra scalars for the log rows (ADA's p, pl_mean, ...)."""
        return {}

    def state_dict(self) -> dict:
        """The recipe's own state for checkpoints (tensors, numbers, strings: weights_only=True loads it)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def generate(self, G: nn.Module, z: Tensor, c: Tensor | None) -> Tensor:
        """Images of G (or G_ema) for snapshots, metrics and ``gankern generate``."""
        return G(z, c)
