// One kernel source, two builds: nvcc (the real gankern._C) and the host compiler against the CPU simulation
// (gankern._sim, GANKERN_SIM defined). Kernels include this header only, and launch through gk::launch.
#pragma once

#ifdef GANKERN_SIM
#include "sim/cuda_sim.h"
#define GK_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(gk_sim::dynamic_smem())
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define GK_DYNAMIC_SMEM(T, name)                              \
  extern __shared__ __align__(16) unsigned char gk_smem_[];   \
  T* name = reinterpret_cast<T*>(gk_smem_)
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace gk {

// dtype codes shared with Python (gankern/ops/_launch.py: DTYPE_CODES)
enum DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }

// N elements of T moved as one access (at most 16 bytes): on the GPU a load or store of a Vec compiles to one
// ld/st.global.v2/v4 where the address is a multiple of sizeof(Vec) (callers check it and keep a scalar path).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  static_assert(sizeof(T) * N <= 16 && (sizeof(T) * N & (sizeof(T) * N - 1)) == 0, "2, 4, 8 or 16 bytes");
  T v[N];
};

// *p through the read-only path (ld.global.nc), for data the kernel does not write: pointers read from a table
// leave the compiler no address space, and it would issue a generic load. T: 2, 4, 8 or 16 bytes.
template <typename T>
__device__ __forceinline__ T load_global(const T* p) {
#ifdef GANKERN_SIM
  return *p;
#else
  using Bits = std::conditional_t<sizeof(T) == 16, uint4, std::conditional_t<sizeof(T) == 8, uint2,
               std::conditional_t<sizeof(T) == 4, unsigned, unsigned short>>>;
  static_assert(sizeof(T) == sizeof(Bits), "2, 4, 8 or 16 bytes");
  const Bits bits = __ldg(reinterpret_cast<const Bits*>(p));
  T out;
  memcpy(&out, &bits, sizeof(T));
  return out;
#endif
}

// (q, r) = (e / d, e % d) along e = start, start + step, ...: one division up front, then additions (a division per
// element costs tens of instructions, 64-bit ones far more).
template <typename I>
struct DivStep {
  I q, r, dq, dr, d;
  __device__ __forceinline__ DivStep(I start, I step, I d_)
      : q(start / d_), r(start - start / d_ * d_), dq(step / d_), dr(step - step / d_ * d_), d(d_) {}
  __device__ __forceinline__ void next() {
    q += dq;
    r += dr;
    if (r >= d) {
      r -= d;
      ++q;
    }
  }
};

// Whether p is a multiple of `bytes` (a power of two).
__host__ __device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// Calls f(T{}) with T the storage type of the gk::DType `dtype` (float, __nv_bfloat16, __half) and returns its
// result; an unknown code is cudaErrorInvalidValue. Launchers use it to instantiate their kernels per dtype.
template <typename F>
inline cudaError_t dispatch(int dtype, F f) {
  switch (dtype) {
    case kFloat32: return f(float{});
    case kBFloat16: return f(__nv_bfloat16{});
    case kFloat16: return f(__half{});
    default: return cudaErrorInvalidValue;
  }
}

// Sum over the 32 lanes of a full warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the total.
// scratch: 32 floats of shared memory, free before the call; reusable after it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// Launch `kernel` on `stream`; an empty grid launches nothing. Returns the launch's error.
template <typename... Params, typename... Args>
inline cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
#ifdef GANKERN_SIM
  (void)stream;
  auto body = [&]() { kernel(static_cast<Params>(args)...); };
  return gk_sim::launch(grid, block, smem, [](void* c) { (*static_cast<decltype(body)*>(c))(); }, &body);
#else
  kernel<<<grid, block, smem, stream>>>(static_cast<Params>(args)...);
  return cudaGetLastError();
#endif
}

}  // namespace gk
