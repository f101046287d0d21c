"""`gankern bench`: run the benchmarks of bench/bench_<family>.py (source checkout), or render a results file."""
import glob
import importlib.util
import json
import os

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def families() -> list[str]:
    return sorted(os.path.basename(p)[6:-3] for p in glob.glob(os.path.join(_BENCH_DIR, "bench_*.py")))


def add_parsers(sub):
    p = sub.add_parser("bench", help="benchmark gankern's ops against eager PyTorch, torch.compile and the floor",
                       description="Times every backend of each op family with eager PyTorch, torch.compile and the "
                                   "floor of the workload (medians; JSON rows under $OUT or bench/results/).")
    p.add_argument("families", nargs="*", metavar="FAMILY", help="families to run (default: all): "
                   + ", ".join(families()))
    p.add_argument("--quick", action="store_true", help="small shapes: a smoke run (e.g. on a CPU)")
    p.add_argument("--out", default=None, help="JSON file to append rows to")
    p.add_argument("--report", metavar="RESULTS_JSON", default=None,
                   help="print the markdown table of an existing results file instead of running")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import _bench
    if args.report:
        with open(args.report) as f:
            print(_bench.format_rows(json.load(f)))
        return 0
    known = families()
    if not known:
        print(f"no benchmarks found in {_BENCH_DIR} (they live in gankern's source checkout)")
        return 2
    chosen = args.families or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        print(f"unknown families {unknown}; known: {known}")
        return 2
    for fam in chosen:
        spec = importlib.util.spec_from_file_location(f"bench_{fam}", os.path.join(_BENCH_DIR, f"bench_{fam}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        argv = (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else [])
        _bench.main(fam, mod.run, argv)
    return 0
