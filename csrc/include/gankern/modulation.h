// Modulation family launch API (see csrc/modulation.cu): fused bias + activation with its first and second
// derivatives (StyleGAN2's bias_act). All launchers run on `stream` and return the launch's error.
#pragma once
#include <cstdint>

#ifdef GANKERN_SIM
#include "sim/cuda_sim.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace gk {

// Activation codes: the rows of ACTIVATIONS in gankern/ops/modulation.py, in this order.
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish, kNumActs };

// Elementwise over the n elements of x in memory order, with v = x + b[(offset / stride_dim) % C] (b may be null):
//   mode 0: out = clamp(gain * f(v))            (clamp < 0: no clamp; else to [-clamp, clamp])
//   mode 1: out = g * gain * f'(v) * keep        keep = (clamp < 0 or |gain f(v)| <= clamp)
//   mode 2: out = g * g2 * gain * f''(v) * keep
// x, g, g2, out: n elements each with the same strides (a dense layout of x), dtype `dtype`; b: (C,) of `dtype`.
// Floor: mode 0 reads x and writes out (2 n elements), mode 1 three, mode 2 four.
cudaError_t bias_act(const void* x, const void* b, const void* g, const void* g2, void* out, int64_t n, int64_t C,
                     int64_t stride_dim, int mode, int act, float alpha, float gain, float clamp, int dtype,
                     cudaStream_t stream);

}  // namespace gk
