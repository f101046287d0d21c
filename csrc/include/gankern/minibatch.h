// Minibatch family launch API (see csrc/minibatch.cu and gankern/ops/minibatch.py).
//
// Minibatch discrimination pair sums.
// M: (N, B, C) contiguous, gk::DType `dtype`; g = dL/do: (N, B), dtype of M. Per (i, b):
//   forward   o[i, b]     = sum_{j != i} exp(-||M[i, b, :] - M[j, b, :]||_1)                     out (N, B)
//   backward  dM[i, b, c] = -sum_j (g[i, b] + g[j, b]) e_ijb sign(M[i, b, c] - M[j, b, c])       out (N, B, C)
// with fp32 accumulation, the result written in dtype. One block per (b, tile of MB_TILE rows i); the rows j stream
// through shared memory in tiles of MB_TILE: nothing of size N x N is stored. C <= MB_MAX_C (shared-memory tiles),
// else cudaErrorInvalidValue. All launchers run on `stream` and return the launch's error.
#pragma once
#include <cstdint>

#ifdef GANKERN_SIM
#include "sim/cuda_sim.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace gk {

constexpr int MB_TILE = 64;
constexpr int MB_MAX_C = 48;

cudaError_t mb_disc_forward(const void* M, int64_t N, int64_t B, int64_t C, void* out, int dtype,
                            cudaStream_t stream);
cudaError_t mb_disc_backward(const void* M, const void* g, int64_t N, int64_t B, int64_t C, void* dM, int dtype,
                             cudaStream_t stream);

// Minibatch standard deviation (StyleGAN2-ADA's MinibatchStdLayer). x: (N, C, H * W) contiguous, dtype `dtype`;
// N = G * S samples, sample n in group slot n % S (x.reshape(G, S, ...)); F groups of C / F channels.
// Each (slot, channel group) slab is split over several blocks when there are few slabs (a grid that fills the GPU):
//   forward   out (N, C + F, H * W) = cat([x, std], 1), std[n, f] = mean over the channel group and pixels of
//             sqrt(var over n's group + eps); partials: mb_std_partials(...) floats of fp32 scratch (the blocks'
//             partial sums, no initialization needed; 0 for bad sizes)
//   backward  dx (N, C, H * W) from x and dout (N, C + F, H * W)
int64_t mb_std_partials(int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F);
cudaError_t mb_std_forward(const void* x, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F, float eps,
                           void* out, float* partials, int dtype, cudaStream_t stream);
cudaError_t mb_std_backward(const void* x, const void* dout, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F,
                            float eps, void* dx, int dtype, cudaStream_t stream);

}  // namespace gk
