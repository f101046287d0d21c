"""Gradient penalties (shared/GPU.md, issue 6):

1. The R1 D step: a four-stage 64px conv D (3x3 conv, LeakyReLU(0.2), 3x3 conv, LeakyReLU(0.2), 2x2 avg-pool; 128,
   256, 512, 512 channels; linear head on 512x4x4), batch 64, non-saturating loss, R1 weight 5 on every step. Rows:
   the plain D step and the R1 step, each in eager PyTorch (torch autograd R1, conv bias + F.leaky_relu) and with
   gankern's ops (bias_act for bias + LeakyReLU with its fused 2nd-order gradients, r1_penalty) on the default
   backends and with every family forced to triton; TF32 fp32 and bf16 autocast; peak memory per row. Target:
   gankern R1 step <= 2.8x gankern plain step, and no slower than the eager R1 step. The floor column is the
   matmul FLOPs of the step at the bf16 ceiling (a loose bound: conv FLOPs of forward, backward and double
   backward).
2. WGAN-GP terms: interpolation x_hat = eps real + (1 - eps) fake, the penalty mean (||g|| - 1)^2 and its gradient
   dg, without D. Floor: 6 tensor passes (real, fake read, x_hat written; g read; g read, dg written).

    python bench/bench_penalty.py [--quick]
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
from gankern.ops.penalty import grad_norm_penalty, interpolate, r1_penalty  # noqa: E402

# The one switch: gankern's D uses the modulation family's fused bias_act when it is there, else torch ops.
try:
    from gankern.ops import bias_act
except ImportError:  # pragma: no cover - the modulation family is part of gankern
    bias_act = None

R1_GAMMA = 5.0


class R1Discriminator(nn.Module):
    """GPU.md's R1 D. x: (N, 3, res, res) -> (N, 1). ``fused``: bias + LeakyReLU through gankern.ops.bias_act."""

    def __init__(self, channels=(128, 256, 512, 512), res=64, fused=False):
        super().__init__()
        self.fused = fused and bias_act is not None
        convs, cin = [], 3
        for c in channels:
            convs += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 3, padding=1, bias=False)]
            cin = c
        self.convs = nn.ModuleList(convs)
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(conv.out_channels)) for conv in convs])
        self.head = nn.Linear(cin * (res >> len(channels)) ** 2, 1)

    def forward(self, x):
        for i, (conv, b) in enumerate(zip(self.convs, self.biases)):
            if self.fused:
                x = bias_act(conv(x), b, act="lrelu", alpha=0.2, gain=1.0)
            else:
                x = F.leaky_relu(F.conv2d(x, conv.weight, b, padding=1), 0.2)
            if i % 2 == 1:
                x = F.avg_pool2d(x, 2)
        return self.head(x.flatten(1))


def _torch_r1(d_out, x):
    (g,) = torch.autograd.grad(d_out.sum(), x, create_graph=True)
    return g.square().flatten(1).sum(1).mean()


def d_step(D, real, fake, r1, autocast_dtype):
    """One D step's forward + backward (no optimizer update): softplus losses, R1 on the reals when ``r1``."""
    D.zero_grad(set_to_none=True)
    x = real.detach().requires_grad_(r1 is not None)
    with torch.autocast(real.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out_real, out_fake = D(x), D(fake)
        loss = F.softplus(out_fake.float()).mean() + F.softplus(-out_real.float()).mean()
    if r1 is not None:
        loss = loss + R1_GAMMA / 2 * r1(out_real, x)
    loss.backward()
    return loss


def _conv_flops(channels, res, batch):
    """Multiply-adds x 2 of D's convs in one forward."""
    flops, cin, r = 0, 3, res
    for c in channels:
        flops += 2 * batch * r * r * 9 * (cin * c + c * c)
        cin, r = c, r // 2
    return flops






def r1_rows(device, quick):
    channels, res, batch = ((8, 16, 16, 16), 16, 4) if quick else ((128, 256, 512, 512), 64, 64)
    rows = []
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    for label, autocast in (("fp32-tf32", None), ("bf16-autocast", torch.bfloat16)):
        if device.type == "cpu" and autocast is not None:
            continue
        torch.manual_seed(0)
        eager_d = R1Discriminator(channels, res, fused=False).to(device)
        ours_d = R1Discriminator(channels, res, fused=True).to(device)
        ours_d.load_state_dict(eager_d.state_dict())
        reals = [torch.randn(batch, 3, res, res, device=device) for _ in range(3)]
        fakes = [torch.randn(batch, 3, res, res, device=device) for _ in range(3)]
        compiled_d = torch.compile(eager_d)

        def step(D, r1, backend=None):
            def fn(i):
                if backend is None:
                    return d_step(D, reals[i], fakes[i], r1, autocast)
                with gankern.use_backend(backend):
                    return d_step(D, reals[i], fakes[i], r1, autocast)
            return fn

        fns = {"eager": step(eager_d, _torch_r1),
               "eager plain step": step(eager_d, None),
               "torch.compile": step(compiled_d, _torch_r1),  # double backward: an error row if unsupported
               "gankern": step(ours_d, r1_penalty),
               "gankern plain step": step(ours_d, None),
               "ref": step(ours_d, r1_penalty, "ref")}
        if device.type == "cuda":
            fns["triton"] = step(ours_d, r1_penalty, "triton")
            fns["triton plain step"] = step(ours_d, None, "triton")
        # forward of D on real and fake, backward (2x), R1's double backward through D on the reals (about 2x
        # forward + 2x backward of one batch): about 3 + 3 + 4 forward-equivalents in all.
        floor = _bench.floor_ms(flops=10 * _conv_flops(channels, res, batch))
        shape = f"D {'-'.join(map(str, channels))} @ {res}px, batch {batch}, R1 gamma {R1_GAMMA:g}"
        rows += _bench.with_peak(_bench.measure("penalty", "r1-d-step", shape, label, fns, floor, n_inputs=3), fns)
    return rows


def _torch_gp_terms(real, fake, eps, g):
    e = eps.view(-1, 1, 1, 1)
    x_hat = e * real + (1 - e) * fake
    return x_hat, (g.flatten(1).norm(dim=1) - 1.0).square().mean()


def _ours_gp_terms(real, fake, eps, g):
    return interpolate(real, fake, eps), grad_norm_penalty(g, 1.0)


def gp_rows(device, quick):
    shapes = [(4, 3, 8, 8)] if quick else [(64, 3, 64, 64), (128, 3, 256, 256)]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        if device.type == "cpu" and dtype != torch.float32:
            continue
        for shape in shapes:
            sets = [[torch.randn(shape, device=device, dtype=dtype) for _ in range(3)]
                    + [torch.rand(shape[0], device=device, dtype=dtype)] for _ in range(3)]   # real, fake, g, eps
            for s in sets:
                s[2].requires_grad_(True)
            compiled = torch.compile(_torch_gp_terms)

            def terms(f, backend=None):
                def fn(i):
                    real, fake, g, eps = sets[i]
                    with gankern.use_backend(backend):
                        x_hat, pen = f(real, fake, eps, g)
                        return x_hat, torch.autograd.grad(pen, g)
                return fn

            fns = {"eager": terms(_torch_gp_terms), "torch.compile": terms(compiled), "gankern": terms(_ours_gp_terms),
                   "ref": terms(_ours_gp_terms, "ref")}
            if device.type == "cuda":
                fns["triton"] = terms(_ours_gp_terms, "triton")
            n = sets[0][0].numel() * sets[0][0].element_size()
            rows += _bench.measure("penalty", "wgan-gp-terms", shape, dtype, fns, _bench.floor_ms(bytes_moved=6 * n),
                                   n_inputs=3)
    return rows


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return r1_rows(device, quick) + gp_rows(device, quick)


if __name__ == "__main__":
    _bench.main("penalty", run)
