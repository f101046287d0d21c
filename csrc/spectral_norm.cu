// Spectral-norm power iteration and W / sigma for many layers per launch (see include/gankern/spectral_norm.h).
// Floor per step: W read twice (rows, then columns) and W / sigma written once.
#include "gankern/cuda_compat.h"
#include "gankern/spectral_norm.h"

namespace gk {
namespace {

struct Layer {
  const void* w;
  void* u;
  void* v;
  int64_t h, w_cols, inner, h_off, w_off, n_off;
};

__device__ __forceinline__ Layer load_layer(const int64_t* meta, int layer) {
  const int64_t* m = meta + 9 * (int64_t)layer;  // [W, u, v, h, w, inner, h_off, w_off, n_off]
  return Layer{reinterpret_cast<const void*>(m[0]), reinterpret_cast<void*>(m[1]), reinterpret_cast<void*>(m[2]),
               m[3], m[4], m[5], m[6], m[7], m[8]};
}

// Offset of W(r, c) in the weight's memory. dim == 0 (inner == w) takes the plain row-major index (the branch is
// uniform over the block); otherwise 32-bit division (a layer has fewer than 2**31 elements: the launchers check).
__device__ __forceinline__ int64_t w_index(const Layer& L, int64_t r, int64_t c) {
  if (L.inner == L.w_cols) return r * L.w_cols + c;
  const uint32_t c32 = (uint32_t)c, inner = (uint32_t)L.inner, q = c32 / inner;
  return ((int64_t)q * L.h + r) * L.inner + (c32 - q * inner);
}

constexpr int kThreads = 256;
constexpr int kScaleSteps = SN_SCALE_ELEMS / kThreads;  // elements per thread in the elementwise kernels
static_assert(SN_SCALE_ELEMS % kThreads == 0, "elementwise items are whole steps of the block");

// One warp per row: t[h_off + r] = sum_c W(r, c) v[c]; the block of row 0 also zeroes the layer's s (at w_off) for
// the columns pass. flat: the fp32 buffer of t and s.
template <typename T>
__global__ void __launch_bounds__(kThreads) rows_kernel(const int64_t* __restrict__ meta,
                                                        const int32_t* __restrict__ items, float* __restrict__ flat) {
  const Layer L = load_layer(meta, items[2 * blockIdx.x]);
  const int64_t row0 = items[2 * blockIdx.x + 1], r = row0 + threadIdx.x / 32;
  const unsigned lane = threadIdx.x % 32;
  const T* W = static_cast<const T*>(L.w);
  const T* v = static_cast<const T*>(L.v);
  float acc = 0.0f;
  if (r < L.h)
    for (int64_t c = lane; c < L.w_cols; c += 32) acc += to_float(W[w_index(L, r, c)]) * to_float(v[c]);
  acc = warp_sum(acc);
  if (lane == 0 && r < L.h) flat[L.h_off + r] = acc;
  if (row0 == 0)
    for (int64_t c = threadIdx.x; c < L.w_cols; c += kThreads) flat[L.w_off + c] = 0.0f;
}

// One thread per column over SN_COLS_ROWS rows: s[w_off + c] += sum_r t[h_off + r] W(r, c) (t as the rows pass left
// it: sn_reduce divides s by |t|).
template <typename T>
__global__ void __launch_bounds__(kThreads) cols_kernel(const int64_t* __restrict__ meta,
                                                        const int32_t* __restrict__ items, float* __restrict__ flat) {
  const int32_t* item = items + 3 * blockIdx.x;
  const Layer L = load_layer(meta, item[0]);
  const int64_t r0 = item[1], c = item[2] + (int64_t)threadIdx.x;
  const T* W = static_cast<const T*>(L.w);
  __shared__ float ts[SN_COLS_ROWS];
  if (threadIdx.x < SN_COLS_ROWS) ts[threadIdx.x] = r0 + threadIdx.x < L.h ? flat[L.h_off + r0 + threadIdx.x] : 0.0f;
  __syncthreads();
  if (c >= L.w_cols) return;
  const int64_t r_end = r0 + SN_COLS_ROWS < L.h ? r0 + SN_COLS_ROWS : L.h;
  float acc = 0.0f;
  for (int64_t r = r0; r < r_end; ++r) acc += ts[r - r0] * to_float(W[w_index(L, r, c)]);
  atomicAdd(&flat[L.w_off + c], acc);
}

__device__ __forceinline__ float clamp_min(float x, float lo) { return x < lo ? lo : x; }

// x[i] *= factor (fp32, in place) and dst[i] = x[i] in T, for i < n, over the block.
template <typename T>
__device__ void scale_into(float* x, T* dst, int64_t n, float factor) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float y = x[i] * factor;
    x[i] = y;
    dst[i] = from_float<T>(y);
  }
}

// One block per layer; see sn_reduce in the header for the modes.
template <typename T>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const int64_t* __restrict__ meta, int mode,
                                                          float* __restrict__ flat, float eps,
                                                          float* __restrict__ sigma) {
  __shared__ float scratch[32];
  const Layer L = load_layer(meta, blockIdx.x);
  float* t = flat + L.h_off;
  float* s = flat + L.w_off;
  if (mode == 1) {
    const T* u = static_cast<const T*>(L.u);
    float acc = 0.0f;
    for (int64_t i = threadIdx.x; i < L.h; i += blockDim.x) acc += t[i] * to_float(u[i]);
    const float total = block_sum(acc, scratch);
    if (threadIdx.x == 0) sigma[blockIdx.x] = total;
    return;
  }
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < L.h; i += blockDim.x) acc += t[i] * t[i];
  // max(norm, eps) that keeps a NaN norm (fmaxf would return eps), as torch's clamp_min in F.normalize does
  const float nt = clamp_min(sqrtf(block_sum(acc, scratch)), eps);
  acc = 0.0f;
  for (int64_t i = threadIdx.x; i < L.w_cols; i += blockDim.x) acc += s[i] * s[i];
  const float norm_s = sqrtf(block_sum(acc, scratch)) / nt, ns = clamp_min(norm_s, eps);
  scale_into(t, static_cast<T*>(L.u), L.h, 1.0f / nt);
  scale_into(s, static_cast<T*>(L.v), L.w_cols, 1.0f / (nt * ns));
  if (threadIdx.x == 0) sigma[blockIdx.x] = norm_s * norm_s / ns;
}

// out[n_off + e] = W[e] / sigma. A whole item with W and out + n_off 16-byte aligned (the branch is uniform over
// the block) moves 16-byte vectors, vector k of thread t at element e0 + (k * kThreads + t) * kVec: every load of the
// thread issued before the first store. Otherwise one element per step, also all loads before the stores.
template <typename T>
__global__ void __launch_bounds__(kThreads) scale_kernel(const int64_t* __restrict__ meta,
                                                         const int32_t* __restrict__ items,
                                                         const float* __restrict__ sigma, T* __restrict__ out) {
  constexpr int kVec = 16 / sizeof(T), kVecSteps = kScaleSteps / kVec;
  static_assert(kScaleSteps % kVec == 0, "an item is whole vectors of every thread");
  using V = Vec<T, kVec>;
  const int layer = items[2 * blockIdx.x];
  const Layer L = load_layer(meta, layer);
  const int64_t numel = L.h * L.w_cols, e0 = items[2 * blockIdx.x + 1];
  const float inv = 1.0f / sigma[layer];
  const T* __restrict__ W = static_cast<const T*>(L.w) + e0;
  T* __restrict__ dst = out + L.n_off + e0;
  if (e0 + SN_SCALE_ELEMS <= numel && aligned_to(W, 16) && aligned_to(dst, 16)) {
    V x[kVecSteps];
#pragma unroll
    for (int k = 0; k < kVecSteps; ++k) x[k] = load_global(reinterpret_cast<const V*>(W) + k * kThreads + threadIdx.x);
#pragma unroll
    for (int k = 0; k < kVecSteps; ++k) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) x[k].v[j] = from_float<T>(to_float(x[k].v[j]) * inv);
      reinterpret_cast<V*>(dst)[k * kThreads + threadIdx.x] = x[k];
    }
    return;
  }
  const int n = numel - e0 < SN_SCALE_ELEMS ? (int)(numel - e0) : SN_SCALE_ELEMS;
  float x[kScaleSteps];
#pragma unroll
  for (int k = 0; k < kScaleSteps; ++k) {
    const int e = k * kThreads + threadIdx.x;
    x[k] = e < n ? to_float(load_global(W + e)) : 0.0f;
  }
#pragma unroll
  for (int k = 0; k < kScaleSteps; ++k) {
    const int e = k * kThreads + threadIdx.x;
    if (e < n) dst[e] = from_float<T>(x[k] * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) grad_dot_kernel(const int64_t* __restrict__ meta,
                                                            const int32_t* __restrict__ items,
                                                            const T* __restrict__ g, float* __restrict__ dots) {
  __shared__ float scratch[32];
  const int layer = items[2 * blockIdx.x];
  const Layer L = load_layer(meta, layer);
  const int64_t numel = L.h * L.w_cols, e0 = items[2 * blockIdx.x + 1];
  const T* __restrict__ W = static_cast<const T*>(L.w);
  float acc = 0.0f;
#pragma unroll
  for (int k = 0; k < kScaleSteps; ++k) {
    const int64_t e = e0 + k * kThreads + threadIdx.x;
    if (e < numel) acc += to_float(g[L.n_off + e]) * to_float(W[e]);
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) atomicAdd(&dots[layer], acc);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) grad_kernel(const int64_t* __restrict__ meta,
                                                        const int32_t* __restrict__ items, const T* __restrict__ g,
                                                        const float* __restrict__ sigma,
                                                        const float* __restrict__ dots, const float* __restrict__ u,
                                                        const float* __restrict__ v, T* __restrict__ dw) {
  const int layer = items[2 * blockIdx.x];
  const Layer L = load_layer(meta, layer);
  const int64_t numel = L.h * L.w_cols, e0 = items[2 * blockIdx.x + 1];
  const float s = sigma[layer], inv = 1.0f / s, coef = dots[layer] / (s * s);
  const uint32_t w = (uint32_t)L.w_cols, inner = (uint32_t)L.inner, h = (uint32_t)L.h;
  float y[kScaleSteps];  // all loads first (several in flight), then the stores
#pragma unroll
  for (int k = 0; k < kScaleSteps; ++k) {
    const int64_t e = e0 + k * kThreads + threadIdx.x;
    y[k] = 0.0f;
    if (e >= numel) continue;
    const uint32_t e32 = (uint32_t)e;  // numel < 2**31: 32-bit division
    uint32_t r, c;  // matrix position of element e
    if (inner == w) {
      r = e32 / w;
      c = e32 - r * w;
    } else {
      const uint32_t q = e32 / inner;
      r = q % h;
      c = (q / h) * inner + (e32 - q * inner);
    }
    y[k] = to_float(g[L.n_off + e]) * inv - coef * u[L.h_off + r] * v[L.w_off + c];
  }
#pragma unroll
  for (int k = 0; k < kScaleSteps; ++k) {
    const int64_t e = e0 + k * kThreads + threadIdx.x;
    if (e < numel) dw[L.n_off + e] = from_float<T>(y[k]);
  }
}

}  // namespace

cudaError_t sn_rows(const int64_t* meta, const int32_t* items, int n_items, float* flat, int dtype,
                    cudaStream_t stream) {
  static_assert(SN_ROWS_PER_ITEM * 32 == kThreads, "one warp per row");
  return dispatch(dtype, [&](auto tag) {
    return launch(rows_kernel<decltype(tag)>, dim3(n_items), dim3(kThreads), 0, stream, meta, items, flat);
  });
}

cudaError_t sn_cols(const int64_t* meta, const int32_t* items, int n_items, float* flat, int dtype,
                    cudaStream_t stream) {
  static_assert(SN_COLS_COLS == kThreads && SN_COLS_ROWS <= kThreads, "one thread per column");
  return dispatch(dtype, [&](auto tag) {
    return launch(cols_kernel<decltype(tag)>, dim3(n_items), dim3(kThreads), 0, stream, meta, items, flat);
  });
}

cudaError_t sn_reduce(const int64_t* meta, int n_layers, int mode, float* flat, float eps, float* sigma, int dtype,
                      cudaStream_t stream) {
  if (mode < 0 || mode > 1) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    return launch(reduce_kernel<decltype(tag)>, dim3(n_layers), dim3(kThreads), 0, stream, meta, mode, flat, eps,
                  sigma);
  });
}

cudaError_t sn_scale(const int64_t* meta, const int32_t* items, int n_items, const float* sigma, void* out, int dtype,
                     cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(scale_kernel<T>, dim3(n_items), dim3(kThreads), 0, stream, meta, items, sigma, static_cast<T*>(out));
  });
}

cudaError_t sn_grad_dot(const int64_t* meta, const int32_t* items, int n_items, const void* g, float* dots, int dtype,
                        cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(grad_dot_kernel<T>, dim3(n_items), dim3(kThreads), 0, stream, meta, items,
                  static_cast<const T*>(g), dots);
  });
}

cudaError_t sn_grad(const int64_t* meta, const int32_t* items, int n_items, const void* g, const float* sigma,
                    const float* dots, const float* u, const float* v, void* dw, int dtype, cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(grad_kernel<T>, dim3(n_items), dim3(kThreads), 0, stream, meta, items, static_cast<const T*>(g),
                  sigma, dots, u, v, static_cast<T*>(dw));
  });
}

}  // namespace gk
