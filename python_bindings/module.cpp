// pybind11 module of gankern's CUDA launchers: one bind_<family> per op family (python_bindings/<family>.cpp).
// Compiled twice: gankern._C (nvcc build) and gankern._sim (CPU simulation, GANKERN_SIM).
#include "bind.h"

#ifndef GK_MODULE_NAME
#error "GK_MODULE_NAME must be defined (_C or _sim)"
#endif

namespace gk_bind {
#ifdef GANKERN_SIM
void bind_sim_selftest(py::module_& m);
#endif
void bind_spectral_norm(py::module_& m);
void bind_minibatch(py::module_& m);
void bind_modulation(py::module_& m);
}  // namespace gk_bind

PYBIND11_MODULE(GK_MODULE_NAME, m) {
  m.doc() = "gankern's CUDA kernel launchers (raw pointers as ints; see csrc/include/gankern/*.h)";
#ifdef GANKERN_SIM
  m.attr("simulated") = true;
  m.def("set_schedule", [](int schedule, unsigned seed) {
#ifdef __SANITIZE_ADDRESS__
    if (schedule == gk_sim::kInterleaved)
      throw pybind11::value_error("the interleaved schedule needs the store hooks of gankern._sim; this build "
                                  "(AddressSanitizer) has none");
#endif
    if (schedule < gk_sim::kForward || schedule > gk_sim::kInterleaved)
      throw pybind11::value_error("schedule: 0 forward, 1 reverse, 2 shuffled, 3 interleaved");
    gk_sim::set_schedule(schedule, seed);
  }, pybind11::arg("schedule"), pybind11::arg("seed") = 0,
        "order of the simulated threads: 0 forward, 1 reverse, 2 shuffled with seed (each runs to its next "
        "barrier), 3 interleaved (shuffled, switching also at every store and atomic)");
  m.def("static_smem_bytes", &gk_sim::static_smem_bytes, "bytes of __shared__ statics poisoned at each block start");
  gk_bind::bind_sim_selftest(m);
#else
  m.attr("simulated") = false;
#endif
  gk_bind::bind_spectral_norm(m);
  gk_bind::bind_minibatch(m);
  gk_bind::bind_modulation(m);
}
