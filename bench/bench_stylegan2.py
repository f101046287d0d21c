"""StyleGAN2 training step (issue 18's speed target) through the stylegan2 recipe (the code that gankern train
runs): S2A's paper256 config (256 px, G and D of channel_base 16384, 8 mapping layers, fp16 in the 4 highest resolutions with conv_clamp 256, D's minibatch stddev group 8),
batch 64, ADA's bgc pipeline at p = 0.2 on everything D sees, style mixing 0.9, non-saturating loss, Adam
(betas (0, 0.99), eps 1e-8, corrected for lazy regularization), G_ema update. Data loading is not timed.

Workloads, each on gankern's default backends ("gankern": the fused kernels on a GPU) and on the ref backend
("eager": the eager PyTorch twins of every op, StyleGAN2-ADA's impl='ref' way):
- "step": G main phase (G -> augment -> D, softplus(-D), G update) and D main phase (fakes and reals, D update);
- "PL phase": path-length regularization on half the batch (every 4th step in S2A, weight 2);
- "R1 phase": R1 on augmented reals (every 16th step, gamma 1 for paper256);
- "step + R1 + PL": all four phases in one step (S2A's regularization steps);
- "step, amortized": step + PL / 4 + R1 / 16, computed from the rows above (S2A's average step).
Rows carry img_per_s (batch / time) and peak_mb on a GPU. The floor: the matmul and convolution FLOPs of one
forward of G and of D (torch's FlopCounterMode) times the forward passes a workload makes (a backward ~ 2, a
gradient w.r.t. the input alone ~ 1, a double backward ~ 2), at the bf16 ceiling: a loose lower bound. The target
(>= 1.5x S2A's own loop, peak memory no higher) needs S2A's code next to this run and a GPU: not measured on a GPU.

    python bench/bench_stylegan2.py [--quick]      (--quick: 16 px, batch 4, <= 32 channels: a CPU smoke run)
"""
from __future__ import annotations

import copy
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.train.recipes.base import Batch, Env  # noqa: E402
from gankern.train.recipes.stylegan2 import StyleGAN2Options, StyleGAN2Recipe  # noqa: E402

FAMILY = "stylegan2"


class Trainer:
    """One S2A training step through the stylegan2 recipe (the code ``gankern train --config stylegan2`` runs):
    its phases, optimizers (OptSpec.build: lazy-regularization corrected) and a G_ema update; no data loading."""

    def __init__(self, device, quick):
        res, batch = (16, 4) if quick else (256, 64)
        o = StyleGAN2Options(cfg="tiny" if quick else "paper256", aug="fixed", p=0.2)
        if quick:
            o.fmaps = 1 / 256                                           # channel_base 128: 8 to 32 channels
        torch.manual_seed(0)
        self.recipe = r = StyleGAN2Recipe(o, Env(device, 0, 1, 0, 3, res, 1, 0))
        self.G, self.D = (r.nets[k].to(device).train() for k in ("G", "D"))
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt = {k: spec.build(r.nets[k].parameters()) for k, spec in r.optimizers.items()}
        self.phase = {p.name: p for p in r.phases}
        self.res, self.batch, self.device = res, batch, device
        self.ema_beta = 0.5 ** (batch / (r.spec["ema"] * 1000))
        sk = self.G.init_kwargs["synthesis_kwargs"]
        self.shape = (f"{'quick' if quick else 'paper256'} {res}px, batch {batch}, channel_base "
                      f"{sk['channel_base']}, fp16 res {sk['num_fp16_res'] if device.type == 'cuda' else 0}")
        self.dtype = "fp16 in the 4 highest resolutions, else fp32" if device.type == "cuda" and not quick else "fp32"
        self.reals = [torch.randn(batch, 3, res, res, device=device).clamp(-1, 1) for _ in range(3)]
        self.calls = 0

    def run_phase(self, name, i):
        """One optimizer step of phase ``name`` on real batch i, as the trainer runs it (one accumulation round)."""
        ph, r = self.phase[name], self.recipe
        for k, m in r.nets.items():
            m.requires_grad_(k == ph.net)
        self.calls += 1
        batch = Batch(self.reals[i], None, torch.randn(self.batch, r.z_dim, device=self.device), None, self.calls)
        self.opt[ph.net].zero_grad(set_to_none=True)
        r.accumulate_gradients(name, batch, ph.interval)
        self.opt[ph.net].step()

    def ema(self):
        with torch.no_grad():
            for p, q in zip(self.G_ema.parameters(), self.G.parameters()):
                p.lerp_(q, 1 - self.ema_beta)

    def forward_flops(self) -> tuple[int, int]:
        """FLOPs of one forward of G and of D over the batch (matmuls and convolutions, torch's count)."""
        z = torch.randn(self.batch, self.recipe.z_dim, device=self.device)
        with torch.no_grad(), FlopCounterMode(display=False) as g:
            img = self.recipe.run_G(z, None)
        with torch.no_grad(), FlopCounterMode(display=False) as d:
            self.recipe.run_D(img, None)
        return g.get_total_flops(), d.get_total_flops()

    def step(self, i, reg=False):
        for name in ("G", "Greg", "D", "Dreg") if reg else ("G", "D"):
            self.run_phase(name, i)
        self.ema()


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    tr = Trainer(device, quick)

    def on(backend, fn):
        def call(i):
            with gankern.use_backend(backend):
                return fn(i)
        return call

    G_f, D_f = tr.forward_flops()
    # (fn, floor FLOPs in forward passes of G and D over the batch: a backward ~ 2 forwards, a gradient w.r.t. the
    # input alone ~ 1, a double backward ~ 2)
    workloads = {"step": (lambda i: tr.step(i), 4 * G_f + 8 * D_f),
                 "PL phase": (lambda i: tr.run_phase("Greg", i), 2 * G_f),
                 "R1 phase": (lambda i: tr.run_phase("Dreg", i), 4 * D_f),
                 "step + R1 + PL": (lambda i: tr.step(i, reg=True), 6 * G_f + 12 * D_f)}
    rows, ms = [], {}
    for name, (fn, flops) in workloads.items():
        fns = {"eager": on("ref", fn), "gankern": on(None, fn)}
        got = _bench.with_peak(_bench.measure(FAMILY, name, tr.shape, tr.dtype, fns, _bench.floor_ms(flops=flops),
                                        n_inputs=3), fns)
        for row in got:
            row["img_per_s"] = tr.batch / row["ms"] * 1e3 if row["ms"] and name.startswith("step") else None
            ms[(name, row["backend"])] = row["ms"]
        rows += got
    for backend in ("eager", "gankern"):  # S2A's average step: PL every 4th, R1 every 16th
        parts = [ms[("step", backend)], ms[("PL phase", backend)], ms[("R1 phase", backend)]]
        t = parts[0] + parts[1] / tr.phase["Greg"].interval + parts[2] / tr.phase["Dreg"].interval \
            if None not in parts else None
        env = {k: v for k, v in rows[0].items() if k != "error"}
        rows.append({**env, "workload": "step, amortized (PL / 4, R1 / 16)", "backend": backend, "ms": t,
                     "floor_ms": None, "vs_eager": None, "vs_compile": None, "vs_floor": None, "peak_mb": None,
                     "img_per_s": tr.batch / t * 1e3 if t else None, "derived": True})
    eager_t = rows[-2]["ms"]
    rows[-1]["vs_eager"] = rows[-1]["ms"] / eager_t if rows[-1]["ms"] and eager_t else None
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
