"""Read the data in other projects' network pickles without running any code stored in them.

A pickle names functions and classes that ``pickle.load`` imports and calls; StyleGAN2-ADA's (S2A's) network
pickles even carry the source of their classes, which its ``persistence`` module executes at load. :func:`load`
instead rebuilds only:
- tensors and parameters (their storages are read by ``torch.load(weights_only=True)``, torch's own restricted
  loader), plain containers (dict, list, tuple, set, OrderedDict, dnnlib's EasyDict as a dict), numpy scalars of
  numeric dtypes;
- S2A's persistent objects as :class:`PersistentStub`: the class name, its module's source kept as text (never
  run), and the object's state (constructor arguments, parameters, buffers, child modules).
Any other global the pickle asks for is refused with :class:`RefusedGlobal`, which names it, before anything is
called.
"""
from __future__ import annotations

import collections
import io
import pickle
import warnings
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["RefusedGlobal", "PersistentStub", "EasyDict", "load"]


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the list of safe data constructors."""


class EasyDict(dict):
    """dnnlib's EasyDict, read as a plain dict."""


class PersistentStub:
    """An object of a class decorated with S2A's ``persistence.persistent_class``, as data.

    Attributes: class_name, module_src (the source text the pickle carries; not run), version, state (the
    object's ``__dict__``: for a torch module ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``,
    ``_init_kwargs``, ...).
    """

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str) \
                or not isinstance(meta.get("state"), dict):
            raise pickle.UnpicklingError("a persistent object without S2A's layout (type 'class', class_name, "
                                         "state)")
        self.class_name: str = meta["class_name"]
        self.module_src: str = meta.get("module_src", "")
        self.version = meta.get("version")
        self.state: dict = meta["state"]

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The module's state_dict as torch builds it: parameters and persistent buffers, children recursively."""
        out = {}
        skip = self.state.get("_non_persistent_buffers_set", set())
        for kind in ("_parameters", "_buffers"):
            for name, t in (self.state.get(kind) or {}).items():
                if t is not None and name not in skip:
                    out[prefix + name] = t
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentStub):
                out.update(child.tensors(f"{prefix}{name}."))
            elif child is not None:
                raise pickle.UnpicklingError(f"module {prefix}{name} of {self.class_name} is a "
                                             f"{type(child).__name__}, not a persistent S2A module")
        return out

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None) -> torch.Tensor:
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor's storage must be a torch storage, got {type(storage).__name__}")
    with warnings.catch_warnings():  # torch's deprecation note on TypedStorage: the pickle's format, not ours
        warnings.simplefilter("ignore", UserWarning)
        untyped = storage.untyped()
    return torch.empty((0,), dtype=storage.dtype).set_(untyped, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter's data must be a tensor, got {type(data).__name__}")
    return data


def _load_storage(data: bytes) -> torch.TypedStorage:
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a storage must be given as bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError(f"the bytes of a storage hold a {type(storage).__name__}")
    return storage


def _numpy_dtype(obj, align=False, copy=False) -> np.dtype:
    if not isinstance(obj, str) or np.dtype(obj).kind not in "biufc":
        raise pickle.UnpicklingError(f"only numeric numpy dtypes are read, not {obj!r}")
    return np.dtype(obj)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only numeric numpy scalars are read")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentStub,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        fn = SAFE_GLOBALS.get((module, name))
        if fn is None:
            hint = (" (a TensorFlow StyleGAN pickle: only PyTorch pickles of stylegan2-ada-pytorch are read)"
                    if module.startswith("dnnlib.tflib") else "")
            raise RefusedGlobal(f"refusing to load the global '{module}.{name}' that the pickle asks for: only "
                                f"tensors, plain containers and S2A's persistent objects are read, no code is "
                                f"run{hint}")
        return fn

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} (a torch.save zip file? load it with "
                                     f"torch.load(weights_only=True))")


def load(f: BinaryIO) -> Any:
    """Unpickle ``f`` (a binary file object) with the restricted rules above."""
    return _Unpickler(f).load()
