"""Triton kernels of the FID family.

``kid_kernel_sums``: for each subset s, sum over (i, j) of k(a_{ia[s,i]}, b_{ib[s,j]}) with the cubic polynomial
kernel k(x, y) = (x . y / d + 1)^3, optionally leaving out i == j. The rows are gathered through the index arrays
inside the kernel and the m x m kernel matrix never reaches memory (for x-x and y-y sums only the tiles on and above
the diagonal are computed, 2/3 of the FLOPs of the three products): one tile of x . y (float64 tl.dot, features
cast while loading), cubed and summed in registers, one float64 partial sum per tile.
Cost: 2 m^2 d FLOPs per subset and kernel matrix (float64), m d reads per tile row; floor: those FLOPs at the GPU's
float64 rate (H100: 60 TFLOP/s tensor cores).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import cdiv


@triton.jit
def _kid_sum_kernel(a_ptr, b_ptr,            # [Na, d], [Nb, d] features (fp32 or fp64)
                    ia_ptr, ib_ptr,          # [S, m] int64 row indices of each subset
                    out_ptr,                 # [S, TI * TJ] float64 partial sums
                    m, d, inv_d,
                    stride_a, stride_b,      # row strides (elements); the feature dimension is contiguous
                    SKIP_DIAG: tl.constexpr,     # also: a is b and ia is ib (symmetric): upper tiles only
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    s = tl.program_id(2)
    offs_i = pid_i * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = pid_j * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_i = offs_i < m
    mask_j = offs_j < m
    rows_a = tl.load(ia_ptr + s * m + offs_i, mask=mask_i, other=0)
    rows_b = tl.load(ib_ptr + s * m + offs_j, mask=mask_j, other=0)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    k_end = d
    weight = 1.0
    if SKIP_DIAG:  # symmetric: tiles below the diagonal skip the loop and count 0, tiles above it count twice
        k_end = tl.where(pid_j >= pid_i, d, 0)
        weight = tl.where(pid_j > pid_i, 2.0, tl.where(pid_j == pid_i, 1.0, 0.0))
    for k0 in range(0, k_end, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < d
        a = tl.load(a_ptr + rows_a[:, None] * stride_a + kk[None, :],
                    mask=mask_i[:, None] & mask_k[None, :], other=0.0).to(tl.float64)   # [BM, BK]
        b = tl.load(b_ptr + rows_b[None, :] * stride_b + kk[:, None],
                    mask=mask_j[None, :] & mask_k[:, None], other=0.0).to(tl.float64)   # [BK, BN]
        acc += tl.dot(a, b)
    kv = acc * inv_d + 1.0
    kv = kv * kv * kv
    keep = mask_i[:, None] & mask_j[None, :]
    if SKIP_DIAG:
        keep = keep & (offs_i[:, None] != offs_j[None, :])
    part = tl.sum(tl.sum(tl.where(keep, kv, 0.0), axis=1), axis=0) * weight
    tl.store(out_ptr + s * (tl.num_programs(0) * tl.num_programs(1)) + pid_i * tl.num_programs(1) + pid_j, part)


def kid_kernel_sums(a: torch.Tensor, b: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, skip_diag: bool,
                    block_m: int = 32, block_n: int = 32, block_k: int = 32) -> torch.Tensor:
    """(S,) float64: sum_{i, j (i != j if skip_diag)} (a[ia[s, i]] . b[ib[s, j]] / d + 1)^3.

    a (Na, d), b (Nb, d) float32/float64 with contiguous rows; ia, ib (S, m) int64 on the same device.
    skip_diag means the symmetric case (a is b, ia is ib): only the tiles on and above the diagonal are computed.
    """
    if skip_diag and (a is not b or ia is not ib or block_m != block_n):
        raise ValueError("skip_diag=True is the symmetric case: a is b, ia is ib and block_m == block_n")
    d = a.shape[1]
    s, m = ia.shape
    a = a if a.stride(1) == 1 else a.contiguous()
    b = b if b.stride(1) == 1 else b.contiguous()
    ti, tj = cdiv(m, block_m), cdiv(m, block_n)
    out = torch.empty(s, ti * tj, dtype=torch.float64, device=a.device)
    _kid_sum_kernel[(ti, tj, s)](a, b, ia.contiguous(), ib.contiguous(), out, m, d, 1.0 / d,
                                 a.stride(0), b.stride(0), SKIP_DIAG=skip_diag,
                                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return out.sum(1)
