// Kernels that test the CUDA simulation itself (compiled into gankern._sim only): a block reduction written
// correctly and with the usual mistakes. tests/test_sim.py checks that the correct one is right under every
// schedule and that each mistake gives a wrong result or a launch error under at least one schedule.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind.h"
#include "gankern/cuda_compat.h"

namespace {

enum Variant { kCorrect = 0, kMissingBarrier = 1, kWrongShuffle = 2, kDivergentBarrier = 3, kWarpCorrect = 4 };

// Sum of x[0 .. blockDim.x) into *out, by a shared-memory tree (variants 0, 1, 3) or warp shuffles (2, 4).
__global__ void reduce_kernel(const float* x, float* out, int variant) {
  __shared__ float smem[1024];
  const unsigned tid = threadIdx.x;
  if (variant == kWrongShuffle || variant == kWarpCorrect) {
    float v = x[tid];
    for (int offset = 16; offset > 0; offset >>= 1)
      v += variant == kWarpCorrect ? __shfl_down_sync(0xffffffffu, v, offset) : __shfl_up_sync(0xffffffffu, v, offset);
    if (tid == 0) *out = v;
    return;
  }
  smem[tid] = x[tid];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) smem[tid] += smem[tid + s];
    if (variant == kCorrect || (variant == kDivergentBarrier && tid < s)) __syncthreads();
  }
  if (tid == 0) *out = smem[0];
}

// out[lane] = __shfl_xor_sync(full, x[lane], mask, width) for one warp.
__global__ void shfl_xor_kernel(const float* x, float* out, int mask, int width) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], mask, width);
}

}  // namespace

namespace gk_bind {

void bind_sim_selftest(py::module_& m) {
  m.def("selftest_reduce", [](std::uintptr_t x, std::uintptr_t out, int n, int variant) {
    check(gk::launch(reduce_kernel, dim3(1), dim3(n), 0, nullptr, ptr<const float>(x), ptr<float>(out), variant),
          "selftest_reduce");
  }, "sum of x[0:n] into out[0] with one block of n threads; variant 0 correct, 1 missing barrier, "
     "2 wrong shuffle direction, 3 divergent barrier, 4 correct warp shuffle (n = 32)");
  m.def("selftest_shfl_xor", [](std::uintptr_t x, std::uintptr_t out, int mask, int width) {
    check(gk::launch(shfl_xor_kernel, dim3(1), dim3(32), 0, nullptr, ptr<const float>(x), ptr<float>(out), mask,
                     width), "selftest_shfl_xor");
  }, "out[lane] = __shfl_xor_sync(full, x[lane], mask, width) over one warp");
}

}  // namespace gk_bind
