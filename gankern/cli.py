"""The ``gankern`` command: ``gankern info | train | generate | project | fid | bench | steer`` (``--help`` on each).

Each row of MODULES is a module that defines ``add_parsers(subparsers)``: it adds its subcommand(s), each with
``set_defaults(func=...)`` taking the parsed args and returning an exit code. gankern's log lines (logger
``gankern``, e.g. what a data set was read as) go to stderr, from rank 0 only under torchrun. The argument types
below turn bad values into argparse's one-line usage error (exit code 2), never a traceback; a subcommand with a
``--threads`` option gets torch's CPU thread count set before it runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys

MODULES = [
    "gankern._info_cli",      # info
    "gankern._bench_cli",     # bench
    "gankern.metrics.cli",    # fid
    "gankern.train.cli",      # train, generate
    "gankern._steer_cli",     # steer
    "gankern.train.translate",  # translate (pix2pix, cyclegan)
    "gankern.train.recipes.stylegan2",  # project
]


def int_at_least(low: int):
    """argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not '{text}'") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, not {v}")
        return v
    parse.__name__ = f"int >= {low}"
    return parse


def _number(text: str, positive: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not '{text}'") from None
    if not (math.isfinite(v) and (v > 0 or not positive)):
        raise argparse.ArgumentTypeError(f"must be a finite number{' > 0' if positive else ''}, not {text}")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    return _number(text, False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, True)


def power_of_two(text: str) -> int:
    """argparse type: a power of two (an image resolution)."""
    v = int_at_least(1)(text)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two (8, 16, 32, 64, ...), not {v}")
    return v


def device(text: str) -> str:
    """argparse type: a torch device string (cpu, cuda, cuda:1) that exists here."""
    import torch
    try:
        d = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a device (cpu, cuda, cuda:1, ...)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is visible here (gankern info says why); use cpu")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """--threads N: torch's CPU threads (intra-op). The default 1 was the fastest for the small CPU jobs measured
    (DCGAN on digits: 2 threads were ~10x slower on a busy 2-core machine); OMP_NUM_THREADS, when set, is kept."""
    p.add_argument("--threads", type=int_at_least(1), metavar="N",
                   help="CPU threads for torch (default: $OMP_NUM_THREADS if set, else 1, the fastest for small "
                        "CPU jobs; raise it for large models on an idle many-core machine)")


def _set_threads(n: int | None) -> None:
    if n is None and "OMP_NUM_THREADS" in os.environ:
        return
    import torch
    torch.set_num_threads(n or 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gankern", description="gankern: fused GPU kernels and trainers for GANs.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in MODULES:
        importlib.import_module(module).add_parsers(sub)
    return p


def _log_to_stderr() -> None:
    """gankern's INFO lines to stderr (rank 0 only); other loggers keep WARNING. No-op where logging is set up."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("gankern").setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr()
    if hasattr(args, "threads"):
        _set_threads(args.threads)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
