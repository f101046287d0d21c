"""What every family's cuda backend needs to call a launcher of gankern._C / gankern._sim."""
from __future__ import annotations

import functools
import importlib
import inspect
import operator
from typing import Callable

import torch

from .. import _ext

# gk::DType in csrc/include/gankern/cuda_compat.h
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
CUDA_DTYPES = tuple(DTYPE_CODES)


@functools.cache
def kernels(family: str):
    """gankern.kernels.<family>, imported at its first use (TRITON_INTERPRET must be set before the kernels are
    defined), then a dict lookup per launch."""
    return importlib.import_module(f"gankern.kernels.{family}")


def ptr(t: torch.Tensor | None) -> int:
    """The address of a tensor's first element (0 for None)."""
    return 0 if t is None else t.data_ptr()


def module_and_stream(device: torch.device):
    """(launcher module, stream int) for tensors on ``device``: gankern._C on the current CUDA stream, or the
    simulation on CPU tensors in tests."""
    return _ext.cuda_module(device)


_EAGER_TYPES = (torch.Tensor, torch.nn.Parameter)


# every op registered through fused_op: name -> the function the family calls (tests check that all of gankern's
# torch.library ops are here, i.e. that there is one way to register an op)
REGISTRY: dict[str, Callable] = {}

_TRACED, _NO_GRAD, _GRAD = 0, 1, 2


def _tensor_params(impl: Callable) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(positions of tensor arguments, positions of tensor-list arguments) of impl, from its annotations (the same
    annotations torch.library reads for the op's schema)."""
    tensors, lists = [], []
    for i, p in enumerate(inspect.signature(impl).parameters.values()):
        ann = p.annotation if isinstance(p.annotation, str) else str(p.annotation)
        if "Tensor" in ann:
            (lists if ann.replace(" ", "").startswith(("list[", "List[", "Sequence[")) else tensors).append(i)
    return tuple(tensors), tuple(lists)


def fused_op(name: str, impl: Callable, fake: Callable, setup: Callable | None = None,
             backward: Callable | None = None, mutates_args: tuple[str, ...] = (),
             aux_outputs: int = 0) -> Callable:
    """The one way gankern registers an op: ``impl`` becomes the torch.library custom op ``gankern::<name>`` (with
    ``fake``, and the autograd formula ``setup`` / ``backward`` of ``register_autograd`` when given), and the
    returned function is what the family calls:

    - under torch.compile / export, or with a tracer's tensor subclass among the arguments (AOT autograd's fake
      tensors): the custom op, so that graphs go through it;
    - in eager mode with an input that requires grad (and grad mode on): an autograd.Function with the same impl,
      setup and backward, because the custom op's dispatch costs several times more per call (about 38 us against
      7 us with inputs that require grad, measured on the CPU; GPU.md: ~10 us);
    - in eager mode otherwise: ``impl`` itself (no autograd node to build).

    Tensor-list arguments (``list[torch.Tensor]``) reach the autograd.Function unpacked, so that autograd sees their
    elements; ``backward`` returns one list of gradients for such an argument, as register_autograd wants.
    ``aux_outputs``: the op's last outputs that only carry statistics to the backward (which ignores their
    gradients, getting None for them from the eager Function); the eager Function returns them through a list,
    not as outputs, which saves autograd's bookkeeping of two outputs and their zero gradients (about 3 us per
    forward and backward, measured on the CPU). The returned function carries the custom op as ``.op``."""
    op = torch.library.custom_op(f"gankern::{name}", impl, mutates_args=mutates_args)
    op.register_fake(fake)
    tensor_pos, list_pos = _tensor_params(impl)
    eager_types = _EAGER_TYPES
    is_compiling = torch.compiler.is_compiling
    grad_enabled = torch.is_grad_enabled

    tensors_of = _getter(tensor_pos)

    def mode(args) -> int:
        """_TRACED, _GRAD (eager, an input requires grad) or _NO_GRAD."""
        if is_compiling():
            return _TRACED
        need = False
        for t in tensors_of(args):
            if t is not None:
                if type(t) not in eager_types:
                    return _TRACED
                if not need and t.requires_grad:
                    need = True
        for i in list_pos:
            for t in args[i]:
                if type(t) not in eager_types:
                    return _TRACED
                need = need or t.requires_grad
        return _GRAD if need and grad_enabled() else _NO_GRAD

    if backward is None:  # no autograd node either way: only tracing decides
        def call(*args):
            if is_compiling():
                return op(*args)
            for t in tensors_of(args):
                if t is not None and type(t) not in eager_types:
                    return op(*args)
            for i in list_pos:
                for t in args[i]:
                    if type(t) not in eager_types:
                        return op(*args)
            return impl(*args)
    else:
        op.register_autograd(backward, setup_context=setup)
        if aux_outputs:
            if list_pos:
                raise ValueError(f"{name}: aux_outputs with tensor-list arguments is not supported")
            no_grads = (None,) * aux_outputs

            def forward(ctx, aux, *args):
                out = impl(*args)
                setup(ctx, args, out)
                aux += out[1:]
                return out[0]

            def eager_backward(ctx, grad):
                ctx.needs_input_grad = ctx.needs_input_grad[1:]  # the op's arguments, without aux
                return None, *backward(ctx, grad, *no_grads)

            Eager = _function(name, forward, eager_backward)

            def call(*args):
                m = mode(args)
                if m != _GRAD:
                    return impl(*args) if m == _NO_GRAD else op(*args)
                aux = []
                return Eager.apply(aux, *args), *aux
        elif not list_pos:
            def forward(ctx, *args):
                out = impl(*args)
                setup(ctx, args, out)
                return out

            Eager = _function(name, forward, backward)

            def call(*args):
                m = mode(args)
                return impl(*args) if m == _NO_GRAD else Eager.apply(*args) if m == _GRAD else op(*args)
        else:
            def forward(ctx, lens, *flat):
                args = _unflatten(flat, lens, list_pos)
                out = impl(*args)
                setup(ctx, args, out)
                ctx.lens = lens
                return out

            def eager_backward(ctx, *grads):
                flat = [None]  # lens
                for i, gi in enumerate(backward(ctx, *grads)):
                    if i in list_pos:
                        flat += [None] * ctx.lens[list_pos.index(i)] if gi is None else gi
                    else:
                        flat.append(gi)
                return tuple(flat)

            Eager = _function(name, forward, eager_backward)

            def call(*args):
                m = mode(args)
                if m != _GRAD:
                    return impl(*args) if m == _NO_GRAD else op(*args)
                flat = []
                for i, a in enumerate(args):
                    if i in list_pos:
                        flat += a
                    else:
                        flat.append(a)
                return Eager.apply(tuple(len(args[i]) for i in list_pos), *flat)

    call.op = op
    call.__name__ = call.__qualname__ = name
    REGISTRY[name] = call
    return call


def _getter(positions: tuple[int, ...]) -> Callable[[tuple], tuple]:
    """args -> the tuple of args at positions (one C call for several)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        i = positions[0]
        return lambda args: (args[i],)
    return lambda args: ()


def _function(name: str, forward: Callable, backward: Callable) -> type[torch.autograd.Function]:
    """The autograd.Function ``<name>_eager`` (its graph nodes read ``<name>_eagerBackward``)."""
    return type(torch.autograd.Function)(f"{name}_eager", (torch.autograd.Function,),
                                         {"forward": staticmethod(forward), "backward": staticmethod(backward)})


def _unflatten(flat: tuple, lens: tuple[int, ...], list_pos: tuple[int, ...]) -> list:
    """The op's arguments from the autograd.Function's flat ones (tensor lists regrouped, of lengths lens)."""
    args, k = [], 0
    for i in range(len(flat) - sum(lens) + len(lens)):
        if i in list_pos:
            n = lens[list_pos.index(i)]
            args.append(list(flat[k:k + n]))
            k += n
        else:
            args.append(flat[k])
            k += 1
    return args


def s2a_impl(impl) -> str | None:
    """StyleGAN2-ADA's ``impl=`` argument of its ops: "ref" (its reference path: gankern's ref twin), "cuda" (its
    fast path: gankern's default choice, which honours GANKERN_BACKEND / use_backend) or None (the default)."""
    if impl not in (None, "ref", "cuda"):
        raise ValueError(f"impl must be 'cuda', 'ref' or None (StyleGAN2-ADA's values), got {impl!r}")
    return impl
