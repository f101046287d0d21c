"""Benchmark of the FID family: Tr sqrtm(S1 S2), streaming covariance, KID.

    python bench/bench_fid.py [--quick] [--out PATH] [--no-write]   # GPU rows (DESIGN.md's JSON format)
    python bench/bench_fid.py --vs-scipy [--dim 2048]                # one timing of each method vs scipy, CPU

Workloads (full size; --quick shrinks them for a smoke run on the CPU):
- trace_sqrt_product on covariances of 1000 samples of 2048 features (singular), error against the exact value.
- trace_sqrt_product on GPU.md's covariances: S_i = Q_i diag(logspace(1, -6, 2048)) Q_i^T, Q_i from the QR of a
  float64 Gaussian (torch.manual_seed(1), (2)); every method, the cached-reference-factor variant, torchmetrics'
  eigvals(S1 @ S2) route as "eager"; each row carries its relative error against scipy.linalg.sqrtm's value
  (480.324656339457, GPU.md). Floor: one 2048^3 float64 GEMM at the H100's FP64 tensor-core rate.
- FeatureStats.update over 50k x 2048 float32 features in chunks of 5000, vs one float64 torch GEMM of all the
  centered features (GPU.md: 9.9 ms on the H100) as "eager". Floor: 2 n d^2 FLOPs at the FP64 rate.
- KID, 50k x 2048 float32 features each side, 100 subsets of 1000: triton vs the eager ref.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gankern import _bench  # noqa: E402
from gankern.metrics import FeatureStats  # noqa: E402
from gankern.metrics import scores  # noqa: E402
from gankern.ops import fid  # noqa: E402

H100_FP64_FLOPS = 67e12   # FP64 tensor-core peak (datasheet); GPU.md has no measured FP64 ceiling yet
SCIPY_2048 = 480.32465633945736   # scipy.linalg.sqrtm, float64, on these covariances (GPU.md: 480.324656)


def gpu_md_cov(seed: int, d: int, device) -> torch.Tensor:
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    s = (q * torch.logspace(1, -6, d, dtype=torch.float64)) @ q.T
    return ((s + s.T) / 2).to(device)


def _eigvals_route(s1, s2):
    """torchmetrics' way: eigenvalues of the non-symmetric product."""
    return torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()


def _sync(x):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return x


def bench_trace_sqrt(d: int, device) -> list[dict]:
    s1, s2 = gpu_md_cov(1, d, device), gpu_md_cov(2, d, device)
    ref = SCIPY_2048 if d == 2048 else float(fid.trace_sqrt_product(s1.cpu(), s2.cpu(), method="svd"))
    l1 = fid.psd_factor(s1)
    fns = {
        "eager": lambda i: _eigvals_route(s1, s2),
        "svd": lambda i: fid.trace_sqrt_product(s1, s2, method="svd"),
        "eigh": lambda i: fid.trace_sqrt_product(s1, s2, method="eigh"),
        "svd+cached": lambda i: fid.trace_sqrt_product(s1, s2, method="svd", factor1=l1),
        "eigh+cached": lambda i: fid.trace_sqrt_product(s1, s2, method="eigh", factor1=l1),
        "newton_schulz+cached": lambda i: fid.trace_sqrt_product(s1, s2, method="newton_schulz", factor1=l1),
    }
    floor = _bench.floor_ms(flops=2 * d ** 3, flop_rate=H100_FP64_FLOPS)
    rows = _bench.measure("fid", f"trace_sqrt_product {d}-d, eigenvalues 1e1..1e-6", (d, d), torch.float64, fns,
                          floor)
    for r in rows:  # accuracy next to speed
        if r["ms"] is not None:
            v = float(_sync(fns[r["backend"]](0)))
            r["rel_err_vs_scipy"] = abs(v - ref) / ref
    return rows


def bench_singular(n: int, d: int, device) -> list[dict]:
    """Covariances of n < d samples (rank n - 1): error against the exact ||Xc1 Xc2^T||_* / (n - 1)."""
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(n, d, dtype=torch.float64, generator=g) * torch.logspace(0.5, -3, d, dtype=torch.float64)
    x2 = torch.randn(n, d, dtype=torch.float64, generator=g) * torch.logspace(0.5, -3, d, dtype=torch.float64) + 0.1
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    exact = float(torch.linalg.svdvals(c1 @ c2.T).sum()) / (n - 1)
    s1, s2 = (c1.T @ c1 / (n - 1)).to(device), (c2.T @ c2 / (n - 1)).to(device)
    fns = {m: (lambda i, m=m: fid.trace_sqrt_product(s1, s2, method=m)) for m in fid.METHODS}
    fns["eager"] = lambda i: _eigvals_route(s1, s2)
    floor = _bench.floor_ms(flops=2 * d ** 3, flop_rate=H100_FP64_FLOPS)
    rows = _bench.measure("fid", f"trace_sqrt_product {d}-d from {n} samples (singular)", (d, d), torch.float64,
                          fns, floor)
    for r in rows:
        if r["ms"] is not None:
            r["rel_err_vs_exact"] = abs(float(_sync(fns[r["backend"]](0))) - exact) / exact
    return rows


def bench_feature_stats(n: int, d: int, chunk: int, device) -> list[dict]:
    torch.manual_seed(0)
    feats = [torch.rand(n, d, device=device) * 2 + 0.5, torch.rand(n, d, device=device) * 2 + 0.5]

    def ours(i):
        s = FeatureStats()
        for x in feats[i].split(chunk):
            s.update(x)
        return s.m2

    def gemm(i):  # the float64 GEMM of all centered features: the bar to meet
        x = feats[i].double()
        x = x - x.mean(0)
        return x.T @ x

    def one_pass(i):  # torchmetrics: sum of outer products, loses digits to cancellation
        x = feats[i].double()
        return x.T @ x - n * torch.outer(x.mean(0), x.mean(0))

    fns = {"eager": gemm, "feature_stats": ours, "one_pass_sums": one_pass}
    floor = _bench.floor_ms(bytes_moved=n * d * 4, flops=2 * n * d * d, flop_rate=H100_FP64_FLOPS)
    return _bench.measure("fid", f"FeatureStats {n}x{d} fp32 feats, chunks of {chunk}", (n, d), torch.float32, fns,
                          floor, n_inputs=2)


def bench_kid(n: int, d: int, subsets: int, m: int, device) -> list[dict]:
    torch.manual_seed(0)
    real, fake = torch.rand(n, d, device=device), torch.rand(n, d, device=device)
    fns = {"eager": lambda i: scores.kid_ref(real, fake, subsets, m)}
    if device.type == "cuda":
        fns["triton"] = lambda i: scores.kid(real, fake, subsets, m)
    floor = _bench.floor_ms(flops=3 * subsets * 2 * m * m * d, flop_rate=H100_FP64_FLOPS)
    return _bench.measure("fid", f"KID {n}x{d}, {subsets} subsets of {m}", (n, d), torch.float32, fns, floor)


def run(quick: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        return (bench_trace_sqrt(256, device) + bench_singular(100, 256, device)
                + bench_feature_stats(5000, 256, 1000, device)
                + bench_kid(2000, 256, 5, 200, device))
    return (bench_trace_sqrt(2048, device) + bench_singular(1000, 2048, device)
            + bench_feature_stats(50000, 2048, 5000, device)
            + bench_kid(50000, 2048, 100, 1000, device))


def vs_scipy(d: int) -> None:
    """One timing of scipy.linalg.sqrtm and of each method at d on the CPU, with relative errors."""
    import numpy as np
    import scipy
    import scipy.linalg
    s1, s2 = gpu_md_cov(1, d, "cpu"), gpu_md_cov(2, d, "cpu")
    a, b = s1.numpy(), s2.numpy()
    print(f"d={d}, torch threads {torch.get_num_threads()}, scipy {scipy.__version__}, torch {torch.__version__}")
    t = time.perf_counter()
    ref = float(np.trace(scipy.linalg.sqrtm(a @ b)).real)
    print(f"scipy.linalg.sqrtm(S1 @ S2): {time.perf_counter() - t:8.3f} s  trace {ref!r}")
    l1 = fid.psd_factor(s1)
    for name, kw in [("svd", {}), ("eigh", {}), ("svd+cached", {"factor1": l1}), ("eigh+cached", {"factor1": l1})]:
        t = time.perf_counter()
        v = float(fid.trace_sqrt_product(s1, s2, method=name.split("+")[0], **kw))
        print(f"gankern {name:12s}: {time.perf_counter() - t:8.3f} s  trace {v!r}  rel err vs scipy "
              f"{abs(v - ref) / ref:.2e}")
    # FID near 0, where cancellation bites: S2 = (1 + eps) S1, exact FID = (1 - sqrt(1 + eps))^2 Tr S1
    from gankern.metrics import frechet_distance
    eps = 1e-6
    exact = (1 - np.sqrt(1 + eps)) ** 2 * float(torch.trace(s1))
    b2 = a * (1 + eps)
    t = time.perf_counter()
    fid_scipy = float(np.trace(a) + np.trace(b2) - 2 * np.trace(scipy.linalg.sqrtm(a @ b2)).real)
    print(f"FID near 0 (exact {exact:.3e}): scipy {fid_scipy - exact:+.2e} ({time.perf_counter() - t:.1f} s)", end="")
    zero = np.zeros(d)
    for m in ("svd", "eigh"):
        print(f", {m} {frechet_distance(zero, a, zero, b2, method=m) - exact:+.2e}", end="")
    print()


if __name__ == "__main__":
    if "--vs-scipy" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--vs-scipy", action="store_true")
        p.add_argument("--dim", type=int, default=2048)
        vs_scipy(p.parse_args().dim)
    else:
        _bench.main("fid", run)
