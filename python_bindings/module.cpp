// pybind11 bindings of the csrc/ launchers: one thin def per launcher. Pointers and the stream come in as ints.
// Compiled twice: gankern._C (nvcc build) and gankern._sim (CPU simulation, GANKERN_SIM).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "gankern/spectral_norm.h"

namespace py = pybind11;

#ifndef GK_MODULE_NAME
#error "GK_MODULE_NAME must be defined (_C or _sim)"
#endif

namespace {

template <typename T>
T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

cudaStream_t stream_of(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

void check(cudaError_t err, const char* kernel) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("gankern kernel ") + kernel + " failed: " +
                                                   cudaGetErrorString(err));
}

}  // namespace

PYBIND11_MODULE(GK_MODULE_NAME, m) {
  m.doc() = "gankern's CUDA kernel launchers (raw pointers as ints; see csrc/include/gankern/*.h)";
#ifdef GANKERN_SIM
  m.attr("simulated") = true;
  m.def("set_schedule", &gk_sim::set_schedule, py::arg("schedule"), py::arg("seed") = 0,
        "order of the simulated threads between barriers: 0 forward, 1 reverse, 2 shuffled with seed");
#else
  m.attr("simulated") = false;
#endif

  // ---- spectral_norm ----
  m.attr("SN_ROWS_PER_ITEM") = gk::SN_ROWS_PER_ITEM;
  m.attr("SN_COLS_ROWS") = gk::SN_COLS_ROWS;
  m.attr("SN_COLS_COLS") = gk::SN_COLS_COLS;
  m.attr("SN_SCALE_ELEMS") = gk::SN_SCALE_ELEMS;
  m.def("sn_rows", [](std::uintptr_t meta, std::uintptr_t items, int n_items, std::uintptr_t t, int dtype,
                      std::uintptr_t stream) {
    check(gk::sn_rows(ptr<const int64_t>(meta), ptr<const int32_t>(items), n_items, ptr<float>(t), dtype,
                      stream_of(stream)), "sn_rows");
  });
  m.def("sn_cols", [](std::uintptr_t meta, std::uintptr_t items, int n_items, std::uintptr_t s, int dtype,
                      std::uintptr_t stream) {
    check(gk::sn_cols(ptr<const int64_t>(meta), ptr<const int32_t>(items), n_items, ptr<float>(s), dtype,
                      stream_of(stream)), "sn_cols");
  });
  m.def("sn_reduce", [](std::uintptr_t meta, int n_layers, int mode, std::uintptr_t flat, float eps,
                        std::uintptr_t sigma, int dtype, std::uintptr_t stream) {
    check(gk::sn_reduce(ptr<const int64_t>(meta), n_layers, mode, ptr<float>(flat), eps, ptr<float>(sigma), dtype,
                        stream_of(stream)), "sn_reduce");
  });
  m.def("sn_scale", [](std::uintptr_t meta, std::uintptr_t items, int n_items, std::uintptr_t sigma,
                       std::uintptr_t out, int dtype, std::uintptr_t stream) {
    check(gk::sn_scale(ptr<const int64_t>(meta), ptr<const int32_t>(items), n_items, ptr<const float>(sigma),
                       ptr<void>(out), dtype, stream_of(stream)), "sn_scale");
  });
}
