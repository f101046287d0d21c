// The scheduler of the CUDA simulation (see cuda_sim.h): blocks one after another, the threads of a block as
// fibers that run until they reach a barrier (or, interleaved, a store); barriers are released when every live
// thread (or lane of the warp) has reached them, and a barrier that some threads can never reach fails the launch
// with a message. This file is not instrumented: only the kernel sources call the store hooks below.
#include "cuda_sim.h"

#include <ucontext.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

#include <numeric>
#include <random>
#include <vector>

thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;

// The static locals of every *_kernel function (the __shared__ variables), gathered by csrc/sim/static_smem.ld.
extern "C" char __start_gk_static_smem[] __attribute__((weak));
extern "C" char __stop_gk_static_smem[] __attribute__((weak));

namespace {

enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx;
  State state;
  dim3 tid;
  unsigned slot;   // which of the resident blocks
  unsigned local;  // linear thread index within its block
};

// One launch. Under the interleaved schedule up to kMaxResident blocks are resident at once (their threads
// interleave, so races between blocks show); each has its own dynamic shared memory, and the one copy of the
// static shared memory is swapped whenever the scheduler passes from a thread of one block to one of another.
struct Launch {
  std::vector<Fiber> fibers;  // slot-major: fiber slot * threads + local
  std::vector<std::vector<char>> stacks;
  std::vector<unsigned char> exchange;  // 16 bytes per thread for warp shuffles
  std::vector<unsigned char> smem;      // dynamic shared memory, dynamic_bytes per slot
  std::vector<std::vector<char>> static_copies;  // per slot, while another slot's copy is in place
  std::vector<dim3> slot_block;
  size_t dynamic_bytes = 0;
  unsigned threads = 0, resident = 0;
  ucontext_t scheduler;
  int current = -1;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
};

constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kMaxDynamicSmem = 48 * 1024;  // without cudaFuncSetAttribute, as on the GPU
constexpr int kExchangeBytes = 16;
constexpr unsigned kMaxResident = 4, kMaxResidentThreads = 1024;

thread_local Launch* g_launch = nullptr;
thread_local int g_schedule = gk_sim::kForward;
thread_local unsigned g_seed = 0;
thread_local cudaError_t g_last_code = cudaSuccess;
thread_local std::string g_last_error;

void fiber_entry() {
  Launch* L = g_launch;
  L->body(L->ctx);
  L->fibers[L->current].state = kDone;  // returning resumes the scheduler through uc_link
}

void wait(State s) {
  Launch* L = g_launch;
  Fiber& f = L->fibers[L->current];
  f.state = s;
  swapcontext(&f.ctx, &L->scheduler);
}

cudaError_t fail(cudaError_t code, const std::string& msg) {
  g_last_code = code;
  g_last_error = msg;
  return code;
}

// NaN bytes over every __shared__ static (under ASan: over their addressable bytes, not the redzones between).
void poison_static_smem() {
  char* p = __start_gk_static_smem;
  const size_t n = gk_sim::static_smem_bytes();
#ifdef __SANITIZE_ADDRESS__
  for (size_t i = 0; i < n; ++i)
    if (!__asan_address_is_poisoned(p + i)) p[i] = (char)0xff;
#else
  std::memset(p, 0xff, n);
#endif
}

std::string where(const dim3& b) {
  return " [block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")]";
}

// Runs the blocks of slot_block[0 .. n_slots) to completion; returns an empty string or what went wrong.
std::string run_blocks(Launch& L, unsigned n_slots, std::mt19937& rng) {
  const unsigned n = L.threads, total = n * n_slots;
  for (unsigned i = 0; i < total; ++i) {
    Fiber& f = L.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = L.stacks[i].data();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &L.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = kRunnable;
  }
  std::fill(L.smem.begin(), L.smem.end(), (unsigned char)0xff);  // NaN in every float type
  poison_static_smem();
  for (auto& c : L.static_copies) std::fill(c.begin(), c.end(), (char)0xff);
  L.resident = 0;
  std::vector<unsigned> order(total);
  std::iota(order.begin(), order.end(), 0u);
  if (g_schedule == gk_sim::kReverse) std::reverse(order.begin(), order.end());
  std::vector<unsigned> done(n_slots), at_block(n_slots), at_warp(n_slots);
  for (;;) {
    if (g_schedule >= gk_sim::kShuffled) std::shuffle(order.begin(), order.end(), rng);
    for (unsigned idx : order) {
      Fiber& f = L.fibers[idx];
      if (f.state != kRunnable) continue;
      if (f.slot != L.resident) {  // bring this block's static shared memory in place
        char* region = __start_gk_static_smem;
        const size_t bytes = gk_sim::static_smem_bytes();
        std::memcpy(L.static_copies[L.resident].data(), region, bytes);
        std::memcpy(region, L.static_copies[f.slot].data(), bytes);
        L.resident = f.slot;
      }
      L.current = (int)idx;
      blockIdx = L.slot_block[f.slot];
      threadIdx = f.tid;
      swapcontext(&L.scheduler, &f.ctx);
    }
    std::fill(done.begin(), done.end(), 0u);
    std::fill(at_block.begin(), at_block.end(), 0u);
    std::fill(at_warp.begin(), at_warp.end(), 0u);
    unsigned all_done = 0, runnable = 0;
    for (unsigned i = 0; i < total; ++i) {
      const Fiber& f = L.fibers[i];
      done[f.slot] += f.state == kDone;
      at_block[f.slot] += f.state == kAtBlockBarrier;
      at_warp[f.slot] += f.state == kAtWarpBarrier;
      all_done += f.state == kDone;
      runnable += f.state == kRunnable;  // switched at a store (interleaved)
    }
    if (all_done == total) return "";
    if (runnable > 0) continue;
    bool released = false;
    for (unsigned s = 0; s < n_slots; ++s) {
      Fiber* fs = &L.fibers[s * n];
      if (at_block[s] > 0 && at_block[s] + done[s] == n) {
        if (done[s] > 0)
          return "__syncthreads() reached by " + std::to_string(at_block[s]) + " of " + std::to_string(n) +
                 " threads of the block; the others had exited (divergent barrier)" + where(L.slot_block[s]);
        for (unsigned i = 0; i < n; ++i) fs[i].state = kRunnable;
        released = true;
        continue;
      }
      for (unsigned base = 0; base < n; base += 32) {
        unsigned lanes = std::min(32u, n - base), w_done = 0, w_wait = 0;
        for (unsigned i = base; i < base + lanes; ++i) {
          w_done += fs[i].state == kDone;
          w_wait += fs[i].state == kAtWarpBarrier;
        }
        if (w_wait == 0 || w_wait + w_done != lanes) continue;
        if (w_done > 0)
          return "a warp shuffle or __syncwarp() in warp " + std::to_string(base / 32) + " was reached by " +
                 std::to_string(w_wait) + " lanes; the others had exited" + where(L.slot_block[s]);
        for (unsigned i = base; i < base + lanes; ++i) fs[i].state = kRunnable;
        released = true;
      }
    }
    if (!released) {
      unsigned blocked = 0, warped = 0;
      for (unsigned s = 0; s < n_slots; ++s) blocked += at_block[s], warped += at_warp[s];
      return "deadlock: " + std::to_string(blocked) + " threads wait at __syncthreads() and " +
             std::to_string(warped) + " at a warp shuffle/__syncwarp() (divergent control flow around a barrier)" +
             where(L.slot_block[0]);
    }
  }
}

}  // namespace

const char* cudaGetErrorString(cudaError_t e) {
  if (e == cudaSuccess) return "no error";
  if (e == g_last_code && !g_last_error.empty()) return g_last_error.c_str();
  switch (e) {
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unspecified launch failure";
  }
}

cudaError_t cudaGetLastError() {
  cudaError_t e = g_last_code;
  g_last_code = cudaSuccess;
  return e;
}

namespace gk_sim {

void set_schedule(int schedule, unsigned seed) {
  g_schedule = schedule;
  g_seed = seed;
}

int schedule() { return g_schedule; }

size_t static_smem_bytes() {
  return __start_gk_static_smem && __stop_gk_static_smem ? (size_t)(__stop_gk_static_smem - __start_gk_static_smem)
                                                         : 0;
}

void switch_point(const void* addr) {
  Launch* L = g_launch;
  if (L == nullptr || g_schedule != kInterleaved || L->current < 0) return;
  const char* stack = L->stacks[L->current].data();
  const char* a = static_cast<const char*>(addr);
  if (a != nullptr && a >= stack && a < stack + kStackBytes) return;  // the fiber's own locals
  wait(kRunnable);
}

cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, void (*body)(void*), void* ctx) {
  const unsigned long nthreads = (unsigned long)block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration,
                "invalid configuration argument: grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) +
                    "," + std::to_string(grid.z) + ") block (" + std::to_string(block.x) + "," +
                    std::to_string(block.y) + "," + std::to_string(block.z) + ")");
  if (dynamic_smem > kMaxDynamicSmem)
    return fail(cudaErrorInvalidValue, "dynamic shared memory of " + std::to_string(dynamic_smem) +
                                           " bytes exceeds the 48 KiB a launch gets without opt-in");
  if (g_launch != nullptr) return fail(cudaErrorLaunchFailure, "nested launch in the simulation");
  // Blocks in the schedule's order too, so that a kernel relying on the order of blocks can fail.
  std::vector<dim3> blocks;
  blocks.reserve((size_t)grid.x * grid.y * grid.z);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) blocks.push_back(dim3(bx, by, bz));
  std::mt19937 rng(g_seed);
  if (g_schedule == gk_sim::kReverse) std::reverse(blocks.begin(), blocks.end());
  if (g_schedule >= gk_sim::kShuffled) std::shuffle(blocks.begin(), blocks.end(), rng);
  const unsigned slots = g_schedule == gk_sim::kInterleaved
                             ? std::max(1u, std::min(kMaxResident, kMaxResidentThreads / (unsigned)nthreads))
                             : 1u;
  Launch L;
  L.body = body;
  L.ctx = ctx;
  L.threads = (unsigned)nthreads;
  L.dynamic_bytes = dynamic_smem;
  L.fibers.resize(nthreads * slots);
  L.stacks.assign(nthreads * slots, std::vector<char>(kStackBytes));
  L.exchange.assign(nthreads * slots * kExchangeBytes, 0);
  L.smem.assign(dynamic_smem * slots, 0);
  L.static_copies.assign(slots > 1 ? slots : 0, std::vector<char>(static_smem_bytes()));
  L.slot_block.resize(slots);
  for (unsigned s = 0, i = 0; s < slots; ++s)
    for (unsigned z = 0; z < block.z; ++z)
      for (unsigned y = 0; y < block.y; ++y)
        for (unsigned x = 0; x < block.x; ++x, ++i)
          L.fibers[i] = Fiber{{}, kRunnable, dim3(x, y, z), s, i - s * L.threads};
  g_launch = &L;
  gridDim = grid;
  blockDim = block;
  std::string err;
  for (size_t b0 = 0; b0 < blocks.size() && err.empty(); b0 += slots) {
    const unsigned n_slots = (unsigned)std::min<size_t>(slots, blocks.size() - b0);
    for (unsigned s = 0; s < n_slots; ++s) L.slot_block[s] = blocks[b0 + s];
    err = run_blocks(L, n_slots, rng);
  }
  g_launch = nullptr;
  if (!err.empty()) return fail(cudaErrorLaunchFailure, err);
  return cudaSuccess;
}

void syncthreads() { wait(kAtBlockBarrier); }

void syncwarp() { wait(kAtWarpBarrier); }

unsigned lane_id() { return g_launch->fibers[g_launch->current].local % 32u; }

void shuffle(const void* in, void* out, int bytes, int src_lane) {
  Launch* L = g_launch;
  const unsigned me = (unsigned)L->current, local = L->fibers[me].local;
  std::memcpy(&L->exchange[me * kExchangeBytes], in, bytes);
  wait(kAtWarpBarrier);  // every lane has deposited its value
  const unsigned src_local = local - local % 32u + (unsigned)src_lane;
  const unsigned src = src_local < L->threads ? me - local + src_local : me;  // past a partial warp: own value
  std::memcpy(out, &L->exchange[src * kExchangeBytes], bytes);
  wait(kAtWarpBarrier);  // every lane has read before any lane deposits again
}

void* dynamic_smem() {
  Launch* L = g_launch;
  return L->smem.data() + L->fibers[L->current].slot * L->dynamic_bytes;
}

}  // namespace gk_sim

// ---- the hooks of -fsanitize=thread, with which the kernel sources are compiled (CMakeLists.txt): a store is a
// switch point of the interleaved schedule; loads, function entries and the rest do nothing ----
#ifndef __SANITIZE_ADDRESS__  // the ASan build has no store hooks (and no interleaved schedule)
extern "C" {
#define GK_SIM_LOADS(n) \
  void __tsan_read##n(void*) {} \
  void __tsan_unaligned_read##n(void*) {}
#define GK_SIM_STORES(n) \
  void __tsan_write##n(void* a) { gk_sim::switch_point(a); } \
  void __tsan_unaligned_write##n(void* a) { gk_sim::switch_point(a); }
GK_SIM_LOADS(1) GK_SIM_LOADS(2) GK_SIM_LOADS(4) GK_SIM_LOADS(8) GK_SIM_LOADS(16)
GK_SIM_STORES(1) GK_SIM_STORES(2) GK_SIM_STORES(4) GK_SIM_STORES(8) GK_SIM_STORES(16)
#undef GK_SIM_LOADS
#undef GK_SIM_STORES
// atomics of the instrumented code (local-static guards, std::atomic in headers): done, never a switch point
unsigned char __tsan_atomic8_load(const volatile unsigned char* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
int __tsan_atomic32_fetch_add(volatile int* a, int v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit(void*) {}
void __tsan_vptr_update(void*, void*) {}
void __tsan_vptr_read(void*) {}
void __tsan_read_range(void*, long) {}
void __tsan_write_range(void* a, long) { gk_sim::switch_point(a); }
void* __tsan_memcpy(void* d, const void* s, unsigned long n) { gk_sim::switch_point(d); return memcpy(d, s, n); }
void* __tsan_memmove(void* d, const void* s, unsigned long n) { gk_sim::switch_point(d); return memmove(d, s, n); }
void* __tsan_memset(void* d, int c, unsigned long n) { gk_sim::switch_point(d); return memset(d, c, n); }
}
#endif
