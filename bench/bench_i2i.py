"""Image-to-image training steps (issue 14's speed rows) through their recipes (the code ``gankern train`` runs):
pix2pix (U-Net G, 70x70 PatchGAN, batch norm as the paper), pix2pixHD's global generator (9 blocks, 3 D scales,
feature matching) and CycleGAN (two 9-block ResNet Gs, two PatchGANs, instance norm), at 256 px, batch 1 and 8, RGB
pairs, the papers' widths (64). One "step" is every phase of the recipe once (D and G updates; CycleGAN's image pool
included); data loading is not timed. Backends: "gankern" (the fused kernels: instance norm + activation, ...) and
"eager" (the ref twins). The floor: the FLOPs of the step (torch's FlopCounterMode over forward and backward) at the
bf16 ceiling, a loose lower bound. Not in it yet: SinGAN (its step depends on the scale being trained).

    python bench/bench_i2i.py [--quick]      (--quick: 32 px, widths 8, batch 1 and 2: a CPU smoke run)
"""
from __future__ import annotations

import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.train.recipes import RECIPES  # noqa: E402
from gankern.train.recipes.base import Batch, Env  # noqa: E402

FAMILY = "i2i"
MODELS = {"pix2pix": {}, "pix2pixhd": {"n_labels": 3}, "cyclegan": {"n_blocks": 9}}   # the papers' 256 px settings
QUICK = {"pix2pixhd": {"num_D": 2, "d_layers": 1}}                                     # D scales that fit 32 px


class Step:
    """Every phase of ``recipe`` once on fixed pairs (2C = 6 channels), with its optimizers; no data loading."""

    def __init__(self, name, device, res, batch, width, quick):
        cls = RECIPES[name]
        o = cls.Options(**MODELS[name], **(QUICK.get(name, {}) if quick else {}))
        for k in ("ngf", "ndf"):
            setattr(o, k, width)
        torch.manual_seed(0)
        self.recipe = r = cls(o, Env(device, 0, 1, 0, 6, res, 1000, 0))
        for m in r.nets.values():
            m.to(device).train()
        self.opt = {k: spec.build(r.nets[k].parameters()) for k, spec in r.optimizers.items()}
        pairs = torch.rand(batch, 6, res, res, device=device) * 2 - 1
        if name == "pix2pixhd":                                  # A: label maps (pixel value = id / 255)
            pairs[:, :3] = torch.randint(0, 3, (batch, 1, res, res), device=device) / 255 * 2 - 1
        self.pairs, self.batch, self.device, self.calls = pairs, batch, device, 0

    def __call__(self, i=0):
        r = self.recipe
        for ph in r.phases:
            for k, m in r.nets.items():
                m.requires_grad_(k == ph.net)
            self.calls += 1
            self.opt[ph.net].zero_grad(set_to_none=True)
            r.accumulate_gradients(ph.name, Batch(self.pairs, None, torch.zeros(self.batch, 1), None, self.calls), 1.0)
            self.opt[ph.net].step()
            r.after_step(ph.name, self.calls)

    def flops(self) -> int:
        with FlopCounterMode(display=False) as c:
            self()
        return c.get_total_flops()


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res, width, batches = (32, 8, (1, 2)) if quick else (256, 64, (1, 8))
    rows = []
    for name in MODELS:
        for batch in batches:
            step = Step(name, device, res, batch, width, quick)

            def on(backend, fn=step):
                def call(i):
                    with gankern.use_backend(backend):
                        return fn(i)
                return call
            fns = {"eager": on("ref"), "gankern": on(None)}
            got = _bench.measure(FAMILY, f"{name} step", f"{res}px, batch {batch}, width {width}", "fp32", fns,
                                 _bench.floor_ms(flops=step.flops()))
            for row in _bench.with_peak(got, fns):
                row["img_per_s"] = batch / row["ms"] * 1e3 if row["ms"] else None
            rows += got
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
