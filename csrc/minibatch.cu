// Minibatch family kernels (see include/gankern/minibatch.h).
//
// Minibatch discrimination: the N x N pair loop tiled through shared memory. Floor per pass: N^2 * B * C
// abs-diff-adds (2 FP32 instructions each) and N^2 * B exps on the CUDA cores; memory O(N * B * C).
//
// A block serves one b and MB_TILE rows i; the rows j stream through shared memory MB_TILE at a time. Both tiles
// hold rows of M in fp32, zero-padded to a multiple of 4 columns (|0 - 0| adds nothing) and read as 16-byte
// vectors. Thread (ty, tx) of a 16 x 16 block computes the distances of the 4 x 4 pairs
// (ty + 16 a, tx + 16 b): 8 vector loads per 64 abs-diff-adds, so the loop is bound by the FP32 units.
#include "gankern/cuda_compat.h"
#include "gankern/minibatch.h"

namespace gk {
namespace {

constexpr int kThreads = 256;
constexpr int kSide = 16;                    // threads per side of the pair tile
constexpr int kReg = MB_TILE / kSide;        // pairs per thread per side
constexpr int kWStride = MB_TILE + 1;        // row stride of the backward's pair-weight tile (no bank conflicts)
constexpr int kItems = (MB_TILE * ((MB_MAX_C + 3) / 4) + kThreads - 1) / kThreads;  // backward (row, 4 cols) items
static_assert(kSide * kSide == kThreads && kReg * kSide == MB_TILE, "16 x 16 threads, 4 x 4 pairs each");

struct alignas(16) Vec4 {
  float x, y, z, w;
};

// Row stride of the tiles in Vec4 units: ceil(C / 4), made odd so that 16-byte loads of different rows spread over
// the banks.
__host__ __device__ __forceinline__ int64_t vec_stride(int64_t C) { return ((C + 3) / 4) | 1; }

// tile[r, c] = M[r0 + r, b, c] in fp32 for r < MB_TILE, c < 4 * vec_stride(C); zeros past N or C. 32-bit tile
// indices stepped incrementally (no division per element: the tile is at most MB_TILE x 52 floats).
template <typename T>
__device__ __forceinline__ void load_tile(Vec4* tile, const T* M, int64_t r0, int64_t b, int64_t N, int64_t B,
                                          int64_t C) {
  const int width = 4 * (int)vec_stride(C), c_end = (int)C;
  const int rows = N - r0 < MB_TILE ? (int)(N - r0) : MB_TILE;
  const T* src = M + (r0 * B + b) * C;  // row r at src + r * B * C
  float* t = reinterpret_cast<float*>(tile);
  DivStep<int> rc((int)threadIdx.x, kThreads, width);  // (row, column) of element e
  for (int e = threadIdx.x; e < MB_TILE * width; e += kThreads, rc.next())
    t[e] = rc.q < rows && rc.r < c_end ? to_float(src[rc.q * B * C + rc.r]) : 0.0f;
}

__device__ __forceinline__ float abs_diff4(const Vec4& a, const Vec4& b) {
  return fabsf(a.x - b.x) + fabsf(a.y - b.y) + fabsf(a.z - b.z) + fabsf(a.w - b.w);
}

// d[a][b] = ||mi[ty + 16 a] - mj[tx + 16 b]||_1.
__device__ __forceinline__ void distances(const Vec4* mi, const Vec4* mj, int64_t C, int ty, int tx,
                                          float d[kReg][kReg]) {
  const int64_t s4 = vec_stride(C), n4 = (C + 3) / 4;
  for (int a = 0; a < kReg; ++a)
    for (int b = 0; b < kReg; ++b) d[a][b] = 0.0f;
  for (int64_t c4 = 0; c4 < n4; ++c4) {
    Vec4 x[kReg], y[kReg];
    for (int a = 0; a < kReg; ++a) x[a] = mi[(ty + kSide * a) * s4 + c4];
    for (int b = 0; b < kReg; ++b) y[b] = mj[(tx + kSide * b) * s4 + c4];
    for (int a = 0; a < kReg; ++a)
      for (int b = 0; b < kReg; ++b) d[a][b] += abs_diff4(x[a], y[b]);
  }
}

// exp(-d) for the pair (i, j); 0 for j == i and for rows past N.
__device__ __forceinline__ float pair_weight(float d, int64_t i, int64_t j, int64_t N) {
  return i < N && j < N && i != j ? __expf(-d) : 0.0f;
}

__device__ __forceinline__ float sign_of(float v) { return (float)((v > 0.0f) - (v < 0.0f)); }

// grid (B, row tiles): o[i, b].
template <typename T>
__global__ void __launch_bounds__(kThreads) disc_forward_kernel(const T* __restrict__ M, int64_t N, int64_t B,
                                                                int64_t C, T* __restrict__ out) {
  GK_DYNAMIC_SMEM(Vec4, smem);
  Vec4* mi = smem;                              // [MB_TILE, vec_stride(C)]
  Vec4* mj = smem + MB_TILE * vec_stride(C);    // [MB_TILE, vec_stride(C)]
  const int64_t b = blockIdx.x, i0 = (int64_t)blockIdx.y * MB_TILE;
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
  load_tile(mi, M, i0, b, N, B, C);
  float acc[kReg] = {};
  for (int64_t j0 = 0; j0 < N; j0 += MB_TILE) {
    __syncthreads();  // the previous tile of rows j is no longer read
    load_tile(mj, M, j0, b, N, B, C);
    __syncthreads();
    float d[kReg][kReg];
    distances(mi, mj, C, ty, tx, d);
    for (int a = 0; a < kReg; ++a)
      for (int c = 0; c < kReg; ++c) acc[a] += pair_weight(d[a][c], i0 + ty + kSide * a, j0 + tx + kSide * c, N);
  }
  for (int a = 0; a < kReg; ++a) {  // sum over the 16 threads of a row (16 lanes of one warp)
    float v = acc[a];
    for (int offset = kSide / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    const int64_t i = i0 + ty + kSide * a;
    if (tx == 0 && i < N) out[i * B + b] = from_float<T>(v);
  }
}

// grid (B, row tiles): dM[i, b, :]. Per tile of rows j: the weights (g_i + g_j) e_ij of all pairs into shared
// memory, then each thread accumulates its own (row, 4 columns) items of dM over the tile's rows j in registers.
template <typename T>
__global__ void __launch_bounds__(kThreads) disc_backward_kernel(const T* __restrict__ M, const T* __restrict__ g,
                                                                 int64_t N, int64_t B, int64_t C,
                                                                 T* __restrict__ dM) {
  GK_DYNAMIC_SMEM(Vec4, smem);
  const int64_t s4 = vec_stride(C), n4 = (C + 3) / 4;
  Vec4* mi = smem;                                    // [MB_TILE, s4]
  Vec4* mj = mi + MB_TILE * s4;                       // [MB_TILE, s4]
  float* w = reinterpret_cast<float*>(mj + MB_TILE * s4);  // [MB_TILE, kWStride] pair weights of the tiles
  float* gi = w + MB_TILE * kWStride;                 // [MB_TILE]
  float* gj = gi + MB_TILE;                           // [MB_TILE]
  const int64_t b = blockIdx.x, i0 = (int64_t)blockIdx.y * MB_TILE;
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
  // item e = threadIdx.x + kThreads * k (k < kItems, e < MB_TILE * n4): row e / n4, columns 4 (e % n4) .. + 3;
  // rows past the tile mark items that do not exist. 32-bit division once per item, not per tile of rows j.
  int item_row[kItems], item_col[kItems];
  for (int k = 0; k < kItems; ++k) {
    const int e = (int)threadIdx.x + kThreads * k;
    item_row[k] = e / (int)n4;
    item_col[k] = e - item_row[k] * (int)n4;
  }
  load_tile(mi, M, i0, b, N, B, C);
  if (threadIdx.x < MB_TILE) gi[threadIdx.x] = i0 + threadIdx.x < N ? to_float(g[(i0 + threadIdx.x) * B + b]) : 0.0f;
  __syncthreads();
  Vec4 xi[kItems], acc[kItems];
  for (int k = 0; k < kItems; ++k) {
    xi[k] = item_row[k] < MB_TILE ? mi[item_row[k] * s4 + item_col[k]] : Vec4{0.0f, 0.0f, 0.0f, 0.0f};
    acc[k] = Vec4{0.0f, 0.0f, 0.0f, 0.0f};
  }
  for (int64_t j0 = 0; j0 < N; j0 += MB_TILE) {
    __syncthreads();  // the previous tiles of rows j and weights are no longer read
    load_tile(mj, M, j0, b, N, B, C);
    if (threadIdx.x < MB_TILE) gj[threadIdx.x] = j0 + threadIdx.x < N ? to_float(g[(j0 + threadIdx.x) * B + b]) : 0.0f;
    __syncthreads();
    float d[kReg][kReg];
    distances(mi, mj, C, ty, tx, d);
    for (int a = 0; a < kReg; ++a)
      for (int c = 0; c < kReg; ++c) {
        const int r = ty + kSide * a, l = tx + kSide * c;
        w[r * kWStride + l] = (gi[r] + gj[l]) * pair_weight(d[a][c], i0 + r, j0 + l, N);
      }
    __syncthreads();
    const int64_t rows_j = N - j0 < MB_TILE ? N - j0 : MB_TILE;
    for (int k = 0; k < kItems; ++k) {
      if (item_row[k] >= MB_TILE) break;
      const float* wr = w + item_row[k] * kWStride;
      const Vec4* y = mj + item_col[k];
      for (int64_t l = 0; l < rows_j; ++l) {
        const float wv = wr[l];
        const Vec4 m = y[l * s4];
        acc[k].x -= wv * sign_of(xi[k].x - m.x);
        acc[k].y -= wv * sign_of(xi[k].y - m.y);
        acc[k].z -= wv * sign_of(xi[k].z - m.z);
        acc[k].w -= wv * sign_of(xi[k].w - m.w);
      }
    }
  }
  for (int k = 0; k < kItems; ++k) {
    const int r = item_row[k], c = 4 * item_col[k];
    if (r >= MB_TILE || i0 + r >= N) continue;
    T* dst = dM + ((i0 + r) * B + b) * C;
    const float v[4] = {acc[k].x, acc[k].y, acc[k].z, acc[k].w};
    for (int q = 0; q < 4 && c + q < C; ++q) dst[c + q] = from_float<T>(v[q]);
  }
}

// Minibatch stddev. The c * H * W slab of a (group slot m, channel group f) is split over P blocks (grid (S * F, P),
// P from std_splits, so that small batches still fill the GPU); each thread takes elements k of the block's part
// and reads their G values (mean, then variance: the re-reads hit L1). Forward: copies x into out and writes the
// block's sum of s into partials[(m * F + f) * P + p]; std_fill_kernel then sums the P partials in order and writes
// the mean into the extra channel f of the G samples. Backward: dx = dout[:, :C] + (x - mean) / (G * s) * gstd /
// (c * H * W), gstd the sum of dout's extra channel f over the group's samples (each block sums it).
// Floor: x read and the output written once (backward: x and dout read, dx written).
template <typename T, bool kBackward>
__global__ void __launch_bounds__(kThreads) std_kernel(const T* __restrict__ x, const T* __restrict__ dout,
                                                       int64_t C, int64_t HW, int64_t G, int64_t F, int64_t S,
                                                       int64_t chunk, float eps, T* __restrict__ out,
                                                       float* __restrict__ partials) {
  __shared__ float scratch[32];
  const int64_t m = blockIdx.x / (unsigned)F, f = blockIdx.x - m * F, chw = C / F * HW, CF = C + F;
  float coef = 0.0f;
  if constexpr (kBackward) {
    float acc = 0.0f;
    DivStep<int64_t> gp(threadIdx.x, kThreads, HW);  // (sample in the group, pixel)
    for (int64_t e = threadIdx.x; e < G * HW; e += kThreads, gp.next())
      acc += to_float(dout[((gp.q * S + m) * CF + C + f) * HW + gp.r]);
    coef = block_sum(acc, scratch) / (float)(chw * G);
  }
  const int64_t k0 = f * chw + blockIdx.y * chunk, k1 = k0 + chunk < (f + 1) * chw ? k0 + chunk : (f + 1) * chw;
  float acc = 0.0f;
  for (int64_t k = k0 + threadIdx.x; k < k1; k += kThreads) {
    float mean = 0.0f, var = 0.0f;
    for (int64_t g = 0; g < G; ++g) mean += to_float(x[(g * S + m) * C * HW + k]);
    mean /= (float)G;
    for (int64_t g = 0; g < G; ++g) {
      const float d = to_float(x[(g * S + m) * C * HW + k]) - mean;
      var += d * d;
    }
    const float s = sqrtf(var / (float)G + eps);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t n = g * S + m;
      if constexpr (kBackward)
        out[n * C * HW + k] = from_float<T>(to_float(dout[n * CF * HW + k]) + (to_float(x[n * C * HW + k]) - mean) *
                                                                                  (coef / s));
      else
        out[n * CF * HW + k] = x[n * C * HW + k];
    }
    acc += s;
  }
  if constexpr (!kBackward) {
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[(int64_t)blockIdx.x * gridDim.y + blockIdx.y] = acc;
  }
}

// grid (S * F): the extra channel f of the G samples of slot m = the sum of the slab's P partials / (c * H * W).
template <typename T>
__global__ void __launch_bounds__(kThreads) std_fill_kernel(const float* __restrict__ partials, int64_t P,
                                                            int64_t C, int64_t HW, int64_t G, int64_t F, int64_t S,
                                                            T* __restrict__ out) {
  const int64_t m = blockIdx.x / (unsigned)F, f = blockIdx.x - m * F, chw = C / F * HW;
  float total = 0.0f;
  for (int64_t p = 0; p < P; ++p) total += partials[blockIdx.x * P + p];  // the same order every run
  const T std = from_float<T>(total / (float)chw);
  DivStep<int64_t> gp(threadIdx.x, kThreads, HW);  // (sample in the group, pixel)
  for (int64_t e = threadIdx.x; e < G * HW; e += kThreads, gp.next())
    out[((gp.q * S + m) * (C + F) + C + f) * HW + gp.r] = std;
}

bool bad_sizes(int64_t N, int64_t B, int64_t C) {
  return N < 0 || B < 0 || C < 1 || C > MB_MAX_C || B > 0x7fffffff || (N + MB_TILE - 1) / MB_TILE > 65535;
}

dim3 grid_of(int64_t N, int64_t B) { return dim3((unsigned)B, (unsigned)((N + MB_TILE - 1) / MB_TILE)); }

size_t tiles_bytes(int64_t C) { return sizeof(Vec4) * 2 * MB_TILE * vec_stride(C); }

bool bad_std_sizes(int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F) {
  return N < 1 || C < 1 || HW < 1 || G < 1 || F < 1 || N % G != 0 || C % F != 0 || N / G * F > 0x7fffffff;
}

// Elements of a slab per block: P = ceil(chw / chunk) blocks per slab make the grid about kStdBlocks blocks (two per
// SM of a 132-SM GPU) when the S * F slabs are fewer, whole steps of the block each.
constexpr int64_t kStdBlocks = 264;
int64_t std_chunk(int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F) {
  const int64_t slabs = N / G * F, chw = C / F * HW;
  const int64_t want = slabs >= kStdBlocks ? 1 : (kStdBlocks + slabs - 1) / slabs;
  const int64_t chunk = (chw + want - 1) / want;
  return (chunk + kThreads - 1) / kThreads * kThreads;
}

int64_t std_splits(int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F) {
  return (C / F * HW + std_chunk(N, C, HW, G, F) - 1) / std_chunk(N, C, HW, G, F);
}

template <bool kBackward>
cudaError_t launch_std(const void* x, const void* dout, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F,
                       float eps, void* out, float* partials, int dtype, cudaStream_t stream) {
  if (bad_std_sizes(N, C, HW, G, F)) return cudaErrorInvalidValue;
  const int64_t chunk = std_chunk(N, C, HW, G, F), P = std_splits(N, C, HW, G, F);
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const cudaError_t e = launch(std_kernel<T, kBackward>, dim3((unsigned)(N / G * F), (unsigned)P), dim3(kThreads),
                                 0, stream, static_cast<const T*>(x), static_cast<const T*>(dout), C, HW, G, F, N / G,
                                 chunk, eps, static_cast<T*>(out), partials);
    if (kBackward || e != cudaSuccess) return e;
    return launch(std_fill_kernel<T>, dim3((unsigned)(N / G * F)), dim3(kThreads), 0, stream,
                  static_cast<const float*>(partials), P, C, HW, G, F, N / G, static_cast<T*>(out));
  });
}

}  // namespace

int64_t mb_std_partials(int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F) {
  return bad_std_sizes(N, C, HW, G, F) ? 0 : N / G * F * std_splits(N, C, HW, G, F);
}

cudaError_t mb_std_forward(const void* x, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F, float eps,
                           void* out, float* partials, int dtype, cudaStream_t stream) {
  return launch_std<false>(x, nullptr, N, C, HW, G, F, eps, out, partials, dtype, stream);
}

cudaError_t mb_std_backward(const void* x, const void* dout, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F,
                            float eps, void* dx, int dtype, cudaStream_t stream) {
  return launch_std<true>(x, dout, N, C, HW, G, F, eps, dx, nullptr, dtype, stream);
}

cudaError_t mb_disc_forward(const void* M, int64_t N, int64_t B, int64_t C, void* out, int dtype,
                            cudaStream_t stream) {
  if (bad_sizes(N, B, C)) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(disc_forward_kernel<T>, grid_of(N, B), dim3(kThreads), tiles_bytes(C), stream,
                  static_cast<const T*>(M), N, B, C, static_cast<T*>(out));
  });
}

cudaError_t mb_disc_backward(const void* M, const void* g, int64_t N, int64_t B, int64_t C, void* dM, int dtype,
                             cudaStream_t stream) {
  if (bad_sizes(N, B, C)) return cudaErrorInvalidValue;
  const size_t smem = tiles_bytes(C) + sizeof(float) * (MB_TILE * kWStride + 2 * MB_TILE);
  static_assert(sizeof(Vec4) * 2 * MB_TILE * (((MB_MAX_C + 3) / 4) | 1) + sizeof(float) * (MB_TILE * kWStride +
                2 * MB_TILE) <= 48 * 1024, "the backward's tiles fit the default 48 KiB of dynamic shared memory");
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(disc_backward_kernel<T>, grid_of(N, B), dim3(kThreads), smem, stream, static_cast<const T*>(M),
                  static_cast<const T*>(g), N, B, C, static_cast<T*>(dM));
  });
}

}  // namespace gk
