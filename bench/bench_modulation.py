"""Modulation family: bias_act (forward, backward, double backward), AdaIN and instance_norm + lrelu (forward,
backward) and the modulated 3x3 convolution with its epilogue, on each backend, eager PyTorch, torch.compile and the
floor.

    python bench/bench_modulation.py [--quick]

Workloads (issue 4 and shared/GPU.md; --quick shrinks them to a CPU smoke run, where only ref/eager/compile run):
- bias_act, x 32x512x32x32 (bias along dim 1): forward (lrelu), backward (lrelu: dx = dy * f'), double backward
  (swish: the d(x) pass ddx * dy * f''), fp32 and fp16. eager = StyleGAN2-ADA's reference (torch ops and autograd).
  Floor: forward reads x and writes y (2 elements), backward 3, double backward 4.
- AdaIN, x 32x512x32x32 fp32 and bf16: forward (GPU.md: eager 295 / 262 us, compile 49 / 27 us, floor 45 / 22 us)
  and backward (dx, dgamma, dbeta). Floor: forward 2 elements per element of x, backward 3.
- instance_norm + lrelu (no affine: pix2pix / CycleGAN's norm + activation), x 1x256x64x64 and 8x256x64x64 (CycleGAN's
  64x64 stage), fp16 and fp32: forward and backward (dx); eager = F.leaky_relu(F.instance_norm(x), 0.2). Floor:
  forward 2 elements per element of x (the kernels read x twice at 4096 pixels per plane: 3), backward 3.
- modulated 3x3 convolution, N=32, I=O=512, 32x32, demodulation + bias + lrelu + noise; fp16, bf16 and fp32 (TF32
  on): rows "plain conv" (cuDNN conv of the same shape alone: the target is <= 1.15x of it), "grouped" (StyleGAN2's
  per-sample weights in one grouped convolution), "split" (x * s, conv, then torch ops for d, bias, noise, act),
  torch.compile of the split way, and the backends. Floor: the convolution's FLOPs at the bf16 GEMM ceiling.
"""
from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench  # noqa: E402
from gankern.ops import modulation as m  # noqa: E402

FAMILY = "modulation"
N_INPUTS = 3


def _backends(device, kernels=("triton", "cuda")):
    """ref, and on a GPU the op's kernel backends."""
    return ("ref",) + (kernels if device.type == "cuda" else ())


def _forced(name, fn):
    def call(i):
        with gankern.use_backend(name):
            return fn(i)
    return call


def _grad_fn(make_out, n_inputs=N_INPUTS):
    """fn(i): the backward of the graph make_out(i) built once per input set (only the backward is timed)."""
    graphs = [make_out(i) for i in range(n_inputs)]

    def fn(i):
        out, ins, dout = graphs[i]
        return torch.autograd.grad(out, ins, dout, retain_graph=True)
    return fn


def bias_act_rows(device, quick):
    shape = (2, 8, 5, 5) if quick else (32, 512, 32, 32)
    rows = []
    for dtype in (torch.float32, torch.float16):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        xs = [torch.randn(shape, device=device, dtype=dtype) for _ in range(N_INPUTS)]
        dys = [torch.randn_like(x) for x in xs]
        b = torch.randn(shape[1], device=device, dtype=dtype)
        nbytes = xs[0].numel() * xs[0].element_size()
        compiled = torch.compile(m.bias_act_ref)

        fwd = {"eager": lambda i: m.bias_act_ref(xs[i], b, act="lrelu"),
               "torch.compile": lambda i: compiled(xs[i], b, act="lrelu")}
        fwd.update({name: _forced(name, lambda i: m.bias_act(xs[i], b, act="lrelu")) for name in _backends(device)})
        rows += _bench.measure(FAMILY, "bias_act fwd lrelu", shape, dtype, fwd, _bench.floor_ms(2 * nbytes),
                               N_INPUTS)

        def backward_of(fn, act, second):
            def make(i):
                x = xs[i].clone().requires_grad_(True)
                y = fn(x, b, act=act)
                if not second:
                    return y, x, dys[i]
                (gx,) = torch.autograd.grad(y, x, dys[i], create_graph=True)
                return gx, x, dys[i]
            return make

        for label, act, second, floor_elems in (("bwd lrelu", "lrelu", False, 3), ("double bwd swish", "swish",
                                                                                    True, 4)):
            fns = {"eager": _grad_fn(backward_of(m.bias_act_ref, act, second))}
            if not second:
                fns["torch.compile"] = _grad_fn(backward_of(compiled, act, second))
            for name in _backends(device):
                with gankern.use_backend(name):
                    fns[name] = _forced(name, _grad_fn(backward_of(m.bias_act, act, second)))
            rows += _bench.measure(FAMILY, f"bias_act {label}", shape, dtype, fns,
                                   _bench.floor_ms(floor_elems * nbytes), N_INPUTS)
    return rows


def _eager_adain(x, gamma, beta, eps=1e-5):
    return F.instance_norm(x, eps=eps) * gamma[:, :, None, None] + beta[:, :, None, None]


def adain_rows(device, quick):
    shape = (2, 8, 6, 6) if quick else (32, 512, 32, 32)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        xs = [torch.randn(shape, device=device, dtype=dtype) for _ in range(N_INPUTS)]
        gamma = torch.randn(shape[:2], device=device, dtype=dtype)
        beta = torch.randn(shape[:2], device=device, dtype=dtype)
        nbytes = xs[0].numel() * xs[0].element_size()
        compiled = torch.compile(_eager_adain)
        fwd = {"eager": lambda i: _eager_adain(xs[i], gamma, beta),
               "torch.compile": lambda i: compiled(xs[i], gamma, beta)}
        fwd.update({name: _forced(name, lambda i: m.adain(xs[i], gamma, beta))
                    for name in _backends(device, ("triton",))})
        rows += _bench.measure(FAMILY, "adain fwd", shape, dtype, fwd, _bench.floor_ms(2 * nbytes), N_INPUTS)

        def backward_of(fn):
            def make(i):
                x, g, b = (t.clone().requires_grad_(True) for t in (xs[i], gamma, beta))
                return fn(x, g, b), (x, g, b), torch.randn_like(xs[i])
            return make

        bwd = {"eager": _grad_fn(backward_of(_eager_adain)),
               "torch.compile": _grad_fn(backward_of(compiled))}
        for name in _backends(device, ("triton",)):
            with gankern.use_backend(name):
                bwd[name] = _forced(name, _grad_fn(backward_of(m.adain)))
        rows += _bench.measure(FAMILY, "adain bwd", shape, dtype, bwd, _bench.floor_ms(3 * nbytes), N_INPUTS)
    return rows


def _eager_instance_norm_lrelu(x):
    return F.leaky_relu(F.instance_norm(x), 0.2)


def instance_norm_rows(device, quick):
    """instance_norm + lrelu without affine (pix2pix / CycleGAN's norm + activation) at CycleGAN's 64x64 stage."""
    rows = []
    for shape in ([(1, 8, 6, 6)] if quick else [(1, 256, 64, 64), (8, 256, 64, 64)]):
        for dtype in (torch.float16, torch.float32):
            if device.type == "cpu" and dtype != torch.float32:
                continue
            xs = [torch.randn(shape, device=device, dtype=dtype) for _ in range(N_INPUTS)]
            nbytes = xs[0].numel() * xs[0].element_size()
            compiled = torch.compile(_eager_instance_norm_lrelu)
            fused = lambda x: m.instance_norm(x, act="lrelu")  # noqa: E731
            fwd = {"eager": lambda i: _eager_instance_norm_lrelu(xs[i]), "torch.compile": lambda i: compiled(xs[i])}
            fwd.update({name: _forced(name, lambda i: fused(xs[i])) for name in _backends(device, ("triton",))})
            rows += _bench.measure(FAMILY, "instance_norm+lrelu fwd", shape, dtype, fwd, _bench.floor_ms(2 * nbytes),
                                   N_INPUTS)

            def backward_of(fn):
                def make(i):
                    x = xs[i].clone().requires_grad_(True)
                    return fn(x), x, torch.randn_like(xs[i])
                return make

            bwd = {"eager": _grad_fn(backward_of(_eager_instance_norm_lrelu)),
                   "torch.compile": _grad_fn(backward_of(compiled))}
            for name in _backends(device, ("triton",)):
                with gankern.use_backend(name):
                    bwd[name] = _forced(name, _grad_fn(backward_of(fused)))
            rows += _bench.measure(FAMILY, "instance_norm+lrelu bwd", shape, dtype, bwd, _bench.floor_ms(3 * nbytes),
                                   N_INPUTS)
    return rows


def _split_modconv(x, weight, styles, bias, noise, strength):
    """The non-fused way: x * s, conv, then d, bias, noise and lrelu as separate torch ops."""
    y = F.conv2d(x * styles.to(x.dtype)[:, :, None, None], weight, padding=1)
    d = (styles.float().square() @ weight.float().square().sum([2, 3]).t() + 1e-8).rsqrt()
    y = y * d.to(y.dtype)[:, :, None, None] + bias[None, :, None, None] + noise * strength
    return F.leaky_relu(y, 0.2) * math.sqrt(2)


def modconv_rows(device, quick):
    N, I, O, R = (2, 16, 16, 8) if quick else (32, 512, 512, 32)
    rows = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        xs = [torch.randn(N, I, R, R, device=device, dtype=dtype) for _ in range(N_INPUTS)]
        weight = torch.randn(O, I, 3, 3, device=device, dtype=dtype)
        styles = torch.randn(N, I, device=device, dtype=dtype) + 1
        bias = torch.randn(O, device=device, dtype=dtype)
        noise = torch.randn(N, 1, R, R, device=device, dtype=dtype)
        strength = torch.tensor(0.1, device=device, dtype=dtype)
        kw = dict(padding=1, bias=bias, noise=noise, noise_strength=strength, act="lrelu")
        compiled = torch.compile(_split_modconv)
        fns = {"plain conv": lambda i: F.conv2d(xs[i], weight, padding=1),
               "eager": lambda i: _split_modconv(xs[i], weight, styles, bias, noise, strength),
               "torch.compile": lambda i: compiled(xs[i], weight, styles, bias, noise, strength),
               "grouped": lambda i: m.modulated_conv2d_ref(xs[i], weight, styles, **kw)}
        if device.type == "cuda":
            fns["triton"] = _forced("triton", lambda i: m.modulated_conv2d(xs[i], weight, styles, **kw))
        flops = 2 * N * O * I * 9 * R * R
        rows += _bench.measure(FAMILY, "modulated conv 3x3 demod+bias+lrelu+noise", (N, I, O, R, R), dtype, fns,
                               _bench.floor_ms(flops=flops), N_INPUTS)
    return rows


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    return (bias_act_rows(device, quick) + adain_rows(device, quick) + instance_norm_rows(device, quick) +
            modconv_rows(device, quick))


if __name__ == "__main__":
    _bench.main(FAMILY, run)
