"""`gankern info`: versions, the GPU, and each backend with the reason it is unavailable."""
from __future__ import annotations

import platform

import torch

from . import _backend, _ext


def info() -> dict:
    """A dict of versions, device and backend status (also printed by ``gankern info``)."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    build = _ext.build_info()
    return {
        "gankern": __import__("gankern").__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "extension": {"built_with_cuda": bool(build.get("cuda")), "cuda_archs": build.get("archs"),
                      "note": build.get("reason"), "cpu_simulation_built": bool(build.get("sim"))},
        "backends": _backend.status(),
        "forced_backend": _backend.forced_backend(),
    }


def format_info(d: dict) -> str:
    lines = [f"gankern {d['gankern']}  (python {d['python']}, torch {d['torch']}, CUDA {d['torch_cuda'] or 'none'}, "
             f"triton {d['triton'] or 'not installed'})",
             f"GPU: {d['gpu'] or 'none visible'}"]
    ext = d["extension"]
    lines.append("gankern._C: " + (f"built for {ext['cuda_archs']}" if ext["built_with_cuda"] else f"not built ({ext['note']})"))
    lines.append("gankern._sim (CPU simulation of the CUDA kernels, for tests): "
                 + ("built" if ext["cpu_simulation_built"] else "not built"))
    lines.append("backends:")
    for name, s in d["backends"].items():
        lines.append(f"  {name:7s} {s}")
    if d["forced_backend"]:
        lines.append(f"forced backend: {d['forced_backend']}")
    else:
        lines.append("default: the fastest available backend per op on CUDA tensors; ref on CPU tensors")
    return "\n".join(lines)
