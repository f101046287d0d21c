// Shared by the per-family binding files (python_bindings/<family>.cpp): pointers and streams come in as ints,
// a failed launch becomes a Python exception that names the kernel.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef GANKERN_SIM
#include "sim/cuda_sim.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace gk_bind {

namespace py = pybind11;

template <typename T>
T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

inline cudaStream_t stream_of(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

inline void check(cudaError_t err, const char* kernel) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("gankern kernel ") + kernel + " failed: " + cudaGetErrorString(err));
}

}  // namespace gk_bind
