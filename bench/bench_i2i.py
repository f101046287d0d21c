"""Image-to-image training steps (issue 14's speed rows) through their recipes (the code ``gankern train`` runs):
pix2pix (U-Net G, 70x70 PatchGAN, batch norm as the paper), pix2pixHD's global generator (9 blocks, 3 D scales,
feature matching) and CycleGAN (two 9-block ResNet Gs, two PatchGANs, instance norm), at 256 px, batch 1 and 8, RGB
pairs, the papers' widths (64); SinGAN at its finest scale of a 256 px image (batch 1: one image; its 3 critic and 3
generator steps, WGAN-GP). One "step" is every phase of the recipe with its repeats (D and G updates; CycleGAN's image
pool included); data loading is not timed. Backends: "gankern" (the fused kernels: instance norm + activation, the
penalty ops, ...) and "eager" (the ref twins). The floor: the FLOPs of the step (torch's FlopCounterMode over forward
and backward) at the bf16 ceiling, a loose lower bound; none for SinGAN (FlopCounterMode cannot follow the
gradient penalty's autograd.grad).

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
MODELS = {"pix2pix": {}, "pix2pixhd": {"n_labels": 3}, "cyclegan": {"n_blocks": 9}, "singan": {}}   # papers' 256 px
QUICK = {"pix2pixhd": {"num_D": 2, "d_layers": 1}}                                     # D scales that fit 32 px


class Step:
    """Every phase of ``recipe`` once on fixed pairs (2C = 6 channels), with its optimizers; no data loading."""

    def __init__(self, name, device, res, batch, width, quick):
        cls, single = RECIPES[name], name == "singan"
        o = cls.Options(**MODELS[name], **(QUICK.get(name, {}) if quick else {}))
        for k in ("width",) if single else ("ngf", "ndf"):
            setattr(o, k, width // 2 if single else width)              # SinGAN's nets: 32 channels at width 64
        torch.manual_seed(0)
        channels = 3 if single else 6                                  # one image, or (A, B) pairs
        n = RECIPES[name](o, Env(device, 0, 1, 0, channels, res, 1, 0)).n if single else 1000
        self.recipe = r = cls(o, Env(device, 0, 1, 0, channels, res, n, 0))
        for m in r.nets.values():
            m.to(device).train()
        self.opt = {k: spec.build(r.nets[k].parameters()) for k, spec in r.optimizers.items()}
        pairs = torch.rand(batch, channels, res, res, device=device) * 2 - 1
        if name == "pix2pixhd":                                  # A: label maps (pixel value = id / 255)
            pairs[:, :3] = torch.randint(0, 3, (batch, 1, res, res), device=device) / 255 * 2 - 1
        self.pairs, self.batch, self.device, self.calls = pairs, batch, device, 0
        for _ in range(n if single else 0):                      # SinGAN: one step a scale up to the finest
            self()

    def __call__(self, i=0):
        r = self.recipe
        for ph in r.phases:
            for k, m in r.nets.items():
                m.requires_grad_(k == ph.net)
            for _ in range(ph.repeats):
                self.opt[ph.net].zero_grad(set_to_none=True)
                batch = Batch(self.pairs, None, torch.zeros(self.batch, 1), None, self.calls)
                r.accumulate_gradients(ph.name, batch, 1.0)
                self.opt[ph.net].step()
                r.after_step(ph.name, self.calls)
        self.calls += 1

    def flops(self) -> int:
        with FlopCounterMode(display=False) as c:
            self()
        return c.get_total_flops()


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res, width, batches = (32, 8, (1, 2)) if quick else (256, 64, (1, 8))
    rows = []
    for name in MODELS:
        for batch in (1,) if name == "singan" else batches:
            step = Step(name, device, res, batch, width, quick)

            def on(backend, fn=step):
                def call(i):
                    with gankern.use_backend(backend):
                        return fn(i)
                return call
            fns = {"eager": on("ref"), "gankern": on(None)}
            floor = None if name == "singan" else _bench.floor_ms(flops=step.flops())
            got = _bench.measure(FAMILY, f"{name} step", f"{res}px, batch {batch}, width {width}", "fp32", fns, floor)
            for row in _bench.with_peak(got, fns):
                row["img_per_s"] = batch / row["ms"] * 1e3 if row["ms"] else None
            rows += got
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
