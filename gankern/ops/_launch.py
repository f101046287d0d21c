"""What every family's cuda backend needs to call a launcher of gankern._C / gankern._sim."""
from __future__ import annotations

from typing import Callable

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


_EAGER_TYPES = (torch.Tensor, torch.nn.Parameter)


def traced(*args) -> bool:
    """True under torch.compile / export, or when a tensor argument (or one in a list argument) is a tracer's
    subclass (e.g. AOT autograd's fake / functional tensors): then ops must go through their torch.library op."""
    if torch.compiler.is_compiling():
        return True
    for a in args:
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, torch.Tensor) and type(t) not in _EAGER_TYPES:
                return True
    return False


def fused_op(name: str, impl: Callable, fake: Callable, setup: Callable, backward: Callable) -> Callable:
    """Register ``impl`` as the torch.library custom op ``gankern::<name>`` (with ``fake`` and the autograd formula
    ``setup`` / ``backward`` of ``register_autograd``) and return the function the family calls: the custom op while
    torch.compile traces (so graphs go through it), and in eager mode an autograd.Function with the same impl and
    backward, because the custom op's dispatch costs several times more per call (about 38 us against 7 us with
    inputs that require grad, measured on the CPU here; GPU.md: ~10 us). A call counts as traced under torch.compile
    / export or when a tensor argument is a tracer's subclass (e.g. AOT autograd's fake tensors). Shared by
    the families."""
    op = torch.library.custom_op(f"gankern::{name}", impl, mutates_args=())
    op.register_fake(fake)
    op.register_autograd(backward, setup_context=setup)

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            out = impl(*args)
            setup(ctx, args, out)
            return out

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    Eager.__name__ = Eager.__qualname__ = f"{name}_eager"

    def call(*args):
        return op(*args) if traced(*args) else Eager.apply(*args)

    call.op = op
    return call


def s2a_impl(impl) -> str | None:
    """StyleGAN2-ADA's ``impl=`` argument of its ops: "ref" (its reference path: gankern's ref twin), "cuda" (its
    fast path: gankern's default choice, which honours GANKERN_BACKEND / use_backend) or None (the default)."""
    if impl not in (None, "ref", "cuda"):
        raise ValueError(f"impl must be 'cuda', 'ref' or None (StyleGAN2-ADA's values), got {impl!r}")
    return impl
