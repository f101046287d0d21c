"""Spectral norm of every layer of BigGAN-128 (ch = 96, 57 weights, 160.5M parameters; shared/GPU.md): one power
iteration + W / sigma for all layers per step, on each backend, torch's parametrization (eager), torch.compile of
the same math, and the floor (every weight read twice and W / sigma written once).

    python bench/bench_spectral_norm.py [--quick]
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.ops.spectral_norm import as_matrix, spectral_normalize_all  # noqa: E402


def biggan128_shapes(ch: int = 96) -> list[tuple[int, ...]]:
    """The 57 spectral-normalized weight shapes of BigGAN-128 (D: 6 blocks + head + projection; G: 5 blocks with
    conditional-BN linears, input linear, output conv)."""
    d = [(3, ch), (ch, 2 * ch), (2 * ch, 4 * ch), (4 * ch, 8 * ch), (8 * ch, 16 * ch), (16 * ch, 16 * ch)]
    g = [(16 * ch, 16 * ch), (16 * ch, 8 * ch), (8 * ch, 4 * ch), (4 * ch, 2 * ch), (2 * ch, ch)]
    shapes = []
    for i, o in d:
        shapes += [(o, i, 3, 3), (o, o, 3, 3), (o, i, 1, 1)]
    shapes += [(1, 16 * ch), (16 * ch, 1000)]
    for i, o in g:
        shapes += [(o, i, 3, 3), (o, o, 3, 3), (o, i, 1, 1), (i, 148), (i, 148), (o, 148), (o, 148)]
    shapes += [(4 * 4 * 16 * ch, 20), (3, ch, 3, 3)]
    return shapes


def _torch_math(weights, us, vs):
    """torch's parametrization math for all layers (what torch.compile gets)."""
    out = []
    with torch.no_grad():
        for w, u, v in zip(weights, us, vs):
            wm = as_matrix(w, 0)
            u.copy_(F.normalize(torch.mv(wm, v), dim=0, eps=1e-12))
            v.copy_(F.normalize(torch.mv(wm.t(), u), dim=0, eps=1e-12))
    for w, u, v in zip(weights, us, vs):
        out.append(w / torch.vdot(u, torch.mv(as_matrix(w, 0), v)))
    return out


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ch = 4 if quick else 96
    shapes = biggan128_shapes(ch)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        torch.manual_seed(0)
        weights = [torch.randn(s, device=device, dtype=dtype) for s in shapes]
        us = [F.normalize(torch.randn(s[0], device=device), dim=0).to(dtype) for s in shapes]
        vs = [F.normalize(torch.randn(w.numel() // s[0], device=device), dim=0).to(dtype)
              for w, s in zip(weights, shapes)]
        torch_sns = [torch.nn.utils.parametrizations._SpectralNorm(w, 1, 0, 1e-12) for w in weights]
        compiled = torch.compile(_torch_math)

        def ours(name):
            def fn(_):
                with gankern.use_backend(name):
                    return spectral_normalize_all(weights, us, vs, 1)
            return fn

        fns = {"eager": lambda _: [sn(w) for sn, w in zip(torch_sns, weights)],
               "torch.compile": lambda _: compiled(weights, us, vs),
               "ref": ours("ref")}
        if device.type == "cuda":
            fns["triton"] = ours("triton")
            fns["cuda"] = ours("cuda")
        nbytes = sum(w.numel() for w in weights) * weights[0].element_size()
        rows += _bench.measure("spectral_norm", f"biggan128-ch{ch}-57-layers-1-iter", f"{len(shapes)} layers, "
                               f"{sum(w.numel() for w in weights) / 1e6:.1f}M weights", dtype, fns,
                               _bench.floor_ms(bytes_moved=3 * nbytes))
    return rows


if __name__ == "__main__":
    _bench.main("spectral_norm", run)
