"""San family: SAN's normalization constants (gankern/ops/san.py) on each backend, against the eager FFT path of
the authors' code (zero-pad every kernel to the input size, fft2, largest magnitude), its torch.compile and the
floor.

    python bench/bench_san.py [--quick]

Workloads (--quick shrinks them to a CPU smoke run):
- one 512 x 512 3 x 3 layer at a 64 x 64 input, fp32: the eager path materializes the (512, 512, 64, 64)
  spectrum, 8.6 GB of complex64 (rows carry ``peak_mb``, the peak memory of one call on a GPU); the kernel keeps
  none of it.
- every Conv2d / Linear of an SNGAN-ResNet discriminator at 32 x 32 (gankern.models, d_ch 128): the kernel serves all
  layers in one launch (plus one that reduces each layer's items), eager runs one FFT per layer.
Floor: 4 FLOPs per (kernel pair, frequency of the half plane, tap) on the fp32 CUDA cores at the H100 SXM
datasheet rate (67 TFLOP/s); the weights' bytes are negligible. Speed: not measured on a GPU yet.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.models import ModelConfig, build  # noqa: E402
from gankern.ops import san  # noqa: E402

H100_FP32_FLOPS = 67e12
N_INPUTS = 2


def eager_constant(w, size):
    """The authors' computation (with the complex magnitude): w (O, I, kh, kw) zero-padded to size, fft2, max."""
    H, W = size
    return torch.fft.fft2(F.pad(w, (0, W - w.shape[-1], 0, H - w.shape[-2]))).abs().amax()


def eager_constants(weights, sizes):
    return torch.stack([eager_constant(w, s) if w.ndim == 4 else w.abs().amax() for w, s in zip(weights, sizes)])


def _kernel_backends(device):
    return ("triton",) if device.type == "cuda" else ()




def _flops(weights, sizes) -> float:
    total = 0.0
    for w, (H, W) in zip(weights, sizes):
        kk = w.shape[2] * w.shape[3] if w.ndim == 4 else 1
        total += 4.0 * w.shape[0] * w.shape[1] * H * (W // 2 + 1) * kk
    return total


def _measure(workload, shape, sets, device, peak):
    """sets: N_INPUTS lists of (weights, sizes); rows for eager, torch.compile, ref and the kernels."""
    compiled = torch.compile(eager_constants)
    fns = {"eager": lambda i: eager_constants(*sets[i]), "torch.compile": lambda i: compiled(*sets[i])}
    for name in ("ref",) + _kernel_backends(device):
        def run(i, name=name):
            with gankern.use_backend(name):
                return san.san_constants(*sets[i])
        fns[name] = run
    weights, sizes = sets[0]
    rows = _bench.measure("san", workload, shape, torch.float32, fns,
                          _bench.floor_ms(flops=_flops(weights, sizes), flop_rate=H100_FP32_FLOPS),
                          n_inputs=N_INPUTS)
    return _bench.with_peak(rows, fns) if peak else rows


def bench_layer(O, I, k, size, device) -> list[dict]:
    torch.manual_seed(0)
    sets = [([torch.randn(O, I, k, k, device=device) * 0.05], [size]) for _ in range(N_INPUTS)]
    return _measure(f"one layer {O}x{I}x{k}x{k} at {size[0]}x{size[1]}", (O, I, k, k), sets, device, peak=True)


def model_layers(resolution: int, d_ch: int, device) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Every Conv2d / Linear weight of an SNGAN-ResNet D and the input size of each (recorded by hooks)."""
    torch.manual_seed(0)
    _, D = build(ModelConfig(arch="resnet", d_ch=d_ch, d_norm="none"), resolution, 3)
    D = D.to(device)
    found: dict[nn.Module, tuple[int, int]] = {}

    def record(m, args):
        found.setdefault(m, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        D(torch.randn(1, 3, resolution, resolution, device=device))
    for h in hooks:
        h.remove()
    return [m.weight.detach() for m in found], [s if isinstance(m, nn.Conv2d) else (1, 1) for m, s in found.items()]


def bench_model(resolution, d_ch, device) -> list[dict]:
    weights, sizes = model_layers(resolution, d_ch, device)
    sets = [([w + 0.01 * i for w in weights], sizes) for i in range(N_INPUTS)]
    return _measure(f"SNGAN-ResNet D {resolution}px d_ch={d_ch}: {len(weights)} layers in one launch",
                    f"{len(weights)} layers", sets, device, peak=False)


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = bench_layer(*((16, 8, 3, (8, 8)) if quick else (512, 512, 3, (64, 64))), device)
    rows += bench_model(*((16, 8) if quick else (32, 128)), device)
    return rows


if __name__ == "__main__":
    _bench.main("san", run)
