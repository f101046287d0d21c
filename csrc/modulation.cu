// Fused bias + activation (see include/gankern/modulation.h): one elementwise pass per mode.
#include "gankern/cuda_compat.h"
#include "gankern/modulation.h"

namespace gk {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

__device__ __forceinline__ float sigmoid_f(float v) { return 1.0f / (1.0f + expf(-v)); }

// f (order 0), f' (1) or f'' (2) of activation `act` at v.
template <int ORDER>
__device__ __forceinline__ float act_eval(int act, float v, float alpha) {
  const bool pos = v > 0.0f;
  switch (act) {
    case kLinear: return ORDER == 0 ? v : (ORDER == 1 ? 1.0f : 0.0f);
    case kRelu: return ORDER == 0 ? (v <= 0.0f ? 0.0f : v) : (ORDER == 1 ? (pos ? 1.0f : 0.0f) : 0.0f);  // NaN stays
    case kLrelu: return ORDER == 0 ? (pos ? v : v * alpha) : (ORDER == 1 ? (pos ? 1.0f : alpha) : 0.0f);
    case kTanh: {
      const float t = tanhf(v);
      return ORDER == 0 ? t : (ORDER == 1 ? 1.0f - t * t : -2.0f * t * (1.0f - t * t));
    }
    case kSigmoid: {
      const float s = sigmoid_f(v);
      return ORDER == 0 ? s : (ORDER == 1 ? s * (1.0f - s) : s * (1.0f - s) * (1.0f - 2.0f * s));
    }
    case kElu:
    case kSelu: {
      const float scale = act == kSelu ? 1.0507009873554805f : 1.0f;
      const float a = act == kSelu ? 1.6732632423543772f : 1.0f;
      const float en = expf(pos ? 0.0f : v);  // not fminf: fminf(NaN, 0) is 0, and NaN must stay NaN
      if (ORDER == 0) return scale * (pos ? v : a * (en - 1.0f));
      if (ORDER == 1) return scale * (pos ? 1.0f : a * en);
      return scale * (pos ? 0.0f : a * en);
    }
    case kSoftplus: {  // torch's threshold 20: linear above
      if (v > 20.0f) return ORDER == 0 ? v : (ORDER == 1 ? 1.0f : 0.0f);
      const float s = sigmoid_f(v);
      return ORDER == 0 ? log1pf(expf(v)) : (ORDER == 1 ? s : s * (1.0f - s));
    }
    default: {  // kSwish
      const float s = sigmoid_f(v);
      if (ORDER == 0) return v * s;
      if (ORDER == 1) return s * (1.0f + v * (1.0f - s));
      return s * (1.0f - s) * (2.0f + v * (1.0f - 2.0f * s));
    }
  }
}

template <int ORDER>
__device__ __forceinline__ float grad_factor(int act, float v, float alpha, float gain, float clamp) {
  const float y = act_eval<0>(act, v, alpha) * gain;
  return (clamp < 0.0f || fabsf(y) <= clamp) ? act_eval<ORDER>(act, v, alpha) * gain : 0.0f;
}

// One element: mode 0: clamp(gain f(v)); 1: g gain f'(v) keep; 2: g g2 gain f''(v) keep.
template <int MODE>
__device__ __forceinline__ float bias_act_one(float v, float g, float g2, int act, float alpha, float gain,
                                              float clamp) {
  if (MODE == 0) {
    const float r = act_eval<0>(act, v, alpha) * gain;
    return clamp >= 0.0f ? (r < -clamp ? -clamp : (r > clamp ? clamp : r)) : r;  // NaN stays (fmaxf would drop it)
  }
  const float r = g * grad_factor<MODE>(act, v, alpha, gain, clamp);
  return MODE == 2 ? r * g2 : r;
}

template <typename T>
constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte vector

// x, g, g2, out: (n,) in one layout; b: (C,) or null. The first n_vec * kVec elements go as 16-byte vectors, one per
// thread and step (n_vec = 0 unless x, g, g2 and out are 16-byte aligned: the launcher checks), the channel of each
// element stepped from the vector's first (two divisions per vector); the rest one element per step. Index:
// uint32_t when n fits (a 64-bit division costs more than the memory traffic), else int64_t.
template <typename T, int MODE, typename Index>
__global__ void __launch_bounds__(kThreads) bias_act_kernel(const T* __restrict__ x, const T* __restrict__ b,
                                                            const T* __restrict__ g, const T* __restrict__ g2,
                                                            T* __restrict__ out, Index n, Index n_vec, Index C,
                                                            Index stride_dim, int act, float alpha, float gain,
                                                            float clamp) {
  using V = Vec<T, kVec<T>>;
  const Index step = (Index)gridDim.x * blockDim.x, tid = (Index)blockIdx.x * blockDim.x + threadIdx.x;
  for (Index k = tid; k < n_vec; k += step) {
    const V xv = reinterpret_cast<const V*>(x)[k];
    V gv{}, g2v{}, ov;
    if constexpr (MODE >= 1) gv = reinterpret_cast<const V*>(g)[k];
    if constexpr (MODE == 2) g2v = reinterpret_cast<const V*>(g2)[k];
    const Index i = k * kVec<T>, q = b != nullptr ? i / stride_dim : 0;
    Index pos = i - q * stride_dim, ch = b != nullptr ? q % C : 0;  // element i + j: channel ch at position pos
#pragma unroll
    for (int j = 0; j < kVec<T>; ++j) {
      float v = to_float(xv.v[j]);
      if (b != nullptr) {
        v += to_float(b[ch]);
        if (++pos == stride_dim) {
          pos = 0;
          ch = ch + 1 == C ? 0 : ch + 1;
        }
      }
      ov.v[j] = from_float<T>(bias_act_one<MODE>(v, MODE >= 1 ? to_float(gv.v[j]) : 0.0f,
                                                 MODE == 2 ? to_float(g2v.v[j]) : 0.0f, act, alpha, gain, clamp));
    }
    reinterpret_cast<V*>(out)[k] = ov;
  }
  for (Index i = n_vec * kVec<T> + tid; i < n; i += step) {
    float v = to_float(x[i]);
    if (b != nullptr) v += to_float(b[(i / stride_dim) % C]);
    out[i] = from_float<T>(bias_act_one<MODE>(v, MODE >= 1 ? to_float(g[i]) : 0.0f, MODE == 2 ? to_float(g2[i]) : 0.0f,
                                              act, alpha, gain, clamp));
  }
}

}  // namespace

cudaError_t bias_act(const void* x, const void* b, const void* g, const void* g2, void* out, int64_t n, int64_t C,
                     int64_t stride_dim, int mode, int act, float alpha, float gain, float clamp, int dtype,
                     cudaStream_t stream) {
  if (act < 0 || act >= kNumActs || mode < 0 || mode > 2 || stride_dim < 1 || C < 1) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = aligned_to(x, 16) && aligned_to(out, 16) && (g == nullptr || aligned_to(g, 16)) &&
                     (g2 == nullptr || aligned_to(g2, 16));
    const int64_t n_vec = vec ? n / kVec<T> : 0, tail = n - n_vec * kVec<T>;
    const int64_t want = ((n_vec > tail ? n_vec : tail) + kThreads - 1) / kThreads;
    const dim3 grid((unsigned)(want < kMaxBlocks ? want : kMaxBlocks));
    auto run = [&](auto index) {
      using Index = decltype(index);
      auto args = [&](auto kernel) {
        return launch(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(b),
                      static_cast<const T*>(g), static_cast<const T*>(g2), static_cast<T*>(out), (Index)n,
                      (Index)n_vec, (Index)C, (Index)stride_dim, act, alpha, gain, clamp);
      };
      if (mode == 0) return args(bias_act_kernel<T, 0, Index>);
      if (mode == 1) return args(bias_act_kernel<T, 1, Index>);
      return args(bias_act_kernel<T, 2, Index>);
    };
    // i + step must not wrap either: n + grid * threads < 2^32
    return n + (int64_t)kMaxBlocks * kThreads < (int64_t(1) << 32) ? run(uint32_t{}) : run(int64_t{});
  });
}

}  // namespace gk
