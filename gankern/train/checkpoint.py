"""Checkpoints: one ``ckpt-<step>.pt`` per save, written atomically (temp file, fsync, rename), the newest ``keep``
retained, loaded with ``torch.load(weights_only=True)`` (plain tensors, numbers, strings: no code runs at load)."""
from __future__ import annotations

import contextlib
import os
import re

import torch

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """[(step, path)] of the complete checkpoints in run_dir, oldest first (temp files are never listed)."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return sorted((int(m.group(1)), os.path.join(run_dir, n)) for n in names if (m := _NAME.match(n)))


def save(state: dict, path: str) -> str:
    """Write ``state`` (a dict of state_dicts, tensors and numbers) to path atomically."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):              # make the rename durable (not possible on every file system)
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return path


def save_step(state: dict, run_dir: str, step: int, keep: int) -> str:
    """Save the checkpoint of ``step`` and delete all but the newest ``keep`` checkpoints."""
    p = save(state, os.path.join(run_dir, f"ckpt-{step:08d}.pt"))
    for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        os.remove(old)
    return p


def load(path: str, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing code (weights_only=True)."""
    return torch.load(path, map_location=device, weights_only=True)


def latest(run_dir: str) -> str | None:
    """Path of the newest complete checkpoint in run_dir, or None (temp files of a killed save are removed)."""
    for n in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        if n.startswith(".ckpt-") and ".pt.tmp" in n:
            os.remove(os.path.join(run_dir, n))
    return (list_checkpoints(run_dir) or [(0, None)])[-1][1]


def load_newest(run_dir: str, device: str | torch.device = "cpu") -> tuple[str, dict, list[str]]:
    """(path, state, skipped) of the newest checkpoint of run_dir that loads; ``skipped`` names each newer one that
    did not (truncated or corrupt), with the reason. FileNotFoundError if there is none, ValueError if none loads."""
    latest(run_dir)                                    # removes the temp files of a killed save
    skipped = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path, device), skipped
        except Exception as e:                         # torch.load raises RuntimeError, EOFError, UnpicklingError...
            why = str(e).strip().split("\n")[0][:200]
            skipped.append(f"{path} is unreadable ({type(e).__name__}: {why})")
    if not skipped:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (ckpt-*.pt) to resume from or load")
    raise ValueError(f"{run_dir}: no checkpoint loads: " + "; ".join(skipped))
