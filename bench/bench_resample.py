"""Resample family: upfirdn2d 2x upsampling and 2x downsampling with a 4-tap separable filter ([1, 3, 3, 1]) on
each backend, eager PyTorch (StyleGAN2-ADA's reference: zero insertion, pad, two depthwise convolutions, slice),
torch.compile of it, and the floor (x read once, the output written once), forward and backward.

    python bench/bench_resample.py [--quick]

Workloads (issue 4; --quick shrinks them to a CPU smoke run, where only ref/eager/compile run):
x 32x512x64x64 fp16 (target <= 1.5x the floor) and fp32.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.ops import resample as r  # noqa: E402

FAMILY = "resample"
N_INPUTS = 3


def _forced(name, fn):
    def call(i):
        with gankern.use_backend(name):
            return fn(i)
    return call


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = (2, 8, 16, 16) if quick else (32, 512, 64, 64)
    backends = ("ref", "triton") if device.type == "cuda" else ("ref",)
    f = r.setup_filter([1, 3, 3, 1], device=device, separable=True)
    rows = []
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.float32):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        xs = [torch.randn(shape, device=device, dtype=dtype) for _ in range(N_INPUTS)]
        in_bytes = xs[0].numel() * xs[0].element_size()
        for label, helper, out_factor in (("up2", r.upsample2d, 4.0), ("down2", r.downsample2d, 0.25)):
            def eager(x, helper=helper):
                with gankern.use_backend("ref"):
                    return helper(x, f)
            compiled = torch.compile(eager)
            fns = {"eager": lambda i, e=eager: e(xs[i]), "torch.compile": lambda i, c=compiled: c(xs[i])}
            fns.update({name: _forced(name, lambda i, h=helper: h(xs[i], f)) for name in backends})
            floor = _bench.floor_ms((1 + out_factor) * in_bytes)
            rows += _bench.measure(FAMILY, f"upfirdn2d {label} fwd 4-tap separable", shape, dtype, fns, floor,
                                   N_INPUTS)

            def backward_of(fn):
                graphs = []
                for x in xs:
                    xr = x.clone().requires_grad_(True)
                    y = fn(xr)
                    graphs.append((y, xr, torch.randn_like(y)))
                return lambda i: torch.autograd.grad(graphs[i][0], graphs[i][1], graphs[i][2], retain_graph=True)

            bwd = {"eager": backward_of(eager), "torch.compile": backward_of(compiled)}
            for name in backends:
                with gankern.use_backend(name):
                    bwd[name] = _forced(name, backward_of(lambda x, h=helper: h(x, f)))
            rows += _bench.measure(FAMILY, f"upfirdn2d {label} bwd 4-tap separable", shape, dtype, bwd, floor,
                                   N_INPUTS)
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
