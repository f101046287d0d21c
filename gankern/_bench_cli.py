"""`gankern bench`: run the benchmarks of bench/bench_<family>.py (source checkout), or render a results file."""
import glob
import importlib.util
import json
import os
import sys

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def families() -> list[str]:
    return sorted(os.path.basename(p)[6:-3] for p in glob.glob(os.path.join(_BENCH_DIR, "bench_*.py")))


def add_parsers(sub):
    p = sub.add_parser("bench", help="benchmark gankern's ops against eager PyTorch, torch.compile and the floor",
                       description="Times every backend of each op family with eager PyTorch, torch.compile and the "
                                   "floor of the workload (medians; JSON rows, one file per family). Without a GPU "
                                   "only eager, torch.compile and ref run, on the CPU: use --quick there.")
    p.add_argument("families", nargs="*", metavar="FAMILY", help="families to run (default: all): "
                   + ", ".join(families()))
    p.add_argument("--quick", action="store_true",
                   help="small shapes: a smoke run that shows every benchmark runs (seconds per family on a CPU)")
    p.add_argument("--out", default=None, metavar="DIR|FILE.json",
                   help="folder for the results, bench_<family>.json each (default: the current directory), or one "
                        ".json file to append every row to")
    p.add_argument("--report", metavar="RESULTS_JSON", default=None,
                   help="print the markdown table of an existing results file instead of running")
    p.set_defaults(func=run)


def _no_gpu_notice(quick: bool) -> str:
    from ._backend import status
    s = status()
    reasons = "; ".join(f"{name}: {s[name].removeprefix('unavailable: ')}" for name in ("triton", "cuda")
                        if s[name] != "available")
    shapes = ("--quick: small shapes, to show that every benchmark runs (about a minute for all families on 2 cores)"
              if quick else "the default shapes are sized for a GPU and take many minutes here; --quick runs small "
                            "shapes instead (about a minute for all families on 2 cores)")
    return (f"gankern bench: no CUDA GPU is visible, so eager PyTorch, torch.compile and the ref backend are timed "
            f"on the CPU, which shows that the benchmarks run, not how fast the kernels are"
            f"{' (' + reasons + ')' if reasons else ''}; {shapes}")


def run(args) -> int:
    from . import _bench
    if args.report:
        with open(args.report) as f:
            print(_bench.format_rows(json.load(f)))
        return 0
    known = families()
    if not known:
        print(f"gankern bench: no benchmarks found in {_BENCH_DIR}: they live in gankern's source checkout "
              f"(bench/); run gankern bench from an install of the checkout", file=sys.stderr)
        return 2
    chosen = args.families or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        print(f"gankern bench: unknown families {unknown}; known: {known}", file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print(_no_gpu_notice(args.quick), file=sys.stderr, flush=True)
    out = args.out or os.getcwd()
    for i, fam in enumerate(chosen):
        path = out if out.endswith(".json") else os.path.join(out, f"bench_{fam}.json")
        print(f"gankern bench: [{i + 1}/{len(chosen)}] {fam}{' (quick)' if args.quick else ''} -> {path}",
              file=sys.stderr, flush=True)
        spec = importlib.util.spec_from_file_location(f"bench_{fam}", os.path.join(_BENCH_DIR, f"bench_{fam}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _bench.main(fam, mod.run, (["--quick"] if args.quick else []) + ["--out", path])
    return 0
