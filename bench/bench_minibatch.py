"""Minibatch family: minibatch discrimination (the pair sums on M = f @ T, forward and forward + backward) and
minibatch stddev (forward and forward + backward), on each backend, eager PyTorch, torch.compile and the floor.

    python bench/bench_minibatch.py [--quick]

Workloads (issue 5 and shared/GPU.md; --quick shrinks them to a CPU smoke run):
- discrimination N=256, B=128, C=16 (A=1024: the f @ T matmul is torch's and is not timed), fp32 and bf16.
  eager = Salimans et al.'s formula materializing (N, N, B, C) (GPU.md: 1652 us fwd), torch.compile of it (119 us).
  Rows "<backend> kernel" time the bare kernel launch, without the custom-op dispatch (~10 us per call in eager).
  Floor: 2 FLOPs per (i, j, b, c) forward (difference, abs-add) and 5 more backward (the difference again, sign,
  multiply-add), fp32 on the CUDA cores at the H100 SXM datasheet rate (67 TFLOP/s; not measured in GPU.md).
- discrimination N=4096, B=128, C=16 fp32, forward + backward: the kernels and the row-chunked ref only (eager
  would materialize 34G elements); rows carry ``peak_mb``, the peak memory of one call (O(N * B * C) expected).
- stddev 64x512x4x4, group 4, fp32 and bf16 (GPU.md: eager 143 us fwd); eager = StyleGAN2-ADA's layer.
  Floor: x read and the output written once (forward); x and dout read, dx written (backward).
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.ops import minibatch as mb  # noqa: E402

H100_FP32_FLOPS = 67e12  # FP32 CUDA-core peak (datasheet); the pair loop does not use tensor cores
N_INPUTS = 3


def eager_discrimination(M):
    """Salimans et al.'s formula on M (N, B, C), materializing every pair."""
    e = torch.exp(-(M[:, None] - M[None]).abs().sum(-1))  # [N, N, B, C] then [N, N, B]
    return e.sum(1) - torch.diagonal(e, 0, 0, 1).T


def eager_stddev(x, group_size=4, num_channels=1):
    """StyleGAN2-ADA's MinibatchStdLayer."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    y = x.reshape(G, -1, num_channels, C // num_channels, H, W)
    y = (y - y.mean(0)).square().mean(0)
    y = (y + 1e-8).sqrt().mean([2, 3, 4]).reshape(-1, num_channels, 1, 1).repeat(G, 1, H, W)
    return torch.cat([x, y], 1)


def _kernel_backends(device):
    return ("triton", "cuda") if device.type == "cuda" else ()


def _with_backward(fn, inputs, grads):
    """fn(i) -> forward on inputs[i] then backward with grads[i]."""
    def run(i):
        x = inputs[i].detach().requires_grad_(True)
        return torch.autograd.grad(fn(x), x, grads[i])
    return run


def _forced(name, fn):
    def run(x):
        with gankern.use_backend(name):
            return fn(x)
    return run




def bench_discrimination(N, B, C, dtype, device, with_eager=True, peak=False) -> list[dict]:
    torch.manual_seed(0)
    Ms = [(torch.randn(N, B, C, device=device) * 0.1).to(dtype) for _ in range(N_INPUTS)]
    gs = [torch.randn(N, B, device=device).to(dtype) for _ in range(N_INPUTS)]
    names = ("ref",) + _kernel_backends(device)
    flops_fwd = 2.0 * N * N * B * C
    rows = []
    for phase, flops in (("fwd", flops_fwd), ("fwd+bwd", flops_fwd * 7 / 2)):
        fns = {}
        if with_eager:
            compiled = torch.compile(eager_discrimination)
            fns["eager"] = eager_discrimination
            fns["torch.compile"] = compiled
        for name in names:
            fns[name] = _forced(name, mb.minibatch_discrimination_pairs)
        if phase == "fwd":
            fns = {k: (lambda f: lambda i: f(Ms[i]))(f) for k, f in fns.items()}
            for name in _kernel_backends(device):
                fns[f"{name} kernel"] = (lambda n: lambda i: mb._disc_kernels(n, Ms[i], None))(name)
        else:
            fns = {k: _with_backward(f, Ms, gs) for k, f in fns.items()}
            for name in _kernel_backends(device):
                fns[f"{name} kernel"] = (lambda n: lambda i: (mb._disc_kernels(n, Ms[i], None),
                                                               mb._disc_kernels(n, Ms[i], gs[i])))(name)
        r = _bench.measure("minibatch", f"discrimination {phase} N={N} B={B} C={C}", (N, B, C), dtype, fns,
                           _bench.floor_ms(flops=flops, flop_rate=H100_FP32_FLOPS), n_inputs=N_INPUTS)
        rows += _bench.with_peak(r, fns) if peak else r
    return rows


def bench_stddev(shape, dtype, device) -> list[dict]:
    torch.manual_seed(0)
    N, C, H, W = shape
    xs = [torch.randn(shape, device=device).to(dtype) for _ in range(N_INPUTS)]
    gos = [torch.randn(N, C + 1, H, W, device=device).to(dtype) for _ in range(N_INPUTS)]
    names = ("ref",) + _kernel_backends(device)
    esize = xs[0].element_size()
    rows = []
    for phase in ("fwd", "fwd+bwd"):
        fns = {"eager": eager_stddev, "torch.compile": torch.compile(eager_stddev)}
        fns.update({name: _forced(name, mb.minibatch_stddev) for name in names})
        if phase == "fwd":
            fns = {k: (lambda f: lambda i: f(xs[i]))(f) for k, f in fns.items()}
            nbytes = (N * C * H * W + N * (C + 1) * H * W) * esize
        else:
            fns = {k: _with_backward(f, xs, gos) for k, f in fns.items()}
            nbytes = (N * C * H * W + N * (C + 1) * H * W) * esize + (2 * N * C * H * W + N * (C + 1) * H * W) * esize
        rows += _bench.measure("minibatch", f"stddev {phase} {N}x{C}x{H}x{W} group 4", shape, dtype, fns,
                               _bench.floor_ms(bytes_moved=nbytes), n_inputs=N_INPUTS)
    return rows


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    rows = []
    for dtype in dtypes:
        rows += bench_discrimination(*((24, 5, 4) if quick else (256, 128, 16)), dtype, device)
    rows += bench_discrimination(*((64, 5, 4) if quick else (4096, 128, 16)), torch.float32, device,
                                 with_eager=False, peak=True)
    for dtype in dtypes:
        rows += bench_stddev((8, 16, 4, 4) if quick else (64, 512, 4, 4), dtype, device)
    return rows


if __name__ == "__main__":
    _bench.main("minibatch", run)
