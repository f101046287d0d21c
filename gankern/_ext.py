"""The compiled CUDA module ``gankern._C`` (built at install by CMake when nvcc is found) and its CPU twin
``gankern._sim``: the same kernel sources compiled by the host compiler against csrc/sim/cuda_sim.h, used by the
tests to execute every CUDA kernel on the CPU. Nothing here compiles anything.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from typing import Iterator

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_simulating = False
# The simulation module the cuda backend runs CPU tensors through: gankern._sim, or gankern._sim_asan (built with
# GANKERN_SIM_SANITIZED=1; the process needs libasan preloaded) to run the tests under AddressSanitizer + UBSan.
_SIM = os.environ.get("GANKERN_SIM_MODULE", "_sim")


def build_info() -> dict:
    """What the install built: {'cuda': bool, 'reason': str, 'archs': str} (written by setup.py)."""
    try:
        with open(os.path.join(_HERE, "_build.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"cuda": False, "sim": False, "reason": "gankern was not installed with setup.py (no _build.json)"}


def _import(name: str):
    try:
        return importlib.import_module(f"gankern.{name}"), None
    except ImportError as e:
        return None, str(e)


_CUDA_REASON: list[str | None] = []  # decided once per process (a plain list, traceable by torch.compile)


def cuda_reason() -> str | None:
    """Why the cuda backend cannot run on this machine, or None (decided once per process)."""
    if not _CUDA_REASON:
        _CUDA_REASON.append(_cuda_reason())
    return _CUDA_REASON[0]


def _cuda_reason() -> str | None:
    info = build_info()
    if not info.get("cuda"):
        return f"gankern._C was not built: {info.get('reason', 'unknown')}"
    mod, err = _import("_C")
    if mod is None:
        return f"gankern._C does not import: {err}"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def simulating() -> bool:
    return _simulating


@contextlib.contextmanager
def simulate_cuda() -> Iterator[None]:
    """Run the cuda backend on CPU tensors through ``gankern._sim`` (tests only)."""
    global _simulating
    mod, err = _import(_SIM)
    if mod is None:
        raise RuntimeError(f"gankern.{_SIM} (the CPU simulation of the CUDA kernels) does not import: {err}")
    prev, _simulating = _simulating, True
    try:
        yield
    finally:
        _simulating = prev


def cuda_module(device: torch.device):
    """The module whose launchers run the CUDA kernels for tensors on ``device``, and the stream to pass."""
    if device.type == "cpu":
        if not _simulating:
            raise RuntimeError("CUDA kernels on CPU tensors run only under gankern._ext.simulate_cuda()")
        return _module(_SIM), 0
    return _module("_C"), torch.cuda.current_stream(device).cuda_stream


_MODULES: dict = {}  # name -> imported module (cuda_module runs on every launch: no import machinery per call)


def _module(name: str):
    mod = _MODULES.get(name) or sys.modules.get(f"gankern.{name}")
    if mod is None:
        mod, err = _import(name)
        if mod is None:
            raise RuntimeError(f"gankern.{name} does not import: {err}")
    _MODULES[name] = mod
    return mod
