"""Backend choice, `gankern info`, and the extension build."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import gankern
from gankern import _backend, _ext
from gankern.cli import main as cli_main


def test_use_backend_as_call_and_context():
    assert _backend.forced_backend() is None
    with gankern.use_backend("ref"):
        assert _backend.forced_backend() == "ref"
        with gankern.use_backend("triton"):
            assert _backend.forced_backend() == "triton"
        assert _backend.forced_backend() == "ref"
    assert _backend.forced_backend() is None
    gankern.use_backend("cuda")
    try:
        assert _backend.forced_backend() == "cuda"
        with gankern.use_backend("ref"):
            assert _backend.forced_backend() == "ref"
        assert _backend.forced_backend() == "cuda"
    finally:
        gankern.use_backend(None)
        _backend._forced[0] = None
    assert _backend.forced_backend() is None


def test_env_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv("GANKERN_BACKEND", "triton")
    assert _backend.forced_backend() == "triton"
    with gankern.use_backend(None):
        assert _backend.forced_backend() is None
    monkeypatch.setenv("GANKERN_BACKEND", "fast")
    with pytest.raises(ValueError, match="unknown gankern backend 'fast'"):
        _backend.forced_backend()


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="expected one of"):
        gankern.use_backend("numpy")


def test_default_on_cpu_is_ref_and_forced_unavailable_raises():
    assert _backend.select(torch.device("cpu"), torch.float32, ("cuda", "triton")) == "ref"
    with gankern.use_backend("cuda"):
        with pytest.raises(gankern.BackendUnavailable, match="cuda.*needs CUDA tensors"):
            _backend.select(torch.device("cpu"), torch.float32, ("cuda",))
    with gankern.use_backend("triton"):
        with pytest.raises(gankern.BackendUnavailable, match="bf16 is not supported by the Triton interpreter"):
            _backend.select(torch.device("cpu"), torch.bfloat16, ("triton",))


def test_simulation_lets_cuda_run_on_cpu_tensors_only_inside_the_context():
    assert _backend.unavailable_reason("cuda", torch.device("cpu")) is not None
    with _ext.simulate_cuda():
        assert _backend.unavailable_reason("cuda", torch.device("cpu")) is None
        mod, stream = _ext.cuda_module(torch.device("cpu"))
        assert mod.simulated and stream == 0
    with pytest.raises(RuntimeError, match="simulate_cuda"):
        _ext.cuda_module(torch.device("cpu"))


def test_info_explains_each_backend(capsys):
    d = gankern.info()
    assert set(d["backends"]) == {"ref", "triton", "cuda"}
    assert d["torch"] == torch.__version__
    if not torch.cuda.is_available():
        assert d["backends"]["cuda"].startswith("unavailable: ")
        assert "GPU" in d["backends"]["cuda"] or "not built" in d["backends"]["cuda"]
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out and "cuda" in out and "triton" in out
    assert cli_main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backends"] == d["backends"]


def test_cli_entry_point_runs_as_a_program():
    r = subprocess.run([sys.executable, "-m", "gankern", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "gankern._C" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# the build: CI compiles the CUDA sources with nvcc at install (install.sh) and must be able to import the result


def _nvcc():
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def test_cuda_extension_was_built_when_nvcc_is_present():
    info = _ext.build_info()
    assert info["sim"], "gankern._sim must always be built (tests execute the CUDA kernels through it)"
    if _nvcc() is None:
        assert not info["cuda"] and "nvcc not found" in info["reason"]
        pytest.skip("nvcc not found: no gankern._C to check (the build info's reason checked above)")
    assert info["cuda"], info
    import gankern._C as C
    assert C.simulated is False
    for name in ("sn_rows", "sn_cols", "sn_reduce", "sn_scale"):
        assert hasattr(C, name)


def test_cuda_launch_without_a_gpu_raises_an_error_naming_the_kernel():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks a machine with gankern._C and no GPU")
    if not _ext.build_info()["cuda"]:
        assert _nvcc() is None  # built without CUDA only where there is no nvcc
        pytest.skip("gankern._C was not built (no nvcc): no launch to check")
    import gankern._C as C
    with pytest.raises(RuntimeError, match="gankern kernel sn_reduce failed"):
        C.sn_reduce(0, 1, 0, 0, 1e-12, 0, 0, 0)


def test_cuda_binary_holds_sm80_and_sm90_code():
    info = _ext.build_info()
    if not info["cuda"]:
        assert _nvcc() is None  # built without CUDA only where there is no nvcc
        pytest.skip("gankern._C was not built (no nvcc): no binary to check")
    assert "80" in info["archs"] and "90" in info["archs"]
    import gankern._C as C
    with open(C.__file__, "rb") as f:
        blob = f.read()
    assert b"sm_80" in blob and b"sm_90" in blob
