"""The log window and the safety net: per-step statistics stay on the device and are read once per ``log_steps`` (one
device -> host copy) with the NaN check of the losses, which names the first step of the window where one went
non-finite; ``first_nonfinite`` finds a NaN/Inf weight."""
from __future__ import annotations

import torch

Stats = dict[str, torch.Tensor]


class NonFiniteError(RuntimeError):
    """A loss or a weight became NaN/Inf; the message names the step and the tensor."""


def first_nonfinite(nets: dict[str, torch.nn.Module]) -> str | None:
    """``"<net>.<name>"`` of the first NaN/Inf floating-point parameter or buffer of ``nets``, or None (one sync)."""
    named = [(f"{m}.{n}", t) for m, net in nets.items()
             for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_floating_point()]
    ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
    return None if bool(ok.all()) else named[int((~ok).nonzero()[0])][0]


class StatsWindow:
    """``add(step, stats)`` every step; ``read(extra)`` at log time -> ({key: mean over the steps that had it, and
    the ``extra`` scalars}, rounded; ``bad``: None or (step, key, value) of the first non-finite loss)."""

    def __init__(self, device: torch.device):
        self.device, self.steps = device, []

    def add(self, step: int, stats: Stats) -> None:
        if stats:
            self.steps.append((step, stats))

    def read(self, extra: Stats) -> tuple[dict[str, float], tuple | None]:
        true = torch.ones((), dtype=torch.bool, device=self.device)
        # losses must be finite; a gradient norm is not where fp16's scaler skipped the step (mean over the others)
        ok = torch.stack([true] + [torch.stack([true] + [torch.isfinite(v) for k, v in s.items()
                                                         if not k.endswith("/gnorm")]).all() for _, s in self.steps])
        keys = sorted({k for _, s in self.steps for k in s})
        means = [torch.stack([s[k] for _, s in self.steps if k in s]) for k in keys]
        means = [torch.where(torch.isfinite(v), v, torch.nan).nanmean() for v in means]
        means += [torch.as_tensor(v).detach().float().reshape(()).to(self.device) for v in extra.values()]
        vals = torch.stack([ok.all().float()] + [v.float() for v in means]).tolist()     # the one host sync
        bad = None
        if not vals[0]:
            step, s = self.steps[int((~ok).nonzero()[0]) - 1]
            k = next(k for k, v in s.items() if not torch.isfinite(v) and not k.endswith("/gnorm"))
            bad = (step, k, s[k].item())
        self.steps = []
        return {k: round(v, 6) for k, v in zip(keys + list(extra), vals[1:])}, bad
