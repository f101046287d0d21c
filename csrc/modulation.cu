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

// x, g, g2, out: (n,) in one layout; b: (C,) or null. Index: uint32_t when n fits (a 64-bit division per
// element would cost more than the memory traffic), else int64_t.
template <typename T, int MODE, typename Index>
__global__ void __launch_bounds__(kThreads) bias_act_kernel(const T* __restrict__ x, const T* __restrict__ b,
                                                            const T* __restrict__ g, const T* __restrict__ g2,
                                                            T* __restrict__ out, Index n, Index C, Index stride_dim,
                                                            int act, float alpha, float gain, float clamp) {
  const Index step = (Index)gridDim.x * blockDim.x;
  for (Index i = (Index)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    float v = to_float(x[i]);
    if (b != nullptr) v += to_float(b[(i / stride_dim) % C]);
    float r;
    if (MODE == 0) {
      r = act_eval<0>(act, v, alpha) * gain;
      if (clamp >= 0.0f) r = r < -clamp ? -clamp : (r > clamp ? clamp : r);  // NaN stays NaN (fmaxf would drop it)
    } else {
      r = to_float(g[i]) * grad_factor<MODE>(act, v, alpha, gain, clamp);
      if (MODE == 2) r *= to_float(g2[i]);
    }
    out[i] = from_float<T>(r);
  }
}

}  // namespace

cudaError_t bias_act(const void* x, const void* b, const void* g, const void* g2, void* out, int64_t n, int64_t C,
                     int64_t stride_dim, int mode, int act, float alpha, float gain, float clamp, int dtype,
                     cudaStream_t stream) {
  if (act < 0 || act >= kNumActs || mode < 0 || mode > 2 || stride_dim < 1 || C < 1) return cudaErrorInvalidValue;
  const int64_t want = (n + kThreads - 1) / kThreads;
  const dim3 grid((unsigned)(want < kMaxBlocks ? want : kMaxBlocks));
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto run = [&](auto index) {
      using Index = decltype(index);
      auto args = [&](auto kernel) {
        return launch(kernel, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), static_cast<const T*>(b),
                      static_cast<const T*>(g), static_cast<const T*>(g2), static_cast<T*>(out), (Index)n, (Index)C,
                      (Index)stride_dim, act, alpha, gain, clamp);
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
