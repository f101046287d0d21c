"""The ``gankern`` command: ``gankern info | train | generate | project | fid | bench | steer`` (``--help`` on each).

Each row of MODULES is a module that defines ``add_parsers(subparsers)``: it adds its subcommand(s), each with
``set_defaults(func=...)`` taking the parsed args and returning an exit code. gankern's log lines (logger
``gankern``, e.g. what a data set was read as) go to stderr, from rank 0 only under torchrun.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

MODULES = [
    "gankern._info_cli",      # info
    "gankern._bench_cli",     # bench
    "gankern.metrics.cli",    # fid
    "gankern.train.cli",      # train, generate
    "gankern._steer_cli",     # steer
    "gankern.train.recipes.stylegan2",  # project, and S2A's options of generate (so after gankern.train.cli)
]


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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
