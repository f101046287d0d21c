"""Spectral norm vs sparsity-aware norm in D, on scikit-learn's digits: the same config, seeds and data, once with
D's spectral norm (model.d_san=false) and once with SAN (model.d_san=true); digits-FID over training, plotted.

    python bench/compare_san.py [--config dcgan-san] [--kimg 20] [--res 16] [--seeds 0 1] [--out san-vs-sn]
                                [--set SEC.FIELD=VAL ...]

Writes OUT/<sn|san>-seed<S>/ (the runs), OUT/compare.json (FID per kimg per run) and OUT/compare.png.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gankern import cli  # noqa: E402


def train(config: str, san: bool, seed: int, kimg: float, res: int, snap: int, outdir: str,
          sets: list[str] = ()) -> list[dict]:
    """One run; its metrics rows that carry a digits-FID."""
    argv = ["train", "--config", config, "--data", "digits", "--res", str(res), "--kimg", str(kimg), "--seed",
            str(seed), "--snap", str(snap), "--outdir", outdir, "--metrics", "digits-fid", "-q"]
    argv += [a for kv in sets for a in ("--set", kv)] + ["--set", f"model.d_san={'true' if san else 'false'}"]
    if cli.main(argv) != 0:
        raise RuntimeError(f"gankern {' '.join(argv)} failed")
    (run,) = sorted(glob.glob(os.path.join(outdir, "*", "metrics.jsonl")))[-1:]
    with open(run) as f:
        return [r for r in map(json.loads, f) if "fid_digits" in r]


def plot(results: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results.items():
        ax.plot([r["kimg"] for r in rows], [r["fid_digits"] for r in rows], marker="o", ms=3, label=name,
                color="tab:blue" if name.startswith("sn") else "tab:red", alpha=0.8)
    ax.set_xlabel("kimg")
    ax.set_ylabel("digits-FID (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="SN vs SAN in D on the digits (same seeds), digits-FID plotted")
    p.add_argument("--config", default="dcgan-san", help="a CONFIGS row with spectral norm in D (default: %(default)s)")
    p.add_argument("--kimg", type=float, default=20.0)
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--snap", type=int, default=50, help="steps between FID evaluations (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="san-vs-sn")
    p.add_argument("--set", action="append", default=[], metavar="SEC.FIELD=VAL", help="passed to gankern train")
    args = p.parse_args(argv)
    results = {}
    for seed in args.seeds:
        for san in (False, True):
            name = f"{'san' if san else 'sn'}-seed{seed}"
            results[name] = train(args.config, san, seed, args.kimg, args.res, args.snap, os.path.join(args.out, name),
                                  args.set)
            print(f"{name}: digits-FID {results[name][-1]['fid_digits']:.2f} at {results[name][-1]['kimg']} kimg")
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "compare.png"), f"{args.config} on digits {args.res}px: SN vs SAN in D")
    print(f"wrote {os.path.join(args.out, 'compare.png')} and compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
