"""The CPU simulation of the CUDA execution model must compute what a GPU computes, and a kernel with a missing
barrier, a wrong shuffle, a divergent barrier, a `+=` in place of an atomic, a read of unwritten shared memory or
an off-by-one write (under the AddressSanitizer build) must fail under it."""
import os
import subprocess
import sys

import pytest
import torch

import gankern._sim as sim  # noqa: E402  (built at install; a missing module must fail the suite)
from gankern import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCHEDULES = (0, 1, 2)  # forward, reverse, shuffled


def reduce(x, variant, schedule):
    out = torch.full((1,), float("nan"))
    sim.set_schedule(schedule, 7)
    try:
        sim.selftest_reduce(x.data_ptr(), out.data_ptr(), x.numel(), variant)
    finally:
        sim.set_schedule(0, 0)
    return out.item()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n", [32, 64, 256, 1024])
def test_correct_block_reduction_under_every_schedule(n, schedule):
    x = torch.randn(n)
    assert reduce(x, 0, schedule) == pytest.approx(x.sum().item(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_correct_warp_shuffle_reduction(schedule):
    x = torch.randn(32)
    assert reduce(x, 4, schedule) == pytest.approx(x.sum().item(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("n", [64, 256])
def test_missing_barrier_is_caught_by_some_schedule(n):
    x = torch.rand(n) + 0.5  # positive, so a partial sum can never equal the total
    results = [reduce(x, 1, s) for s in SCHEDULES]
    assert any(abs(r - x.sum().item()) > 1e-3 for r in results), results


def test_wrong_shuffle_direction_gives_a_wrong_sum():
    x = torch.rand(32) + 0.5
    for s in SCHEDULES:
        assert abs(reduce(x, 2, s) - x.sum().item()) > 1e-3


def test_divergent_barrier_fails_the_launch_with_a_message():
    x = torch.randn(64)
    with pytest.raises(RuntimeError, match=r"selftest_reduce failed: __syncthreads\(\) reached by 32 of 64"):
        reduce(x, 3, 0)


def test_invalid_launch_configuration_is_an_error():
    x = torch.randn(2048)
    with pytest.raises(RuntimeError, match="invalid configuration"):
        reduce(x, 0, 0)  # 2048 threads per block



@pytest.mark.parametrize("width,mask", [(32, 1), (32, 16), (16, 16), (16, 3), (8, 4), (8, 12)])
def test_xor_shuffle_follows_cuda_for_groups_narrower_than_a_warp(width, mask):
    """CUDA: lane l reads lane l ^ mask unless that lane is past the end of l's group of `width` lanes (then its own
    value); a lane of an earlier group can be read."""
    x = torch.randn(32)
    out = torch.full((32,), float("nan"))
    sim.selftest_shfl_xor(x.data_ptr(), out.data_ptr(), mask, width)
    want = [x[l ^ mask] if (l ^ mask) < (l // width + 1) * width else x[l] for l in range(32)]
    torch.testing.assert_close(out, torch.stack(want), rtol=0, atol=0)


# ---- mutants: each planted bug must be caught (tests of the simulation's own power; csrc/sim/selftest.cpp) ----
ATOMIC_SUM, PLAIN_SUM, ZERO_FILL, SKIP_ZERO_FILL, COPY, COPY_OFF_BY_ONE = range(6)
INTERLEAVED = 3


def mutant(x, kind, threads, schedule, seed=7):
    out = torch.zeros(max(x.numel(), 1))
    sim.set_schedule(schedule, seed)
    try:
        sim.selftest_mutant(x.data_ptr(), out.data_ptr(), threads, x.numel(), kind)
    finally:
        sim.set_schedule(0, 0)
    return out


@pytest.mark.parametrize("schedule", SCHEDULES + (INTERLEAVED,))
def test_atomic_sum_is_right_under_every_schedule(schedule):
    x = torch.rand(256) + 0.5
    assert mutant(x, ATOMIC_SUM, 256, schedule)[0].item() == pytest.approx(x.sum().item(), rel=1e-5)


def test_plain_add_in_place_of_an_atomic_loses_updates_when_interleaved():
    """Threads switching only at barriers never lose an update; switching at stores (interleaved) does."""
    x = torch.rand(256) + 0.5
    for s in SCHEDULES:
        assert mutant(x, PLAIN_SUM, 256, s)[0].item() == pytest.approx(x.sum().item(), rel=1e-5)
    got = [mutant(x, PLAIN_SUM, 256, INTERLEAVED, seed)[0].item() for seed in (1, 2)]
    assert all(g < 0.5 * x.sum().item() for g in got), (got, x.sum().item())


@pytest.mark.parametrize("n", [64, 256])
def test_missing_barrier_is_caught_when_interleaved(n):
    x = torch.rand(n) + 0.5
    assert abs(reduce(x, 1, INTERLEAVED) - x.sum().item()) > 1e-3
    assert reduce(x, 0, INTERLEAVED) == pytest.approx(x.sum().item(), rel=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES + (INTERLEAVED,))
def test_unwritten_static_shared_memory_reads_nan(schedule):
    """__shared__ statics are poisoned at every block start: a tree that leaves its unused slots unwritten sums
    NaN (before the poisoning it summed zeros from .bss or a previous launch's values, and passed)."""
    x = torch.rand(100)
    assert mutant(x, ZERO_FILL, 128, schedule)[0].item() == pytest.approx(x.sum().item(), rel=1e-5)
    assert torch.isnan(mutant(x, SKIP_ZERO_FILL, 128, schedule)[0])


def test_the_poisoned_region_holds_the_shared_statics():
    assert sim.static_smem_bytes() >= 2 * 1024 * 4  # the two 1024-float arrays of the self-test kernels alone


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        sim.set_schedule(4, 0)


_ASAN_SCRIPT = """
import sys, torch
import gankern._sim_asan as s
x = torch.rand(64)
out = torch.zeros(64)
s.selftest_mutant(x.data_ptr(), out.data_ptr(), 128, 64, int(sys.argv[1]))
assert torch.equal(out, x)
print("finished")
"""


def _run_asan(kind):
    if not _ext.build_info().get("sim_asan"):
        pytest.skip("gankern._sim_asan was not built (GANKERN_SIM_SANITIZED=1 at install builds it; CI does)")
    # libstdc++ preloaded with libasan: else ASan's __cxa_throw interceptor finds no real one (a CHECK failure)
    libs = [subprocess.run(["g++", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
            for lib in ("libasan.so", "libstdc++.so")]
    env = dict(os.environ, LD_PRELOAD=" ".join(libs), ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", _ASAN_SCRIPT, str(kind)], env=env, capture_output=True, text=True,
                          timeout=120)


def test_off_by_one_copy_is_caught_by_the_sanitized_simulation():
    p = _run_asan(COPY)
    assert p.returncode == 0 and "finished" in p.stdout, p.stderr[-3000:]
    p = _run_asan(COPY_OFF_BY_ONE)
    assert p.returncode != 0 and "finished" not in p.stdout
    assert "AddressSanitizer: heap-buffer-overflow" in p.stderr and "mutant_kernel" in p.stderr, p.stderr[-3000:]
