"""Input checks shared by every op: raised in Python, before any kernel launch, naming the argument."""
from __future__ import annotations

from typing import Sequence

import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def tensor(name: str, t, *, ndim: int | Sequence[int] | None = None, dtypes: Sequence[torch.dtype] | None = FLOATS,
           device: torch.device | None = None, finite: bool = False) -> torch.Tensor:
    """Check that ``t`` is a tensor of the given rank, dtype and device; return it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({', '.join(str(d) for d in dtypes)}), got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    if finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values")
    return t


def same_device(**tensors: torch.Tensor) -> torch.device:
    """All tensors on one device; return it."""
    first = None
    for t in tensors.values():
        if first is None:
            first = t.device
        elif t.device != first:
            where = ", ".join(f"{k} on {v.device}" for k, v in tensors.items())
            raise ValueError(f"all inputs must be on one device: {where}")
    return first


def positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v
