"""Backend choice: ``ref`` (eager PyTorch), ``triton`` (gankern/kernels) and ``cuda`` (gankern._C).

Every op family asks :func:`select` which backend runs a call. The default is the first backend of the family's
preference list that can run the call (device, dtype); a backend forced with ``GANKERN_BACKEND=...`` or
:func:`use_backend` that cannot run raises :class:`BackendUnavailable` with the reason. Nothing falls back silently.

CPU tensors run ``ref`` by default. Tests also run the kernels on CPU tensors: Triton kernels through the Triton
interpreter (``TRITON_INTERPRET=1`` set before gankern is imported) and CUDA kernels through the CPU simulation of
the CUDA execution model (``gankern._sim``, enabled by :func:`gankern._ext.simulate_cuda`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Sequence

import torch

from . import _ext

BACKENDS = ("ref", "triton", "cuda")

# The forced backend (a plain module-level list, so that torch.compile can trace the choice); None: default choice.
_forced: list[str | None] = [None]
_UNSET = object()


class BackendUnavailable(RuntimeError):
    """A backend was asked for and cannot run this call; the message says why."""


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown gankern backend {name!r}; expected one of {BACKENDS}")
    return name


class use_backend:
    """Force a backend: ``gankern.use_backend("triton")`` from now on, or ``with gankern.use_backend("ref"): ...``
    for a block (the previous choice comes back at its end; blocks nest). ``None`` returns to the default choice
    and overrides ``GANKERN_BACKEND``."""

    def __init__(self, name: str | None):
        self._previous = _forced[0]
        _forced[0] = _UNSET if name is None else _check_name(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _forced[0] = self._previous
        return False


def forced_backend() -> str | None:
    """The backend forced by :func:`use_backend` or, failing that, by ``GANKERN_BACKEND``; else None."""
    if _forced[0] is _UNSET:
        return None
    if _forced[0] is not None:
        return _forced[0]
    env = os.environ.get("GANKERN_BACKEND", "").strip()
    return _check_name(env) if env else None


def triton_interpreted() -> bool:
    """True when Triton kernels run in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_TRITON_REASON: list[str | None] = []  # decided once per process (a plain list, traceable by torch.compile)


def triton_reason() -> str | None:
    """Why Triton cannot run at all here, or None (decided once per process)."""
    if not _TRITON_REASON:
        _TRITON_REASON.append(_triton_reason())
    return _TRITON_REASON[0]


def _triton_reason() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - triton is a dependency on Linux
        return f"triton is not installed ({e})"
    if not triton_interpreted() and not torch.cuda.is_available():
        return "triton needs a CUDA GPU (or TRITON_INTERPRET=1 to run kernels on the CPU interpreter)"
    return None


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype | None = None,
                       dtypes: Sequence[torch.dtype] | None = None) -> str | None:
    """Why backend ``name`` cannot run a call on ``device`` with ``dtype``; None when it can."""
    if name == "ref":
        return None
    if dtypes is not None and dtype is not None and dtype not in dtypes:
        return f"the {name} kernels of this op take {', '.join(str(d) for d in dtypes)}, not {dtype}"
    if name == "triton":
        reason = triton_reason()
        if reason:
            return reason
        if device.type == "cpu" and not triton_interpreted():
            return "a CPU tensor reaches the triton backend only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return f"triton kernels run on CUDA tensors, not {device.type}"
        if triton_interpreted() and dtype == torch.bfloat16:
            return "bf16 is not supported by the Triton interpreter (test bf16 on a GPU)"
        return None
    if name == "cuda":
        if device.type == "cpu":
            return None if _ext.simulating() else "the cuda backend needs CUDA tensors (this tensor is on the CPU)"
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors, not {device.type}"
        return _ext.cuda_reason()
    raise ValueError(name)


_CHOICE: dict = {}  # (device, dtype, preference, dtypes id, forced, simulating) -> backend or the error's text


def select(device: torch.device, dtype: torch.dtype | None, preference: Iterable[str],
           dtypes: dict[str, Sequence[torch.dtype]] | None = None) -> str:
    """The backend that runs one call (decided once per device, dtype, family and forced backend; TRITON_INTERPRET
    and the installed extension are read once per process).

    Args:
        device, dtype: of the call's main tensor.
        preference: the family's fast backends, fastest first, a tuple (``ref`` is always last and always able).
        dtypes: per backend, the dtypes its kernels take (absent: any); a module-level constant of the family.
    """
    forced = forced_backend()
    if torch.compiler.is_compiling():
        return _select(device, dtype, preference, dtypes, forced)
    key = (device, dtype, preference, id(dtypes), forced, _ext._simulating)
    choice = _CHOICE.get(key)
    if choice is None:
        try:
            choice = _select(device, dtype, preference, dtypes, forced)
        except BackendUnavailable as e:
            choice = e
        _CHOICE[key] = choice
    if isinstance(choice, BackendUnavailable):
        raise BackendUnavailable(*choice.args)
    return choice


def _select(device, dtype, preference, dtypes, forced) -> str:
    dtypes = dtypes or {}
    if forced is not None:
        reason = unavailable_reason(forced, device, dtype, dtypes.get(forced))
        if reason is not None:
            raise BackendUnavailable(f"gankern backend {forced!r} was asked for but cannot run: {reason}")
        return forced
    if device.type == "cpu":
        return "ref"  # interpreter and simulation are for tests, which force the backend
    for name in preference:
        if unavailable_reason(name, device, dtype, dtypes.get(name)) is None:
            return name
    return "ref"


def status() -> dict[str, str]:
    """Each backend: 'available' or the reason it is not (for a CUDA tensor on this machine)."""
    out = {"ref": "available (eager PyTorch, any device)"}
    r = triton_reason()
    out["triton"] = "available" if r is None else f"unavailable: {r}"
    r = _ext.cuda_reason()
    out["cuda"] = "available" if r is None else f"unavailable: {r}"
    return out

