// A small CPU simulation of the CUDA execution model, so that the kernels of csrc/*.cu are *executed* in CPU CI.
//
// The same kernel source is compiled by the host compiler with GANKERN_SIM defined (see csrc/include/gankern/
// cuda_compat.h). What is simulated:
//   - gridDim / blockDim / blockIdx / threadIdx; blocks run one after another, the threads of a block run as
//     cooperative fibers (ucontext) on one OS thread;
//   - static shared memory (`__shared__` is `static`: one copy, serving the one block that runs at a time; the
//     linker script csrc/sim/static_smem.ld gathers the static locals of every `*_kernel` function into one
//     section) and dynamic shared memory (GK_DYNAMIC_SMEM): both filled with NaN bytes (0xff) at every block
//     start, so that a read of shared memory the block has not written gives NaN, not a previous block's value;
//   - __syncthreads (every live thread of the block must reach it, else the launch fails: divergent barrier),
//     __syncwarp and the warp shuffles __shfl_sync / __shfl_up_sync / __shfl_down_sync / __shfl_xor_sync
//     (every live lane of the warp must take part);
//   - atomics, the float intrinsics the kernels use, bf16/fp16.
// The schedule (gk_sim::set_schedule) is the order in which fibers run and where they switch:
//   forward / reverse / shuffled: each fiber runs until it reaches a barrier, in that order (blocks too): a
//     missing barrier makes a reduction read a value another thread has not yet written under one of them;
//   interleaved: as shuffled, and a fiber also switches at every store to global or shared memory and before
//     every atomic (the kernel sources are compiled with -fsanitize=thread, whose store hooks are defined in
//     cuda_sim.cpp), with up to 4 blocks resident at once (each with its own shared memory), so a `+=` in place
//     of an atomicAdd loses updates, within a block or between blocks, and an unordered read sees a half-done
//     write. Tests run kernels under several schedules.
// The ASan + UBSan build (GANKERN_SIM_SANITIZED=1 at install: gankern._sim_asan, no interleaved schedule) finds
// out-of-bounds reads and writes of global and shared memory when the process runs with libasan preloaded.
#pragma once

#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <string>

// ---- CUDA qualifiers and types ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static shared memory: one copy per variable, serving the one block that runs at a time, poisoned at every block
// start (see static_smem.ld: only the static locals of functions named *_kernel are found, so __shared__ variables
// must be declared in the kernel itself, not in a device helper).
#define __shared__ static
#define __restrict__ __restrict

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
typedef struct CUstream_st* cudaStream_t;

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();

extern thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;

namespace gk_sim {

enum Schedule { kForward = 0, kReverse = 1, kShuffled = 2, kInterleaved = 3 };
void set_schedule(int schedule, unsigned seed);
int schedule();
// Bytes of static shared memory the simulation poisons at each block start (0 if the linker script was not used).
size_t static_smem_bytes();
// Under the interleaved schedule, hands the OS thread to another fiber (at a store to `addr` off the fiber's
// own stack, or before an atomic when addr is null).
void switch_point(const void* addr);

// Runs body() for every thread of every block; returns cudaSuccess or an error whose text cudaGetErrorString gives.
cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, void (*body)(void*), void* ctx);

void syncthreads();
void syncwarp();
// Deposits `bytes` of the calling lane, waits for its warp, copies the bytes of lane `src` (own if out of range).
void shuffle(const void* in, void* out, int bytes, int src_lane);
unsigned lane_id();
void* dynamic_smem();
}  // namespace gk_sim

inline void __syncthreads() { gk_sim::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { gk_sim::syncwarp(); }

#define GK_SIM_SHUFFLE_CHECK(T) static_assert(sizeof(T) <= 16, "the simulation shuffles up to 16 bytes")

template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
  GK_SIM_SHUFFLE_CHECK(T);
  T out;
  unsigned lane = gk_sim::lane_id();
  int base = (int)(lane / width) * width;
  gk_sim::shuffle(&v, &out, sizeof(T), base + ((src % width) + width) % width);
  return out;
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  GK_SIM_SHUFFLE_CHECK(T);
  T out;
  int lane = (int)gk_sim::lane_id();
  int src = (lane % width) + (int)delta < width ? lane + (int)delta : lane;
  gk_sim::shuffle(&v, &out, sizeof(T), src);
  return out;
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  GK_SIM_SHUFFLE_CHECK(T);
  T out;
  int lane = (int)gk_sim::lane_id();
  int src = (lane % width) >= (int)delta ? lane - (int)delta : lane;
  gk_sim::shuffle(&v, &out, sizeof(T), src);
  return out;
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  GK_SIM_SHUFFLE_CHECK(T);
  T out;
  int lane = (int)gk_sim::lane_id();
  int src = lane ^ mask;
  if (src >= (lane / width + 1) * width) src = lane;  // past the caller's group: own value (CUDA's rule)
  gk_sim::shuffle(&v, &out, sizeof(T), src);
  return out;
}

// ---- atomics: a fiber may switch before one (interleaved schedule), never inside (the read-modify-write is not
// instrumented), so each is atomic ----
#define GK_SIM_ATOMIC(T, name, expr)                                          \
  template <typename T>                                                       \
  __attribute__((no_sanitize_thread, noinline)) T name##_rmw(T* p, T v) {     \
    T old = *p;                                                               \
    *p = (expr);                                                              \
    return old;                                                               \
  }                                                                           \
  template <typename T>                                                       \
  inline T name(T* p, T v) {                                                  \
    gk_sim::switch_point(nullptr);                                            \
    return name##_rmw(p, v);                                                  \
  }
GK_SIM_ATOMIC(T, atomicAdd, old + v)
GK_SIM_ATOMIC(T, atomicMax, std::max(old, v))
GK_SIM_ATOMIC(T, atomicMin, std::min(old, v))
GK_SIM_ATOMIC(T, atomicExch, v)
#undef GK_SIM_ATOMIC

// ---- math intrinsics ----
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return std::min(1.0f, std::max(0.0f, x)); }
// fabsf, sqrtf, expf, logf, fmaxf, fminf, tanhf, ... come from <math.h>.

// ---- 16-bit floats: storage types with round-to-nearest-even conversions ----
struct __nv_bfloat16 { uint16_t bits; };
struct __half { uint16_t bits; };

inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = (uint32_t)h.bits << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 h;
  if (std::isnan(f)) { h.bits = 0x7fc0; return h; }
  u += 0x7fffu + ((u >> 16) & 1u);
  h.bits = (uint16_t)(u >> 16);
  return h;
}
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return (float)v;
}
inline __half __float2half(float f) {
  _Float16 v = (_Float16)f;
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}
