"""StyleGAN2 training step (issue 18's speed target): S2A's paper256 config (256 px, G and D of channel_base
16384, 8 mapping layers, fp16 in the 4 highest resolutions with conv_clamp 256, D's minibatch stddev group 8),
batch 64, ADA's bgc pipeline at p = 0.2 on everything D sees, style mixing 0.9, non-saturating loss, Adam
(betas (0, 0.99), eps 1e-8, corrected for lazy regularization), G_ema update. Data loading is not timed.

Workloads, each on gankern's default backends ("gankern": the fused kernels on a GPU) and on the ref backend
("eager": the eager PyTorch twins of every op, StyleGAN2-ADA's impl='ref' way):
- "step": G main phase (G -> augment -> D, softplus(-D), G update) and D main phase (fakes and reals, D update);
- "PL phase": path-length regularization on half the batch (every 4th step in S2A, weight 2);
- "R1 phase": R1 on augmented reals (every 16th step, gamma 1 for paper256);
- "step + R1 + PL": all four phases in one step (S2A's regularization steps);
- "step, amortized": step + PL / 4 + R1 / 16, computed from the rows above (S2A's average step).
Rows carry img_per_s (batch / time) and peak_mem_mb on a GPU. The floor: the matmul and convolution FLOPs of one
forward of G and of D (torch's FlopCounterMode) times the forward passes a workload makes (a backward ~ 2, a
gradient w.r.t. the input alone ~ 1, a double backward ~ 2), at the bf16 ceiling: a loose lower bound. The target
(>= 1.5x S2A's own loop, peak memory no higher) needs S2A's code next to this run and a GPU: not measured on a GPU.

    python bench/bench_stylegan2.py [--quick]      (--quick: 16 px, batch 4, <= 16 channels: a CPU smoke run)
"""
from __future__ import annotations

import copy
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gankern  # noqa: E402
from bench_penalty import _with_peak  # noqa: E402  (peak memory of a row's fn, on a GPU)
from gankern import _bench  # noqa: E402
from gankern.augment import augment_pipe  # noqa: E402
from gankern.models.stylegan2 import Discriminator, Generator, config_spec, network_kwargs  # noqa: E402
from gankern.ops import path_length_penalty, r1_penalty  # noqa: E402

FAMILY = "stylegan2"
G_REG, D_REG = 4, 16          # lazy regularization intervals
PL_WEIGHT, PL_SHRINK, MIX, AUG_P = 2.0, 2, 0.9, 0.2


class Trainer:
    """The networks, optimizers and phases of one S2A training step (no data loading)."""

    def __init__(self, device, quick):
        if quick:
            res, batch, spec = 16, 4, dict(gamma=1.0, lrate=0.0025, ema=20)
            G_kw = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=res, img_channels=3,
                        mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
            D_kw = dict(c_dim=0, img_resolution=res, img_channels=3, channel_base=128, channel_max=16,
                        epilogue_kwargs=dict(mbstd_group_size=4))
        else:
            res, spec = 256, config_spec("paper256", 256)
            batch = spec["mb"]
            G_kw, D_kw = network_kwargs("paper256", res)
        self.res, self.batch, self.gamma = res, batch, spec["gamma"]
        self.dtype = "fp32" if quick else "fp16 in the 4 highest resolutions, else fp32"
        sk = G_kw["synthesis_kwargs"]
        self.shape = (f"{'quick' if quick else 'paper256'} {res}px, batch {batch}, channel_base "
                      f"{sk['channel_base']}, fp16 res {sk.get('num_fp16_res', 0)}")
        torch.manual_seed(0)
        self.G = Generator(**G_kw).to(device).train()
        self.D = Discriminator(**D_kw).to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.aug = augment_pipe("bgc").to(device)
        self.aug.p.fill_(AUG_P)
        self.pl_mean = torch.zeros([], device=device)
        self.ema_beta = 0.5 ** (batch / (spec["ema"] * 1000))

        def adam(net, interval):  # S2A's lazy-regularization correction of lr and betas
            c = interval / (interval + 1)
            return torch.optim.Adam(net.parameters(), lr=spec["lrate"] * c, betas=(0.0, 0.99 ** c), eps=1e-8)
        self.G_opt, self.D_opt = adam(self.G, G_REG), adam(self.D, D_REG)
        self.device = device
        self.reals = [torch.randn(batch, 3, res, res, device=device).clamp(-1, 1) for _ in range(3)]

    def run_G(self, n):
        """Images and ws of n fresh latents, with style mixing (probability MIX, a random cut, no host sync)."""
        z = torch.randn(n, self.G.z_dim, device=self.device)
        ws = self.G.mapping(z, None)
        ws2 = self.G.mapping(torch.randn_like(z), None, skip_w_avg_update=True)
        num_ws = ws.shape[1]
        cut = torch.randint(1, num_ws, [], device=self.device)
        cut = torch.where(torch.rand([], device=self.device) < MIX, cut, torch.full_like(cut, num_ws))
        mixed = torch.arange(num_ws, device=self.device)[None, :, None] >= cut
        ws = torch.where(mixed, ws2, ws)
        return self.G.synthesis(ws), ws

    def _update(self, net, opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def g_main(self):
        img, _ = self.run_G(self.batch)
        self.D.requires_grad_(False)
        self._update(self.G, self.G_opt, F.softplus(-self.D(self.aug(img), None)).mean())
        self.D.requires_grad_(True)

    def g_reg(self):
        img, ws = self.run_G(self.batch // PL_SHRINK)
        pen, _ = path_length_penalty(img, ws, self.pl_mean)
        self._update(self.G, self.G_opt, pen * PL_WEIGHT * G_REG)

    def d_main(self, i):
        with torch.no_grad():
            fake, _ = self.run_G(self.batch)
        loss = F.softplus(self.D(self.aug(fake), None)).mean() + \
            F.softplus(-self.D(self.aug(self.reals[i]), None)).mean()
        self._update(self.D, self.D_opt, loss)

    def d_reg(self, i):
        x = self.reals[i].detach().requires_grad_(True)
        self._update(self.D, self.D_opt, r1_penalty(self.D(self.aug(x), None), x) * (self.gamma / 2) * D_REG)

    def ema(self):
        with torch.no_grad():
            for p, q in zip(self.G_ema.parameters(), self.G.parameters()):
                p.lerp_(q, 1 - self.ema_beta)

    def forward_flops(self) -> tuple[int, int]:
        """FLOPs of one forward of G and of D over the batch (matmuls and convolutions, torch's count)."""
        with torch.no_grad(), FlopCounterMode(display=False) as g:
            img, _ = self.run_G(self.batch)
        with torch.no_grad(), FlopCounterMode(display=False) as d:
            self.D(img, None)
        return g.get_total_flops(), d.get_total_flops()

    def step(self, i, reg=False):
        self.g_main()
        if reg:
            self.g_reg()
        self.d_main(i)
        if reg:
            self.d_reg(i)
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
                 "PL phase": (lambda i: tr.g_reg(), 2 * G_f),
                 "R1 phase": (tr.d_reg, 4 * D_f),
                 "step + R1 + PL": (lambda i: tr.step(i, reg=True), 6 * G_f + 12 * D_f)}
    rows, ms = [], {}
    for name, (fn, flops) in workloads.items():
        fns = {"eager": on("ref", fn), "gankern": on(None, fn)}
        got = _with_peak(_bench.measure(FAMILY, name, tr.shape, tr.dtype, fns, _bench.floor_ms(flops=flops),
                                        n_inputs=3), fns)
        for row in got:
            row["img_per_s"] = tr.batch / row["ms"] * 1e3 if row["ms"] and name.startswith("step") else None
            ms[(name, row["backend"])] = row["ms"]
        rows += got
    for backend in ("eager", "gankern"):  # S2A's average step: PL every 4th, R1 every 16th
        parts = [ms[("step", backend)], ms[("PL phase", backend)], ms[("R1 phase", backend)]]
        t = parts[0] + parts[1] / G_REG + parts[2] / D_REG if None not in parts else None
        env = {k: v for k, v in rows[0].items() if k != "error"}
        rows.append({**env, "workload": "step, amortized (PL / 4, R1 / 16)", "backend": backend, "ms": t,
                     "floor_ms": None, "vs_eager": None, "vs_compile": None, "vs_floor": None, "peak_mem_mb": None,
                     "img_per_s": tr.batch / t * 1e3 if t else None, "derived": True})
    eager_t = rows[-2]["ms"]
    rows[-1]["vs_eager"] = rows[-1]["ms"] / eager_t if rows[-1]["ms"] and eager_t else None
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
