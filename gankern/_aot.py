"""Every gankern kernel compiled ahead of time for sm_90 and sm_80 without a GPU, its resources checked against a
baseline.

Triton kernels: the specializations (argument dtypes, int widths, constexprs, num_warps/num_stages) are recorded
from the launches of the test suite (``pytest -p gankern._aot`` with ``GANKERN_AOT_RECORD=FILE`` and
``TRITON_INTERPRET=1``: a plugin on the interpreter's launcher, no extra test time) and of ``gpu_workloads``
(GPU-sized calls, launches stubbed); each is bound with Triton's own binder for each target (pointers and ints
taken 16-aligned, as at the GPU workloads) and compiled by ``triton.compile`` with the ptxas Triton ships. CUDA
sources: ``nvcc -cubin -arch=sm_XY -Xptxas -v``. Registers, spills, stack frame and shared memory are read from
ptxas' report. Targets (``ARCHS``): sm_90 (H100/H200) and sm_80 (A100: 163 KiB of shared memory per block); the
baseline has one row per kernel, specialization and target (``arch``).

A breach fails the check: a compile error, spills or a stack frame (beyond what the baseline already records as a
known defect), dynamic + static shared memory over the target's limit per block (227 KiB on sm_90, 163 KiB on
sm_80), registers x threads over 64K per block, a recorded grid with y or z over 65535, registers above the baseline
by more than ``REG_SLACK``, and a kernel or a recorded specialization missing from the baseline
(bench/aot_baseline.json).

    python -m gankern._aot check [--specs FILE ...] [--update] [--table] [--archs 90 80]
        (the CI step; --update rewrites the baseline, --table prints it per kernel and target)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import glob
import importlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "bench", "aot_baseline.json")
ARCH = 90                     # the GPU of the GPU checks (shared/GPU.md)
ARCHS = (90, 80)              # compiled for in CI: sm_90 (H100/H200) and sm_80 (A100)
SMEM_LIMITS = {90: 227 * 1024, 80: 163 * 1024}  # bytes of shared memory per block (with opt-in)
SMEM_LIMIT = SMEM_LIMITS[ARCH]
REGS_PER_BLOCK = 64 * 1024    # 32-bit registers per block (and per SM) on sm_80 and sm_90
GRID_YZ_MAX = 65535
REG_SLACK = 8                 # registers a kernel may gain over the baseline before the check fails

# ---------------------------------------------------------------- recording (TRITON_INTERPRET=1 processes)


def _canon(value, constexpr: bool):
    """A launch argument as JSON, keeping only what decides the compiled code: dtype of a tensor, width (and == 1)
    of an int, the exact value of a constexpr."""
    import torch
    if isinstance(value, torch.Tensor):
        return "T:" + str(value.dtype).removeprefix("torch.")
    if value is None or isinstance(value, bool):
        return value
    if hasattr(value, "primitive_bitwidth") or type(value).__name__ == "dtype":  # a triton.language dtype
        return "tl:" + value.name
    if isinstance(value, int):
        if constexpr:
            return value
        if value == 1:
            return "i:1"
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return value if constexpr else "f32"
    if isinstance(value, str) and constexpr:
        return value
    raise TypeError(f"cannot record a launch argument of type {type(value).__name__}")


def describe_launch(kernel, args, kwargs, grid) -> tuple[dict, list[str]]:
    """(spec, problems) of one launch: spec = {kernel, args: {name: canon}, options}; problems: grid breaches."""
    fn = kernel.fn
    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args))
    options = {k: v for k, v in kwargs.items() if k not in params}
    bound.update({k: v for k, v in kwargs.items() if k in params})
    for name, p in params.items():
        if name not in bound and p.default is not inspect.Parameter.empty:
            bound[name] = p.default
    spec = {"kernel": f"{fn.__module__}.{fn.__name__}",
            "args": {n: _canon(bound[n], "constexpr" in str(p.annotation)) for n, p in params.items()},
            "options": {k: options[k] for k in ("num_warps", "num_stages") if k in options}}
    if callable(grid):
        grid = grid(bound)
    grid = tuple(grid) + (1,) * (3 - len(grid))
    problems = []
    if grid[0] >= 2 ** 31 or grid[1] > GRID_YZ_MAX or grid[2] > GRID_YZ_MAX:
        problems.append(f"{spec['kernel']}: grid {grid} over the limits (x < 2^31, y and z <= {GRID_YZ_MAX})")
    return spec, problems


def spec_key(spec: dict) -> str:
    return json.dumps([spec["kernel"], spec["args"], spec["options"]], sort_keys=True)


class Recorder:
    """Records the specialization of every Triton launch (interpreter mode); ``stub`` skips running the kernel."""

    def __init__(self, stub: bool = False):
        self.stub = stub
        self.specs: dict[str, dict] = {}
        self.problems: list[str] = []
        self._saved = None

    def __enter__(self):
        from triton.runtime.interpreter import InterpretedFunction
        saved = self._saved = InterpretedFunction.run
        rec = self

        def run(kernel, *args, grid, warmup, **kwargs):
            if kernel.fn.__module__.startswith("gankern.") and not warmup:
                spec, problems = describe_launch(kernel, args, kwargs, grid)
                rec.specs.setdefault(spec_key(spec), spec)
                rec.problems += [p for p in problems if p not in rec.problems]
                if rec.stub:
                    return None
            return saved(kernel, *args, grid=grid, warmup=warmup, **kwargs)

        InterpretedFunction.run = run
        return self

    def __exit__(self, *exc):
        from triton.runtime.interpreter import InterpretedFunction
        InterpretedFunction.run = self._saved
        return False

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"specs": list(self.specs.values()), "problems": self.problems}, f, indent=1)


# pytest plugin (``-p gankern._aot``): records when GANKERN_AOT_RECORD names the output file.
_PLUGIN_RECORDER: list[Recorder] = []


def pytest_configure(config):
    if os.environ.get("GANKERN_AOT_RECORD"):
        if os.environ.get("TRITON_INTERPRET") != "1":
            # this plugin imports gankern (and so triton.language) before conftest.py can set it
            raise RuntimeError("GANKERN_AOT_RECORD records the Triton interpreter's launches: run pytest -p "
                               "gankern._aot with TRITON_INTERPRET=1 in the environment")
        _PLUGIN_RECORDER.append(Recorder().__enter__())


def pytest_unconfigure(config):
    if _PLUGIN_RECORDER:
        rec = _PLUGIN_RECORDER.pop()
        rec.__exit__(None, None, None)
        worker = os.environ.get("PYTEST_XDIST_WORKER")  # under xdist: one file per worker, FILE.gw0, ...
        rec.dump(os.environ["GANKERN_AOT_RECORD"] + (f".{worker}" if worker else ""))


def gpu_workloads() -> None:
    """The GPU-sized launches of the benchmarks whose block sizes depend on the shape (run with launches stubbed,
    under TRITON_INTERPRET=1; outputs are garbage). Batch sizes are cut where only the grid depends on them."""
    import torch
    import gankern
    from gankern import ops

    def run(fn, *tensors, grad=True):
        ts = [t.requires_grad_(grad and t.is_floating_point()) for t in tensors]
        out = fn(*ts)
        if grad:
            torch.autograd.grad(out.float().sum(), [t for t in ts if t.requires_grad], allow_unused=True)

    with gankern.use_backend("triton"):
        for dt in (torch.float32, torch.float16):
            x = torch.randn(2, 512, 32, 32, dtype=dt)
            run(lambda x, g, b: ops.adain(x, g, b), x, torch.randn(2, 512, dtype=dt), torch.randn(2, 512, dtype=dt))
            run(lambda x, b: ops.bias_act(x, b), x, torch.randn(512, dtype=dt))
            xi = torch.randn(2, 256, 64, 64, dtype=dt)  # CycleGAN's 64x64 stage (two-pass), and 32x32 (one pass)
            run(lambda x: ops.instance_norm(x, act="lrelu"), xi)
            run(lambda x, w, b: ops.instance_norm(x, w, b, act="relu"), xi[:, :, :32, :32], torch.randn(256),
                torch.randn(256))
            run(lambda w, s: ops.modulation.demodulation_coefficients(w, s), torch.randn(512, 512, 3, 3, dtype=dt),
                torch.randn(32, 512, dtype=dt))  # StyleGAN2's N = 32, I = O = 512 (I split in slices)
            y = torch.randn(2, 512, 64, 64, dtype=dt)
            f = torch.tensor([1.0, 3.0, 3.0, 1.0])
            run(lambda y: ops.upsample2d(y, f), y)
            run(lambda y: ops.downsample2d(y, f), y)
            run(lambda x: ops.minibatch_stddev(x), torch.randn(64, 512, 4, 4, dtype=dt))
            run(lambda m: ops.minibatch_discrimination_pairs(m), torch.randn(256, 128, 16, dtype=dt))
            shapes = [(96, 3, 3, 3), (192, 96, 1, 1), (1, 1536), (24576, 20)]  # BigGAN-128 layers, cut
            ws = [torch.randn(s, dtype=dt, requires_grad=True) for s in shapes]
            us = [torch.randn(s[0], dtype=dt) for s in shapes]
            vs = [torch.randn(w[0].numel(), dtype=dt) for w in ws]
            normed, _ = ops.spectral_norm.spectral_normalize_all(ws, us, vs)
            torch.autograd.grad(sum(n.float().sum() for n in normed), ws)


def record_workloads(path: str) -> None:
    with Recorder(stub=True) as rec:
        gpu_workloads()
    rec.dump(path)


# ---------------------------------------------------------------- compiling (processes without the interpreter)


def _tl_dtype(name: str):
    import triton.language as tl
    return tl.dtype(name)


class _Pointer:
    """A stand-in tensor for Triton's binder: dtype and a 16-aligned address."""

    def __init__(self, dtype):
        self.dtype = dtype

    @staticmethod
    def data_ptr():
        return 0


def _arg(value):
    import torch
    if isinstance(value, str):
        kind, _, rest = value.partition(":")
        if kind == "T":
            return _Pointer(getattr(torch, rest))
        if kind == "tl":
            return _tl_dtype(rest)
        if kind == "i":
            return int(rest)
        if value == "i32":
            return 16
        if value == "i64":
            return 2 ** 32
        if value == "f32":
            return 1.5
    return value


_PTXAS_FN = re.compile(r"Compiling entry function '([^']+)' for 'sm_\w+'")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def parse_ptxas(log: str) -> dict[str, dict]:
    """ptxas -v output -> {mangled entry: {regs, spill_stores, spill_loads, stack, static_smem}}."""
    out, cur = {}, None
    for line in log.splitlines():
        m = _PTXAS_FN.search(line)
        if m:
            cur = out.setdefault(m.group(1), {"regs": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0,
                                              "static_smem": 0})
            continue
        if cur is None:
            continue
        m = _PTXAS_STACK.search(line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = _PTXAS_REGS.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            cur["static_smem"] = int(m.group(2) or 0)
    return out


def compile_triton(spec: dict, arch: int = ARCH) -> dict:
    """Compiles one recorded specialization for sm_``arch``; returns a table row (or one with an 'error')."""
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    row = {"kernel": spec["kernel"], "spec": spec_key(spec), "arch": arch}
    errlog = tempfile.TemporaryFile(mode="w+")
    try:
        mod_name, _, fn_name = spec["kernel"].rpartition(".")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        target = GPUTarget("cuda", arch, 32)
        backend = make_backend(target)
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        kwargs = {k: _arg(v) for k, v in spec["args"].items()}
        kwargs.update(spec["options"])
        bound, specialization, options = binder(**kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
        knobs.nvidia.dump_ptxas_log = True
        log = io.StringIO()
        with contextlib.redirect_stdout(log), _fd2_to(errlog):
            ck = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
        stats = parse_ptxas(log.getvalue()).get(ck.metadata.name)
        if stats is None:  # a hit in Triton's cache: its ptxas did not run, so run it on the PTX here
            stats = _ptxas_stats(ck.asm["ptx"], ck.metadata.name, arch)
        row.update(regs=stats["regs"], spills=stats["spill_stores"] + stats["spill_loads"], stack=stats["stack"],
                   smem=ck.metadata.shared + stats["static_smem"], threads=32 * ck.metadata.num_warps)
    except Exception as e:  # noqa: BLE001 - every failure is a finding of the check
        row["error"] = f"{type(e).__name__}: " + " ".join(str(e).split())[-300:]
        errlog.seek(0)
        failed = re.search(r"Pipeline failed while executing \[`?([^`\]]+)", errlog.read())
        if failed:
            row["error"] += f" (in the MLIR pass {failed.group(1)})"
    finally:
        errlog.close()
    return row


@contextlib.contextmanager
def _fd2_to(f):
    """Sends file descriptor 2 (where MLIR writes its diagnostics) to ``f`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tool(name: str) -> str:
    import triton
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return bundled if os.path.exists(bundled) else (shutil.which(name) or name)


def _ptxas_stats(ptx: str, name: str, arch: int) -> dict:
    """ptxas -v of Triton's PTX for sm_90a / sm_80 (what Triton's own compile runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        p = subprocess.run([_tool("ptxas"), "-lineinfo", "-v", f"--gpu-name={gpu}", src, "-o",
                            os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
    return parse_ptxas(p.stderr + p.stdout)[name]


def _nvcc() -> str | None:
    for cand in (os.environ.get("CUDA_HOME") and os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"),
                 shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


def _demangle(names: list[str]) -> list[str]:
    """Mangled kernel names -> ``name<template args>`` (c++filt, less return type, namespaces and parameters)."""
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return names
    short = []
    for line in out.splitlines():
        line = line.replace("(anonymous namespace)::", "").split("(")[0].removeprefix("void ")
        short.append(re.sub(r"^(\w+::)+", "", line))
    return short


def compile_cuda(path: str, nvcc: str, arch: int = ARCH) -> list[dict]:
    """Compiles one CUDA source for sm_``arch`` (-Xptxas -v); one row per kernel."""
    rel = os.path.relpath(path, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", "-std=c++17", "-O3", "-Xptxas", "-v,--warn-on-spills",
               "-I", os.path.join(ROOT, "csrc", "include"), "-I", os.path.join(ROOT, "csrc"), path,
               "-o", os.path.join(tmp, "k.cubin")]
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return [{"kernel": rel, "spec": f"sm_{arch}", "arch": arch,
                 "error": (p.stderr.strip() or p.stdout.strip())[-400:]}]
    stats = parse_ptxas(p.stderr + p.stdout)
    rows = []
    for name, pretty in zip(stats, _demangle(list(stats))):
        s = stats[name]
        rows.append({"kernel": f"{rel}:{pretty}", "spec": f"sm_{arch}", "arch": arch, "regs": s["regs"],
                     "spills": s["spill_stores"] + s["spill_loads"], "stack": s["stack"], "smem": s["static_smem"],
                     "threads": None})
    return rows


def triton_kernels() -> list[str]:
    """Every launched Triton kernel of gankern (the ``*_kernel`` JIT functions of gankern/kernels)."""
    import pkgutil
    import gankern.kernels
    names = []
    for fam in sorted(m.name for m in pkgutil.iter_modules(gankern.kernels.__path__)):
        mod = importlib.import_module(f"gankern.kernels.{fam}")
        for name, obj in vars(mod).items():
            if name.endswith("_kernel") and hasattr(obj, "fn") and obj.fn.__module__ == mod.__name__:
                names.append(f"{mod.__name__}.{name}")
    return sorted(names)


# ---------------------------------------------------------------- checking


def _arch(row: dict) -> int:
    return row.get("arch", ARCH)  # rows of a one-target baseline (before sm_80 was added) are sm_90's


def _name(row: dict) -> str:
    """kernel [specialization] [target]: the specialization of a Triton row, the target when not sm_90."""
    name = row["kernel"] if row["spec"].startswith("sm_") else f"{row['kernel']} {row['spec']}"
    return name if _arch(row) == ARCH else f"{name} (sm_{_arch(row)})"


def budget_problems(row: dict) -> list[str]:
    """Breaches of the target's budgets by one compiled kernel (independent of the baseline)."""
    k, arch = _name(row), _arch(row)
    if "error" in row:
        return [f"{k}: compile error: {row['error']}"]
    out = []
    if row["smem"] > SMEM_LIMITS[arch]:
        out.append(f"{k}: {row['smem']} bytes of shared memory per block, over the {SMEM_LIMITS[arch]} of sm_{arch}")
    if row.get("threads") and row["regs"] * row["threads"] > REGS_PER_BLOCK:
        out.append(f"{k}: {row['regs']} registers x {row['threads']} threads over {REGS_PER_BLOCK} per block")
    return out


def compare(rows: list[dict], baseline: dict) -> list[str]:
    """Breaches: budgets, and spills / stack / registers beyond the baseline's entry of the same kernel, spec and
    target."""
    base = {(b["kernel"], b["spec"], _arch(b)): b for b in baseline.get("kernels", [])}
    problems = []
    for row in rows:
        key = (row["kernel"], row["spec"], _arch(row))
        if "error" in row and "error" in base.get(key, {}):
            continue  # a known failure the baseline records (reported by known_defects)
        problems += budget_problems(row)
        if "error" in row:
            continue
        b = base.get(key)
        name = _name(row)
        if b is None:
            # the suite draws sizes fresh, so a known kernel meets specializations (divisibility of its integer
            # arguments) the baseline has not seen: they are held to the worst the baseline accepts for that kernel
            known = [k for (kernel, _, arch), k in base.items()
                     if kernel == row["kernel"] and arch == key[2] and "error" not in k]
            if not known:
                problems.append(f"{name}: not in the baseline (python -m gankern._aot check --update, review the "
                                f"diff)")
                continue
            b = {f: max(k[f] for k in known) for f in ("spills", "stack", "regs")}
        if "error" in b:
            problems.append(f"{name}: compiles now but the baseline records a compile error (refresh it: "
                            f"python -m gankern._aot check --update, review the diff)")
            continue
        for field in ("spills", "stack"):
            if row[field] > b[field]:
                problems.append(f"{name}: {row[field]} bytes of {field} (baseline {b[field]}): local memory in a "
                                f"kernel")
        if row["regs"] > b["regs"] + REG_SLACK:
            problems.append(f"{name}: {row['regs']} registers (baseline {b['regs']}, slack {REG_SLACK})")
    return problems


def _bf16_twin(spec: dict) -> dict:
    """The bf16 specialization of an fp16 one (the interpreter cannot run bf16, the GPU workloads do)."""
    args = {k: {"T:float16": "T:bfloat16", "tl:fp16": "tl:bf16"}.get(v, v) if isinstance(v, str) else v
            for k, v in spec["args"].items()}
    return dict(spec, args=args)


def _specs_from(paths: list[str]) -> tuple[list[dict], list[str]]:
    specs, problems = {}, []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for s in data["specs"]:
            for t in (s, _bf16_twin(s)):
                specs.setdefault(spec_key(t), t)
        problems += data.get("problems", [])
    return list(specs.values()), problems


def _record_workloads_subprocess(path: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", f"import gankern._aot as a; a.record_workloads({path!r})"], env=env,
                   cwd=ROOT, check=True)


def run_check(spec_files: list[str], update: bool = False, jobs: int | None = None,
              baseline_path: str = BASELINE, cuda: bool = True,
              archs: tuple[int, ...] = ARCHS) -> tuple[list[dict], list[str]]:
    """Compiles the baseline's specs, the recorded ones and the CUDA sources for each target; returns (rows,
    problems)."""
    with open(baseline_path) if os.path.exists(baseline_path) else contextlib.nullcontext() as f:
        baseline = json.load(f) if f else {"specs": [], "kernels": []}
    with tempfile.TemporaryDirectory() as tmp:
        wl = os.path.join(tmp, "workloads.json")
        _record_workloads_subprocess(wl)
        recorded, problems = _specs_from([wl, *spec_files])
    known = set() if update else {spec_key(s) for s in baseline.get("specs", [])}   # --update: this run's specs only
    specs = ([] if update else list(baseline.get("specs", []))) + [s for s in recorded if spec_key(s) not in known]
    covered = {s["kernel"] for s in specs}
    problems += [f"{k}: no recorded launch (not compiled)" for k in triton_kernels() if k not in covered]
    rows = []
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    nvcc = _nvcc() if cuda else None
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        futs = [pool.submit(compile_cuda, p, nvcc, a) for a in archs
                for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cu"))) if nvcc]
        futs += [pool.submit(compile_triton, s, a) for a in archs for s in specs]
        for fut in futs:
            r = fut.result()
            rows += r if isinstance(r, list) else [r]
    if cuda and nvcc is None:
        problems.append("nvcc not found: the CUDA sources were not compiled")
    if update:
        problems += [p for r in rows if "error" not in r for p in budget_problems(r)]
        kernels = [{k: r[k] for k in ("kernel", "spec", "arch", "error", "regs", "spills", "stack", "smem",
                                      "threads") if k in r} for r in rows]
        with open(baseline_path, "w") as f:
            json.dump({"archs": [f"sm_{a}" for a in archs], "specs": sorted(specs, key=spec_key),
                       "kernels": sorted(kernels, key=lambda r: (r["kernel"], r["spec"], r["arch"]))}, f, indent=1)
            f.write("\n")
    else:
        problems += compare(rows, baseline)
    return rows, problems


def known_defects(rows: list[dict]) -> list[str]:
    """Compile errors, spills and stack frames that the check tolerates because the baseline records them."""
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"{_name(r)}: compile error: {r['error']}")
        elif r["spills"] or r["stack"]:
            out.append(f"{_name(r)}: {r['spills']} bytes of spills, {r['stack']} bytes of stack")
    return out


def table(rows: list[dict]) -> str:
    """A markdown table of the compiled kernels: one line per kernel and target, its worst specialization."""
    worst: dict[tuple[str, int], dict] = {}
    for r in rows:
        if "error" in r:
            continue
        k = (r["kernel"], _arch(r))
        w = worst.get(k)
        if w is None or (r["spills"], r["regs"], r["smem"]) > (w["spills"], w["regs"], w["smem"]):
            worst[k] = r
    n = {k: sum(1 for r in rows if (r["kernel"], _arch(r)) == k) for k in worst}
    lines = ["| kernel | target | specs | regs (max) | spills (B) | stack (B) | smem (B) |",
             "|---|---|---|---|---|---|---|"]
    for k in sorted(worst, key=lambda k: (k[0], -k[1])):
        r = worst[k]
        lines.append(f"| {k[0].removeprefix('gankern.kernels.')} | sm_{k[1]} | {n[k]} | {r['regs']} | {r['spills']} "
                     f"| {r['stack']} | {r['smem']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gankern._aot", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compile every kernel for each target and compare with the baseline")
    c.add_argument("--specs", nargs="*", default=[], help="recorded specialization files (GANKERN_AOT_RECORD)")
    c.add_argument("--update", action="store_true", help="rewrite the baseline from this run")
    c.add_argument("--baseline", default=BASELINE)
    c.add_argument("--jobs", type=int, default=None)
    c.add_argument("--archs", type=int, nargs="+", default=list(ARCHS), choices=sorted(SMEM_LIMITS),
                   help="compute capabilities to compile for (default: %(default)s)")
    c.add_argument("--table", action="store_true", help="print the per-kernel table")
    args = ap.parse_args(argv)
    rows, problems = run_check([p for p in args.specs if os.path.exists(p)], update=args.update, jobs=args.jobs,
                               baseline_path=args.baseline, archs=tuple(args.archs))
    if args.table:
        print(table(rows))
    print(f"aot: {len(rows)} kernel specializations compiled for "
          f"{', '.join(f'sm_{a}' for a in args.archs)}", file=sys.stderr)
    for p in known_defects(rows):
        print("AOT KNOWN (in the baseline):", p, file=sys.stderr)
    for p in problems:
        print("AOT BREACH:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
