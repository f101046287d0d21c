"""The ahead-of-time compile for sm_90 (gankern/_aot.py, run by CI as ``python -m gankern._aot check``) must catch
each budget breach when one is planted: spills, shared memory over 227 KiB, a compile error only the GPU compiler
sees, local memory in a CUDA kernel, registers x threads over 64K, a grid over 65535 in y; and the committed
baseline must cover every kernel of gankern within the budgets."""
import glob
import json
import os
import subprocess
import sys
import types

import pytest
import torch

import gankern
from gankern import _aot

PLANTED_TRITON = '''
import triton
import triton.language as tl


@triton.jit
def spill_kernel(x, y, R: tl.constexpr, C: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    v = tl.load(x + offs)  # the whole tile live in one warp across the reduction
    tl.store(y + offs, v / tl.sum(v, axis=1)[:, None])


@triton.jit
def dot_kernel(a, b, c, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr):
    rm = tl.arange(0, M)
    rn = tl.arange(0, N)
    rk = tl.arange(0, K)
    acc = tl.zeros([M, N], dtype=tl.float32)
    for k in range(0, 4096, K):
        acc += tl.dot(tl.load(a + rm[:, None] * 4096 + (k + rk)[None, :]),
                      tl.load(b + (k + rk)[:, None] * N + rn[None, :]))
    tl.store(c + rm[:, None] * N + rn[None, :], acc)
'''

PLANTED_CUDA = '''
__global__ void local_kernel(const float* x, float* y, int k) {
  float a[64];  // indexed at run time: lives in local memory
  for (int i = 0; i < 64; ++i) a[i] = x[i * blockDim.x + threadIdx.x];
  for (int i = 0; i < 64; ++i) a[(i * k) & 63] += a[i];
  y[threadIdx.x] = a[k & 63];
}
__global__ void smem_kernel(float* y) {
  __shared__ float s[64 * 1024];  // 256 KiB
  s[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
'''

SPILL = {"kernel": "aot_planted.spill_kernel", "args": {"x": "T:float32", "y": "T:float32", "R": 32, "C": 256},
         "options": {"num_warps": 1}}
SMEM = {"kernel": "aot_planted.dot_kernel", "options": {"num_warps": 4, "num_stages": 4},
        "args": {"a": "T:float16", "b": "T:float16", "c": "T:float32", "M": 128, "N": 128, "K": 128}}
DOT_K8 = {"kernel": "aot_planted.dot_kernel", "options": {"num_warps": 1},
          "args": {"a": "T:float16", "b": "T:float16", "c": "T:float32", "M": 16, "N": 16, "K": 8}}


# Defects the baseline records and the check tolerates until they get worse (each one reported to its owner).
KNOWN_DEFECTS: dict[str, str] = {}  # kernel -> a budget breach the baseline may hold until it is fixed (none now)


def _compile_planted_triton(tmp_path, specs, arch=_aot.ARCH):
    """Compiles specs of the planted module in a process without the interpreter (the tests run under it)."""
    (tmp_path / "aot_planted.py").write_text(PLANTED_TRITON)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), _aot.ROOT, env.get("PYTHONPATH", "")])
    code = f"import json, gankern._aot as a; print(json.dumps([a.compile_triton(s, {arch}) for s in {specs!r}]))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _clean(row):
    """The baseline entry of a kernel without the planted defect."""
    return dict(row, spills=0, stack=0, smem=0, regs=32)


def test_planted_triton_breaches_are_caught(tmp_path):
    spill, smem, k8 = _compile_planted_triton(tmp_path, [SPILL, SMEM, DOT_K8])
    assert spill["spills"] > 0 and spill["stack"] > 0, spill
    assert smem["smem"] > _aot.SMEM_LIMIT, smem
    assert "K >= 16" in k8["error"], k8  # the interpreter runs it; the GPU compiler refuses
    problems = _aot.compare([spill, smem, k8], {"kernels": [_clean(spill), _clean(smem)]})
    assert any("spill_kernel" in p and "bytes of spills" in p for p in problems), problems
    assert any("dot_kernel" in p and "shared memory per block" in p for p in problems), problems
    assert any("dot_kernel" in p and "compile error" in p and "K >= 16" in p for p in problems), problems
    # a kernel whose spills the baseline already records (a known defect) passes until it gets worse
    assert not _aot.compare([spill], {"kernels": [spill]})


def test_shared_memory_that_fits_sm_90_but_not_sm_80_is_caught(tmp_path):
    """Four stages of 128 x 128 fp16 tiles of A and B: for sm_80, three buffers of 64 KiB, 192 KiB: within sm_90's
    227 KiB, over A100's 163 KiB."""
    (row,) = _compile_planted_triton(tmp_path, [SMEM], arch=80)
    assert row["arch"] == 80 and _aot.SMEM_LIMITS[80] < row["smem"] <= _aot.SMEM_LIMITS[90], row
    assert any("(sm_80)" in p and "over the 166912 of sm_80" in p for p in _aot.compare([row], {"kernels": []}))
    assert not _aot.budget_problems(dict(row, arch=90))


def test_planted_cuda_breaches_are_caught(tmp_path):
    nvcc = _aot._nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA half of the AOT check cannot run here")
    good, bad = tmp_path / "local.cu", tmp_path / "smem.cu"
    good.write_text(PLANTED_CUDA.split("__global__ void smem_kernel")[0])
    bad.write_text("__global__ void smem_kernel" + PLANTED_CUDA.split("__global__ void smem_kernel")[1])
    rows = _aot.compile_cuda(str(good), nvcc)
    assert len(rows) == 1 and rows[0]["kernel"].endswith(":local_kernel") and rows[0]["stack"] > 0, rows
    problems = _aot.compare(rows, {"kernels": [_clean(rows[0])]})
    assert any("local_kernel" in p and "bytes of stack" in p for p in problems), problems
    rows = _aot.compile_cuda(str(bad), nvcc)
    assert "error" in rows[0] and "shared" in rows[0]["error"], rows
    assert any("compile error" in p for p in _aot.compare(rows, {"kernels": []}))


def test_registers_times_threads_and_register_growth_are_caught():
    row = {"kernel": "k", "spec": "s", "regs": 128, "spills": 0, "stack": 0, "smem": 0, "threads": 1024}
    assert any("registers x 1024 threads" in p for p in _aot.budget_problems(row))
    assert not _aot.budget_problems(dict(row, threads=512))
    row = dict(row, threads=256)
    assert not _aot.compare([row], {"kernels": [dict(row, regs=128 - _aot.REG_SLACK)]})
    problems = _aot.compare([row], {"kernels": [dict(row, regs=127 - _aot.REG_SLACK)]})
    assert any("128 registers (baseline" in p for p in problems), problems
    assert any("not in the baseline" in p for p in _aot.compare([row], {"kernels": []}))
    other_spec = dict(row, spec="s2")      # a new specialization of a known kernel: held to the kernel's worst row
    assert not _aot.compare([other_spec], {"kernels": [dict(row, regs=128 - _aot.REG_SLACK)]})
    assert any("128 registers" in p for p in _aot.compare([other_spec], {"kernels": [dict(row, regs=100)]}))
    assert any("spills" in p for p in _aot.compare([dict(other_spec, spills=8)], {"kernels": [row]}))
    known = {"kernel": "k", "spec": "s", "error": "RuntimeError: PassManager::run failed"}
    assert not _aot.compare([known], {"kernels": [known]})
    assert any("compiles now" in p for p in _aot.compare([row], {"kernels": [known]}))


def test_a_grid_over_65535_in_y_is_caught():
    def some_kernel(x, n, BLOCK):
        pass
    some_kernel.__annotations__["BLOCK"] = "tl.constexpr"
    kernel = types.SimpleNamespace(fn=some_kernel)
    spec, problems = _aot.describe_launch(kernel, (torch.zeros(4), 5), {"BLOCK": 64}, (4, 70000))
    assert problems and "grid (4, 70000, 1)" in problems[0]
    assert spec["args"] == {"x": "T:float32", "n": "i32", "BLOCK": 64}
    assert not _aot.describe_launch(kernel, (torch.zeros(4), 1), {"BLOCK": 64}, lambda a: (a["n"], 65535))[1]


def test_recorder_sees_the_launches_of_an_op():
    if not gankern._backend.triton_interpreted():
        pytest.skip("recording runs under the Triton interpreter (CPU test runs)")
    x, b = torch.randn(2, 3, 5), torch.randn(3)
    with _aot.Recorder(stub=True) as rec, gankern.use_backend("triton"):
        gankern.ops.bias_act(x, b)
    (spec,) = rec.specs.values()
    assert spec["kernel"] == "gankern.kernels.modulation.bias_act_kernel"
    assert spec["args"]["x"] == "T:float32" and spec["args"]["HAS_B"] is True


def test_baseline_covers_every_kernel_within_the_budgets():
    with open(_aot.BASELINE) as f:
        baseline = json.load(f)
    compiled = {r["kernel"] for r in baseline["kernels"]}
    missing = [k for k in _aot.triton_kernels() if k not in compiled]
    assert not missing, f"kernels with no compiled specialization in {_aot.BASELINE}: {missing}"
    cu = {os.path.relpath(p, _aot.ROOT) for p in glob.glob(os.path.join(_aot.ROOT, "csrc", "*.cu"))}
    for arch in _aot.ARCHS:  # every kernel and CUDA source compiled for every target
        rows = [r for r in baseline["kernels"] if r.get("arch") == arch]
        assert not [k for k in _aot.triton_kernels() if k not in {r["kernel"] for r in rows}], arch
        assert cu <= {r["kernel"].split(":")[0] for r in rows if r["spec"] == f"sm_{arch}"}, arch
    defects = {r["kernel"] for r in baseline["kernels"] if "error" in r or r["spills"] or r["stack"]}
    assert defects <= set(KNOWN_DEFECTS), defects - set(KNOWN_DEFECTS)
    for row in baseline["kernels"]:
        assert "error" in row or not _aot.budget_problems(row), row
    assert {s["kernel"] for s in baseline["specs"]} <= compiled
