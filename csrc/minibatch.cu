// Minibatch discrimination: the N x N pair loop tiled through shared memory (see include/gankern/minibatch.h).
// Floor per pass: N^2 * B * C abs-diff-adds and N^2 * B exps on the CUDA cores; memory O(N * B * C).
#include "gankern/cuda_compat.h"
#include "gankern/minibatch.h"

namespace gk {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = MB_TILE / kWarps;  // thread (warp w, lane l) evaluates pairs (w + kWarps * k, l)
constexpr int kWStride = MB_TILE + 1;           // row stride of the pair-weight tile (no bank conflicts)
static_assert(MB_TILE == 32, "one lane per row j of a tile");

// Row stride of the M tiles in shared memory: odd, so that lanes reading rows j (stride C) hit distinct banks.
__host__ __device__ __forceinline__ int64_t tile_stride(int64_t C) { return C | 1; }

// tile[r * cs + c] = M[r0 + r, b, c] in fp32, zeros past N.
template <typename T>
__device__ __forceinline__ void load_tile(float* tile, const T* M, int64_t r0, int64_t b, int64_t N, int64_t B,
                                          int64_t C) {
  const int64_t cs = tile_stride(C);
  for (int64_t e = threadIdx.x; e < MB_TILE * C; e += kThreads) {
    const int64_t r = e / C, c = e % C;
    tile[r * cs + c] = r0 + r < N ? to_float(M[((r0 + r) * B + b) * C + c]) : 0.0f;
  }
}

// exp(-||mi[r] - mj[l]||_1) for the pair (i0 + r, j0 + l), 0 when j is past N or j == i.
__device__ __forceinline__ float pair_weight(const float* mi, const float* mj, int r, int l, int64_t i0,
                                             int64_t j0, int64_t N, int64_t C) {
  const int64_t i = i0 + r, j = j0 + l, cs = tile_stride(C);
  if (i >= N || j >= N || i == j) return 0.0f;
  float d = 0.0f;
  for (int64_t c = 0; c < C; ++c) d += fabsf(mi[r * cs + c] - mj[l * cs + c]);
  return __expf(-d);
}

// grid (B, tiles of rows i): o[i, b].
template <typename T>
__global__ void __launch_bounds__(kThreads) disc_forward_kernel(const T* __restrict__ M, int64_t N, int64_t B,
                                                                int64_t C, T* __restrict__ out) {
  GK_DYNAMIC_SMEM(float, smem);
  const int64_t b = blockIdx.x, i0 = (int64_t)blockIdx.y * MB_TILE, cs = tile_stride(C);
  float* mi = smem;                 // [MB_TILE, cs]
  float* mj = smem + MB_TILE * cs;  // [MB_TILE, cs]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile(mi, M, i0, b, N, B, C);
  float acc[kRowsPerWarp] = {};
  for (int64_t j0 = 0; j0 < N; j0 += MB_TILE) {
    __syncthreads();  // the previous tile of rows j is no longer read
    load_tile(mj, M, j0, b, N, B, C);
    __syncthreads();
    for (int k = 0; k < kRowsPerWarp; ++k) acc[k] += pair_weight(mi, mj, warp + kWarps * k, lane, i0, j0, N, C);
  }
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const float total = warp_sum(acc[k]);
    const int64_t i = i0 + warp + kWarps * k;
    if (lane == 0 && i < N) out[i * B + b] = from_float<T>(total);
  }
}

// grid (B, tiles of rows i): dM[i, b, :]. Per tile of rows j: the weights (g_i + g_j) e_ij into shared memory, then
// each thread updates its own elements (r, c) of the dM tile, kept in shared memory until the end.
template <typename T>
__global__ void __launch_bounds__(kThreads) disc_backward_kernel(const T* __restrict__ M, const T* __restrict__ g,
                                                                 int64_t N, int64_t B, int64_t C,
                                                                 T* __restrict__ dM) {
  GK_DYNAMIC_SMEM(float, smem);
  const int64_t b = blockIdx.x, i0 = (int64_t)blockIdx.y * MB_TILE, cs = tile_stride(C);
  float* mi = smem;                  // [MB_TILE, cs]
  float* mj = mi + MB_TILE * cs;     // [MB_TILE, cs]
  float* w = mj + MB_TILE * cs;      // [MB_TILE, kWStride] pair weights of the current tiles
  float* dmi = w + MB_TILE * kWStride;  // [MB_TILE, C] the block's result
  float* gi = dmi + MB_TILE * C;     // [MB_TILE]
  float* gj = gi + MB_TILE;          // [MB_TILE]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile(mi, M, i0, b, N, B, C);
  if (threadIdx.x < MB_TILE) gi[threadIdx.x] = i0 + threadIdx.x < N ? to_float(g[(i0 + threadIdx.x) * B + b]) : 0.0f;
  for (int64_t e = threadIdx.x; e < MB_TILE * C; e += kThreads) dmi[e] = 0.0f;
  for (int64_t j0 = 0; j0 < N; j0 += MB_TILE) {
    __syncthreads();  // the previous tiles of rows j and weights are no longer read
    load_tile(mj, M, j0, b, N, B, C);
    if (threadIdx.x < MB_TILE) gj[threadIdx.x] = j0 + threadIdx.x < N ? to_float(g[(j0 + threadIdx.x) * B + b]) : 0.0f;
    __syncthreads();
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = warp + kWarps * k;
      w[r * kWStride + lane] = (gi[r] + gj[lane]) * pair_weight(mi, mj, r, lane, i0, j0, N, C);
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < MB_TILE * C; e += kThreads) {
      const int64_t r = e / C, c = e % C;
      const float x = mi[r * cs + c];
      float s = 0.0f;
      for (int l = 0; l < MB_TILE; ++l) {
        const float diff = x - mj[l * cs + c];
        s += w[r * kWStride + l] * (float)((diff > 0.0f) - (diff < 0.0f));
      }
      dmi[e] -= s;
    }
  }
  for (int64_t e = threadIdx.x; e < MB_TILE * C; e += kThreads) {  // each thread its own elements: no barrier
    const int64_t r = e / C, c = e % C;
    if (i0 + r < N) dM[((i0 + r) * B + b) * C + c] = from_float<T>(dmi[e]);
  }
}

template <typename F>
cudaError_t dispatch(int dtype, F f) {
  switch (dtype) {
    case kFloat32: return f(float{});
    case kBFloat16: return f(__nv_bfloat16{});
    case kFloat16: return f(__half{});
    default: return cudaErrorInvalidValue;
  }
}

bool bad_sizes(int64_t N, int64_t B, int64_t C) {
  return N < 0 || B < 0 || C < 1 || C > MB_MAX_C || B > 0x7fffffff || (N + MB_TILE - 1) / MB_TILE > 65535;
}

dim3 grid_of(int64_t N, int64_t B) { return dim3((unsigned)B, (unsigned)((N + MB_TILE - 1) / MB_TILE)); }

}  // namespace

cudaError_t mb_disc_forward(const void* M, int64_t N, int64_t B, int64_t C, void* out, int dtype,
                            cudaStream_t stream) {
  if (bad_sizes(N, B, C)) return cudaErrorInvalidValue;
  const size_t smem = sizeof(float) * 2 * MB_TILE * tile_stride(C);
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(disc_forward_kernel<T>, grid_of(N, B), dim3(kThreads), smem, stream, static_cast<const T*>(M), N,
                  B, C, static_cast<T*>(out));
  });
}

cudaError_t mb_disc_backward(const void* M, const void* g, int64_t N, int64_t B, int64_t C, void* dM, int dtype,
                             cudaStream_t stream) {
  if (bad_sizes(N, B, C)) return cudaErrorInvalidValue;
  const size_t smem = sizeof(float) * (2 * MB_TILE * tile_stride(C) + MB_TILE * kWStride + MB_TILE * C + 2 * MB_TILE);
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(disc_backward_kernel<T>, grid_of(N, B), dim3(kThreads), smem, stream, static_cast<const T*>(M),
                  static_cast<const T*>(g), N, B, C, static_cast<T*>(dM));
  });
}

}  // namespace gk
