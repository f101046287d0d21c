// Spectral-norm power iteration for many layers at once (launch API; see csrc/spectral_norm.cu).
//
// meta: (L, 9) int64 on the device, one row per layer: [W ptr, u ptr, v ptr, h, w, inner, h_off, w_off, n_off].
//   W is read as the matrix (h, w) with W(r, c) at (c / inner) * h * inner + r * inner + c % inner, which is
//   W.movedim(dim, 0).reshape(h, w) for a contiguous W (inner = w when dim == 0). u (h,), v (w,), dtype of W.
//   h_off / w_off: the layer's offsets in one flat fp32 buffer that holds t (sum h) then s (sum w); n_off: in out
//   (sum numel).
// items: int32 work lists built by gankern/ops/spectral_norm.py (see each launcher).
// dtype: gk::DType of W, u, v and out. All launchers run on `stream` and return the launch's error.
#pragma once
#include <cstdint>

#ifdef GANKERN_SIM
#include "sim/cuda_sim.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace gk {

// One power iteration is three launches: sn_rows, sn_cols, sn_reduce mode 0. flat: the fp32 buffer of t and s.
// Rows of each item: t[h_off + r] = sum_c W(r, c) v[c], for SN_ROWS_PER_ITEM rows from `row0`; the item of row 0
// also zeroes the layer's s. items: (n_items, 2) [layer, row0].
constexpr int SN_ROWS_PER_ITEM = 8;
cudaError_t sn_rows(const int64_t* meta, const int32_t* items, int n_items, float* flat, int dtype,
                    cudaStream_t stream);

// Columns: s[w_off + c] += sum_{r in item} t[h_off + r] W(r, c) (atomic adds; t not normalized yet).
// items: (n_items, 3) [layer, row0, col0], SN_COLS_ROWS rows by SN_COLS_COLS columns each.
constexpr int SN_COLS_ROWS = 64;
constexpr int SN_COLS_COLS = 256;
cudaError_t sn_cols(const int64_t* meta, const int32_t* items, int n_items, float* flat, int dtype,
                    cudaStream_t stream);

// Per layer (one block each). Mode 0 (end of an iteration): nt = max(|t|, eps), u = t / nt, s' = s / nt (= W^T u),
// v = s' / max(|s'|, eps), sigma = |s'|^2 / max(|s'|, eps) (= u^T W v); u, v written in dtype and, in fp32, back
// into flat. Mode 1: sigma = u . t (no iteration).
cudaError_t sn_reduce(const int64_t* meta, int n_layers, int mode, float* flat, float eps, float* sigma, int dtype,
                      cudaStream_t stream);

// out[n_off + e] = W[e] / sigma[layer] over SN_SCALE_ELEMS elements per item. items: (n_items, 2) [layer, e0].
constexpr int SN_SCALE_ELEMS = 2048;
cudaError_t sn_scale(const int64_t* meta, const int32_t* items, int n_items, const float* sigma, void* out, int dtype,
                     cudaStream_t stream);

// Backward of W / sigma (u, v held constant), over the sn_scale work list:
// sn_grad_dot: dots[layer] += sum_e G[n_off + e] * W[e] (atomic; dots zeroed by the caller);
// sn_grad: dW[n_off + e] = G[n_off + e] / sigma - dots / sigma^2 * u[h_off + r] * v[w_off + c] with (r, c) the
// matrix position of element e; u, v: the fp32 flat vectors of sn_reduce (modes 0 and 1). G, dW: dtype.
cudaError_t sn_grad_dot(const int64_t* meta, const int32_t* items, int n_items, const void* g, float* dots, int dtype,
                        cudaStream_t stream);
cudaError_t sn_grad(const int64_t* meta, const int32_t* items, int n_items, const void* g, const float* sigma,
                    const float* dots, const float* u, const float* v, void* dw, int dtype, cudaStream_t stream);

}  // namespace gk
