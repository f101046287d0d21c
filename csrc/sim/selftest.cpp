// Kernels that test the CUDA simulation itself (compiled into gankern._sim only): a block reduction, a sum by
// atomics and a copy, each written correctly and with the usual mistakes (mutants). tests/test_sim.py checks that
// the correct ones are right under every schedule and that each mutant gives a wrong result, a NaN or a launch
// error under the simulation (the off-by-one copy: an AddressSanitizer report under gankern._sim_asan).
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

enum Mutant { kAtomicSum = 0, kPlainSum = 1, kZeroFill = 2, kSkipZeroFill = 3, kCopy = 4, kCopyOffByOne = 5 };

// One block: out[0] = sum of x[0 .. n) by atomics (kAtomicSum; kPlainSum: `+=`, a lost update), by a shared tree
// whose slots past n hold 0 (kZeroFill; kSkipZeroFill leaves them unwritten), or out[i] = x[i] for i < n (kCopy;
// kCopyOffByOne: i <= n, one element past the end of both).
__global__ void mutant_kernel(const float* x, float* out, int n, int mutant) {
  __shared__ float partial[1024];
  const int tid = (int)threadIdx.x;
  if (mutant == kAtomicSum || mutant == kPlainSum) {
    if (tid >= n) return;
    if (mutant == kAtomicSum) atomicAdd(out, x[tid]);
    else *out += x[tid];
    return;
  }
  if (mutant == kCopy || mutant == kCopyOffByOne) {
    if (tid < n || (mutant == kCopyOffByOne && tid == n)) out[tid] = x[tid];
    return;
  }
  if (tid < n) partial[tid] = x[tid];
  else if (mutant == kZeroFill) partial[tid] = 0.0f;
  __syncthreads();
  for (int s = (int)blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] += partial[tid + s];
    __syncthreads();
  }
  if (tid == 0) *out = partial[0];
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
  m.def("selftest_mutant", [](std::uintptr_t x, std::uintptr_t out, int threads, int n, int mutant) {
    check(gk::launch(mutant_kernel, dim3(1), dim3(threads), 0, nullptr, ptr<const float>(x), ptr<float>(out), n,
                     mutant), "selftest_mutant");
  }, "one block of `threads`: 0 atomic sum, 1 `+=` sum, 2 tree sum with zero fill, 3 without it, 4 copy of n, "
     "5 copy of n + 1 (off by one)");
  m.def("selftest_shfl_xor", [](std::uintptr_t x, std::uintptr_t out, int mask, int width) {
    check(gk::launch(shfl_xor_kernel, dim3(1), dim3(32), 0, nullptr, ptr<const float>(x), ptr<float>(out), mask,
                     width), "selftest_shfl_xor");
  }, "out[lane] = __shfl_xor_sync(full, x[lane], mask, width) over one warp");
}

}  // namespace gk_bind
