"""What every family's cuda backend needs to call a launcher of gankern._C / gankern._sim."""
from __future__ import annotations

import torch

from .. import _ext

# gk::DType in csrc/include/gankern/cuda_compat.h
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
CUDA_DTYPES = tuple(DTYPE_CODES)


def ptr(t: torch.Tensor | None) -> int:
    """The address of a tensor's first element (0 for None)."""
    return 0 if t is None else t.data_ptr()


def module_and_stream(device: torch.device):
    """(launcher module, stream int) for tensors on ``device``: gankern._C on the current CUDA stream, or the
    simulation on CPU tensors in tests."""
    return _ext.cuda_module(device)
