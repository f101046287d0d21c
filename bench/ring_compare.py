"""Plain GAN vs unrolled GAN on the 2-D ring of 8 Gaussians (Metz et al. 2017): the configs gan-ring and unrolled-gan
(the same nets, data and seed; 0 vs k unrolled D steps), modes covered and high-quality fraction over training, and
the final samples, plotted.

    python bench/ring_compare.py [--kimg 2560] [--unroll 10] [--seed 0] [--out ring-compare] [--set SEC.FIELD=VAL ...]

Writes OUT/<config>/ (the runs), OUT/compare.json (the ring metrics per step per run) and OUT/compare.png.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gankern import cli  # noqa: E402
from gankern.data.ring import ring_centers  # noqa: E402
from gankern.train.cli import load_generator  # noqa: E402

CONFIGS = ("gan-ring", "unrolled-gan")


def train(config: str, kimg: float, seed: int, outdir: str, sets: list[str]) -> tuple[list[dict], torch.Tensor]:
    """One run: its log rows that carry ring metrics, and 2000 samples of its final G."""
    argv = ["train", "--config", config, "--kimg", str(kimg), "--seed", str(seed), "--outdir", outdir, "-q"]
    argv += [a for kv in sets for a in ("--set", kv)]
    if cli.main(argv) != 0:
        raise RuntimeError(f"gankern {' '.join(argv)} failed")
    run = os.path.dirname(sorted(glob.glob(os.path.join(outdir, "*", "metrics.jsonl")))[-1])
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "ring/modes" in r]
    G, _, _, recipe = load_generator(run, "cpu", ema=True)
    with torch.no_grad():
        pts = G(torch.randn(2000, recipe.z_dim, generator=torch.Generator().manual_seed(seed))).reshape(-1, 2)
    return rows, pts


def plot(results: dict, samples: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 + len(samples), figsize=(4 * (2 + len(samples)), 3.6))
    for name, rows in results.items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["ring/modes"] for r in rows], label=name)
        axes[1].plot(steps, [r["ring/hq"] for r in rows], label=name)
    for ax, label in zip(axes[:2], ("modes covered (of 8)", "high-quality fraction (< 3 std)")):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    c = ring_centers()
    for ax, (name, pts) in zip(axes[2:], samples.items()):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, label="G")
        ax.scatter(c[:, 0], c[:, 1], s=30, marker="x", color="red", label="modes")
        ax.set_title(f"{name}: final samples")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="plain GAN vs unrolled GAN on the 2-D ring: modes covered, plotted")
    p.add_argument("--kimg", type=float, default=2560.0, help="points shown per run, thousands (default: "
                   "%(default)s = 5000 steps of 512)")
    p.add_argument("--unroll", type=int, default=10, help="unrolled D steps of unrolled-gan (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="ring-compare")
    p.add_argument("--set", action="append", default=[], metavar="SEC.FIELD=VAL", help="passed to gankern train")
    args = p.parse_args(argv)
    results, samples = {}, {}
    for config in CONFIGS:
        sets = args.set + ([f"recipe.unroll={args.unroll}"] if config == "unrolled-gan" else [])
        results[config], samples[config] = train(config, args.kimg, args.seed, os.path.join(args.out, config), sets)
        last = results[config][-1]
        print(f"{config}: {last['ring/modes']:.0f} modes, high-quality fraction {last['ring/hq']:.3f} at step "
              f"{last['step']}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, samples, os.path.join(args.out, "compare.png"))
    print(f"wrote {os.path.join(args.out, 'compare.png')} and compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
