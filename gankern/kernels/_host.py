"""Host-side integer helpers of the launchers. triton.cdiv and triton.next_power_of_2 are ConstexprFunctions in
Triton 3.6: about 2 us per call from the host (bench/bench_overhead.py), several per launch; these are plain ints."""


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints, b > 0."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n (as triton.next_power_of_2: 0 for 0)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
