"""The benchmark harness behind bench/bench_<family>.py and ``gankern bench``.

A benchmark is data: each measurement is a JSON row ``{family, workload, backend, dtype, shape, ms, floor_ms,
vs_eager, vs_compile, vs_floor, gpu, torch, triton, gankern, commit}`` (DESIGN.md). Times are medians of
``triton.testing.do_bench`` on a GPU (a perf_counter median on the CPU, which only checks that the code runs), over
several input sets used in turn so that the L2 cache does not flatter. Every backend, eager PyTorch and
torch.compile of the reference are timed in the same run; ratios are computed within that run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

import torch

# Measured ceilings of the reference H100 (shared/GPU.md): device copy bandwidth (read + write counted), bf16 GEMM.
H100_BANDWIDTH = 3.0e12
H100_BF16_FLOPS = 800e12


def floor_ms(bytes_moved: float = 0.0, flops: float = 0.0, bandwidth: float = H100_BANDWIDTH,
             flop_rate: float = H100_BF16_FLOPS) -> float:
    """The time the workload needs at the measured ceilings: max(bytes / bandwidth, flops / flop rate), in ms."""
    return 1e3 * max(bytes_moved / bandwidth, flops / flop_rate)


def environment() -> dict:
    import gankern
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "triton": triton_version, "gankern": gankern.__version__, "commit": commit}


def time_ms(fn: Callable[[int], object], n_inputs: int = 1, warmup: int = 10, rep: int = 50) -> float:
    """Median time of ``fn(i)`` in ms, i cycling over ``n_inputs`` input sets."""
    counter = [0]

    def call():
        fn(counter[0] % n_inputs)
        counter[0] += 1

    if torch.cuda.is_available():
        import triton.testing
        return float(triton.testing.do_bench(call, warmup=warmup, rep=rep, return_mode="median"))
    for _ in range(2):
        call()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def measure(family: str, workload: str, shape: Sequence[int] | str, dtype: torch.dtype | str,
            fns: dict[str, Callable[[int], object]], floor: float, n_inputs: int = 1,
            eager: str = "eager", compiled: str = "torch.compile") -> list[dict]:
    """Time every entry of ``fns`` (backend name -> fn(i)); rows carry ratios to ``fns[eager]``, ``fns[compiled]``
    (when present) and to the floor. A backend that cannot run gets a row with ``ms: null`` and the reason. Says on
    stderr which workload it times (a full-size workload can take minutes on a CPU)."""
    print(f"  {family}: {workload} ({', '.join(fns)})", file=sys.stderr, flush=True)
    env = environment()
    times, errors = {}, {}
    for name, fn in fns.items():
        try:
            times[name] = time_ms(fn, n_inputs)
        except Exception as e:  # a backend that cannot run this workload is reported, not hidden
            errors[name] = f"{type(e).__name__}: {e}"[:300]
    rows = []
    for name in fns:
        ms = times.get(name)
        rows.append({
            "family": family, "workload": workload, "backend": name, "dtype": str(dtype).replace("torch.", ""),
            "shape": shape if isinstance(shape, str) else list(shape), "ms": ms, "floor_ms": floor,
            "vs_eager": ms / times[eager] if ms and times.get(eager) else None,
            "vs_compile": ms / times[compiled] if ms and times.get(compiled) else None,
            "vs_floor": ms / floor if ms and floor else None,
            **env, **({"error": errors[name]} if name in errors else {}),
        })
    return rows


def with_peak(rows: list[dict], fns: dict[str, Callable[[int], object]]) -> list[dict]:
    """Adds ``peak_mb`` to each row: the CUDA memory (MiB) its fn(0) allocates above what was allocated before; None
    without a GPU or where the row did not run (its timing already says why)."""
    for row in rows:
        row["peak_mb"] = None
        if torch.cuda.is_available() and row["ms"] is not None:
            try:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                fns[row["backend"]](0)
                torch.cuda.synchronize()
                row["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
            except Exception:  # noqa: BLE001 - the timing already recorded why this row cannot run
                pass
    return rows


def format_rows(rows: list[dict]) -> str:
    """A markdown table of rows; a row that did not run says why in the last column."""
    def f(x, spec):
        return "-" if x is None else format(x, spec)
    lines = ["| family | workload | backend | dtype | ms | floor ms | x eager | x compile | x floor "
             "| not run because |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        why = r.get("error", "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['family']} | {r['workload']} | {r['backend']} | {r['dtype']} | {f(r['ms'], '.4f')} | "
                     f"{f(r['floor_ms'], '.4f')} | {f(r['vs_eager'], '.2f')} | {f(r['vs_compile'], '.2f')} | "
                     f"{f(r['vs_floor'], '.2f')} | {why} |")
    return "\n".join(lines)


def write_rows(rows: list[dict], path: str) -> None:
    """Append rows to the JSON list at ``path`` (created when absent), atomically."""
    existing = []
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(existing + rows, f, indent=1)
    os.replace(tmp, path)


def results_path(family: str) -> str:
    """Where a benchmark writes: $OUT/bench_<family>.json when OUT is set, else bench/results/<gpu>.json."""
    out = os.environ.get("OUT")
    if out:
        return os.path.join(out, f"bench_{family}.json")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gpu = environment()["gpu"].replace(" ", "_")
    return os.path.join(root, "bench", "results", f"{gpu}.json")


def main(family: str, run: Callable[[bool], list[dict]], argv: list[str] | None = None) -> list[dict]:
    """Command line of a bench_<family>.py: ``--quick`` (small shapes), ``--out PATH``, ``--no-write``."""
    import argparse
    p = argparse.ArgumentParser(description=f"benchmark of gankern's {family} family")
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke run, e.g. on the CPU)")
    p.add_argument("--out", default=None, help="JSON file to append rows to (default: $OUT or bench/results/)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    rows = run(args.quick)
    print(format_rows(rows))
    if not args.no_write:
        write_rows(rows, args.out or results_path(family))
    return rows
