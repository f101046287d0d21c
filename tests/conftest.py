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


# GPU tests compare a result in `dtype` with a float64 reference run on the same inputs (already rounded to dtype), so
# only the roundings inside the op count. Unit roundoff u = half the machine epsilon: one rounding to a dtype moves a
# value by at most u relative (fp32 2^-24, fp16 2^-11, bf16 2^-8).
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def gpu_rtol(dtype: torch.dtype, roundings: int, acc_len: int = 1) -> float:
    """The tolerance of a GPU result relative to the reference's scale (assert_close_scaled): ``roundings`` roundings
    to ``dtype`` on the way from the inputs to the result (outputs and intermediates stored in dtype, each <= u), an
    fp32 accumulation of ``acc_len`` terms (rounding errors of random sign grow as sqrt(n) u; 4 standard deviations
    taken) and 16 u(fp32) for the fp32 math functions (exp, tanh, rsqrt: a few ulp each)."""
    return roundings * UNIT_ROUNDOFF[dtype] + (4 * acc_len ** 0.5 + 16) * UNIT_ROUNDOFF[torch.float32]


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, rtol: float, msg: str = "") -> None:
    """|got - want| <= rtol * (|want| + max |want|) elementwise, got finite (want in float64). Relative to the
    largest element, not an absolute tolerance per dtype (which passes any value of a small-scaled output) nor
    elementwise alone (a sum that cancels to near 0 has no relative accuracy)."""
    assert torch.isfinite(got).all(), f"{msg}: non-finite values"
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=rtol * want.abs().max().item(),
                               msg=(lambda m: f"{msg}: {m}") if msg else None)
