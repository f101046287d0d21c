"""Shared test set-up. Without a GPU, Triton kernels run in the interpreter: TRITON_INTERPRET must be set before
any Triton kernel is defined, so before gankern is imported."""
import contextlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import gankern  # noqa: E402
from gankern import _ext  # noqa: E402

# The backends a CPU test runs: the reference, Triton through the interpreter, CUDA through the CPU simulation.
CPU_BACKENDS = ("ref", "triton", "cuda")


@contextlib.contextmanager
def backend_ctx(name: str):
    """Force ``name`` for the block; for ``cuda`` on the CPU, run the kernels through gankern._sim."""
    with contextlib.ExitStack() as stack:
        if name == "cuda" and not torch.cuda.is_available():
            stack.enter_context(_ext.simulate_cuda())
        stack.enter_context(gankern.use_backend(name))
        yield


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Parametrizes a test over every backend, with that backend forced for the test's body."""
    with backend_ctx(request.param):
        yield request.param


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN so that an element a kernel forgets to write fails the comparison."""
    return t.fill_(float("nan"))


def poison_allocator(nbytes: int) -> None:
    """NaN-fill free memory of the CUDA caching allocator (at least ``nbytes``), so that an output element a kernel
    does not write shows up in the comparison (GPU tests; outputs allocated inside the ops)."""
    torch.empty(nbytes // 4 + 4096, device="cuda").fill_(float("nan"))
