"""Augment family: ADA's bgc pipe (gankern.augment) at StyleGAN2-ADA's paper256 shapes on gankern's default
(fused) backend, on the eager reference (F.affine_grid + F.grid_sample, bmm + add, eager upfirdn2d) and
torch.compile of the reference, forward and forward + input gradient (what a D step on augmented images runs), with
peak memory; and the family's two ops alone at the shapes the pipe gives them.

    python bench/bench_augment.py [--quick]

Workloads (issue 18; --quick shrinks them to a CPU smoke run): images 64x3x256x256 fp32, p = 0.6 (every image
draws its own transform; the draws are seeded per input set, the same for every backend).
Floors: the pipe reads the images once and writes the output once (forward; + the incoming gradient read and the
input gradient written for the backward): what a pipe fused end to end would move. affine_grid_sample: the output
written and as many input bytes read (bilinear positions at about unit scale), + for the backward the incoming
gradient read and the input gradient written once; color_transform: read + write.
Estimated from the eager path's shapes at p = 0.6, batch 64 (not measured on a GPU): the 2x up-sampled padded image
is about 1200 x 1200 (1.1 GB fp32), the resampled one 524 x 524 (211 MB); F.affine_grid writes a (64, 524, 524, 3)
base grid and the (64, 524, 524, 2) grid (about 350 MB written + 210 MB read) that affine_grid_sample never builds,
and autograd keeps the grid and the 1.1 GB image for the backward where affine_grid_sample keeps theta.
"""
from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.augment import augment_pipe  # noqa: E402
from gankern.ops import augment as A  # noqa: E402

FAMILY = "augment"
N_INPUTS = 3
P = 0.6


def _forced(name, fn):
    def call(i):
        with gankern.use_backend(name):
            return fn(i)
    return call


def _backward_of(fn, xs):
    """i -> the forward of fn on a fresh leaf copy of xs[i] and the gradient w.r.t. it (random incoming gradient
    drawn once per input set)."""
    gs = {}

    def call(i):
        x = xs[i].detach().requires_grad_(True)
        y = fn(x, i)
        if i not in gs:
            gs[i] = torch.randn_like(y)
        return torch.autograd.grad(y, x, gs[i])
    return call


def _theta(N, device, gen):
    """Rotations by any angle with isotropic scales of 2^N(0, 0.2): the bgc pipe's typical transforms."""
    angle = (torch.rand(N, generator=gen) * 2 - 1) * math.pi
    s = torch.exp2(torch.randn(N, generator=gen) * 0.2)
    c, si = torch.cos(angle) / s, torch.sin(angle) / s
    t = torch.stack([torch.stack([c, -si, torch.zeros(N)], 1), torch.stack([si, c, torch.zeros(N)], 1)], 1)
    return t.to(device)


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    N, C, H, W = (4, 3, 32, 32) if quick else (64, 3, 256, 256)
    dtype = torch.float32
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(N, C, H, W, generator=gen).to(device) for _ in range(N_INPUTS)]
    img_bytes = xs[0].numel() * xs[0].element_size()
    pipe = augment_pipe("bgc").to(device)
    pipe.p.fill_(P)
    rows = []

    def piped(x, i):
        torch.manual_seed(i)  # the same draws on every backend
        return pipe(x)

    compiled = torch.compile(piped)
    fns = {"gankern": lambda i: piped(xs[i], i), "eager": _forced("ref", lambda i: piped(xs[i], i)),
           "torch.compile": _forced("ref", lambda i: compiled(xs[i], i))}
    shape = (N, C, H, W)
    with torch.no_grad():
        rows += _bench.with_peak(_bench.measure(FAMILY, f"ADA bgc pipe p={P} fwd", shape, dtype, fns,
                                                _bench.floor_ms(2 * img_bytes), N_INPUTS), fns)
    bwd = {"gankern": _backward_of(piped, xs), "eager": _forced("ref", _backward_of(piped, xs)),
           "torch.compile": _forced("ref", _backward_of(compiled, xs))}
    rows += _bench.with_peak(_bench.measure(FAMILY, f"ADA bgc pipe p={P} fwd+bwd (input gradient)", shape, dtype,
                                            bwd, _bench.floor_ms(4 * img_bytes), N_INPUTS), bwd)

    # the ops alone, at the shapes the pipe gives them (up-sampled padded image -> the sampled one, before the 2x
    # down-sampling; the color matrices on the images)
    Hu, Ho = (2 * 75, 2 * 38) if quick else (1200, 524)
    ups = [torch.randn(N, C, Hu, Hu, generator=gen).to(device) for _ in range(N_INPUTS)]
    thetas = [_theta(N, device, gen) for _ in range(N_INPUTS)]
    out_bytes = N * C * Ho * Ho * 4

    def sample(x, i):
        return A.affine_grid_sample(x, thetas[i], (Ho, Ho))

    c_sample = torch.compile(A.affine_grid_sample_ref)
    fns = {"triton": _forced("triton", lambda i: sample(ups[i], i)),
           "eager": _forced("ref", lambda i: sample(ups[i], i)),
           "torch.compile": lambda i: c_sample(ups[i], thetas[i], (Ho, Ho))}
    if device.type == "cpu":
        del fns["triton"]
    up_shape = (N, C, Hu, Hu)
    in_bytes = N * C * Hu * Hu * 4
    rows += _bench.measure(FAMILY, f"affine_grid_sample fwd -> {Ho}x{Ho}", up_shape, dtype, fns,
                           _bench.floor_ms(2 * out_bytes), N_INPUTS)
    bwd = {"triton": _forced("triton", _backward_of(sample, ups)), "eager": _forced("ref", _backward_of(sample, ups)),
           "torch.compile": _backward_of(lambda x, i: c_sample(x, thetas[i], (Ho, Ho)), ups)}
    if device.type == "cpu":
        del bwd["triton"]
    rows += _bench.with_peak(_bench.measure(FAMILY, f"affine_grid_sample fwd+bwd -> {Ho}x{Ho}", up_shape, dtype,
                                            bwd, _bench.floor_ms(3 * out_bytes + in_bytes),
                                            N_INPUTS), bwd)

    Ms = [torch.randn(N, 4, 4, generator=gen).to(device) for _ in range(N_INPUTS)]
    c_color = torch.compile(A.color_transform_ref)
    fns = {"triton": _forced("triton", lambda i: A.color_transform(xs[i], Ms[i])),
           "eager": _forced("ref", lambda i: A.color_transform(xs[i], Ms[i])),
           "torch.compile": lambda i: c_color(xs[i], Ms[i])}
    if device.type == "cpu":
        del fns["triton"]
    rows += _bench.measure(FAMILY, "color_transform fwd", shape, dtype, fns, _bench.floor_ms(2 * img_bytes),
                           N_INPUTS)
    return rows


if __name__ == "__main__":
    _bench.main(FAMILY, run)
