"""ADA's controller of the augmentation probability p (StyleGAN2-ADA's training loop): the overfitting heuristic
r_t = E[sign(D(real))] is accumulated over ``interval`` steps; then p moves by sign(r_t - target) *
(images seen in those steps) / (kimg * 1000), floored at 0, so that p can go from 0 to 1 in ``kimg`` thousand
images. Everything stays on the device (no host sync); under torch.distributed the sums are all-reduced.
"""
from __future__ import annotations

import torch

from .pipe import AugmentPipe

__all__ = ["AdaController"]


class AdaController:
    """Adjust ``pipe.p`` toward the target r_t.

    Args:
        pipe: the AugmentPipe whose ``p`` buffer is adjusted.
        target: r_t to hold (S2A: 0.6).
        interval: adjust every this many calls of :meth:`step` (S2A: 4).
        kimg: thousands of images for p to move by 1 (S2A: 500).
    Use: each D step on reals, ``ada.accumulate(real_logits)``; after each training step, ``ada.step(batch_size)``
    (batch_size: images of the step over all processes). ``ada.rt`` is the last r_t (a tensor), ``ada.p`` the
    current p. ``state_dict()`` / ``load_state_dict()`` hold p, the accumulators and the step count (exact resume).
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, kimg: float = 500):
        if not isinstance(pipe, AugmentPipe):
            raise TypeError(f"pipe must be a gankern.augment.AugmentPipe, got {type(pipe).__name__}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        for name, v in (("target", target), ("kimg", kimg)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self.pipe, self.target, self.interval, self.kimg = pipe, float(target), interval, float(kimg)
        dev = pipe.p.device
        self._sum = torch.zeros([], dtype=torch.float64, device=dev)    # sum of sign(D(real)) since the last adjust
        self._count = torch.zeros([], dtype=torch.float64, device=dev)  # number of logits summed
        self._images = 0                                                # images seen since the last adjust
        self.steps = 0
        self.rt = torch.full([], float("nan"), device=dev)

    @property
    def p(self) -> torch.Tensor:
        return self.pipe.p

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add D's logits on (augmented) reals, any shape, to the running E[sign]."""
        if not isinstance(real_logits, torch.Tensor) or not real_logits.is_floating_point():
            raise TypeError("real_logits must be a float tensor")
        with torch.no_grad():
            self._sum += real_logits.detach().sign().sum().to(self._sum)
            self._count += real_logits.numel()

    def step(self, batch_size: int) -> None:
        """Count one training step of ``batch_size`` images; every ``interval`` steps, adjust p."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.steps += 1
        self._images += batch_size
        if self.steps % self.interval == 0:
            self._adjust()

    def _adjust(self) -> None:
        total = torch.stack([self._sum, self._count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
        s, n = total
        rt = (s / n.clamp_min(1)).to(self.rt.dtype)
        adjust = torch.sign(rt - self.target) * (self._images / (self.kimg * 1000))
        with torch.no_grad():  # no logits since the last adjust (n == 0): p stays
            p = torch.where(n > 0, (self.p + adjust.to(self.p.dtype)).clamp_min(0), self.p)
            self.p.copy_(p)
            self.rt.copy_(torch.where(n > 0, rt, self.rt))
        self._sum.zero_()
        self._count.zero_()
        self._images = 0

    def state_dict(self) -> dict:
        return {"p": self.p.detach().clone(), "sum": self._sum.clone(), "count": self._count.clone(),
                "images": self._images, "steps": self.steps, "rt": self.rt.clone(), "target": self.target,
                "interval": self.interval, "kimg": self.kimg}

    def load_state_dict(self, state: dict) -> None:
        missing = {"p", "sum", "count", "images", "steps", "rt"} - set(state)
        if missing:
            raise KeyError(f"AdaController state is missing {sorted(missing)}")
        with torch.no_grad():
            self.p.copy_(state["p"])
            self._sum.copy_(state["sum"])
            self._count.copy_(state["count"])
            self.rt.copy_(state["rt"])
        self._images, self.steps = int(state["images"]), int(state["steps"])

    def __repr__(self) -> str:
        return f"AdaController(target={self.target}, interval={self.interval}, kimg={self.kimg})"
