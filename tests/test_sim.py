"""The CPU simulation of the CUDA execution model must compute what a GPU computes, and a kernel with a missing
barrier, a wrong shuffle or a divergent barrier must fail under it."""
import pytest
import torch

import gankern._sim as sim  # noqa: E402  (built at install; a missing module must fail the suite)

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
