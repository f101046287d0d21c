// pybind11 defs of the modulation launchers (csrc/include/gankern/modulation.h).
#include "bind.h"
#include "gankern/modulation.h"

namespace gk_bind {

void bind_modulation(py::module_& m) {
  m.def("bias_act", [](std::uintptr_t x, std::uintptr_t b, std::uintptr_t g, std::uintptr_t g2, std::uintptr_t out,
                       int64_t n, int64_t C, int64_t stride_dim, int mode, int act, float alpha, float gain,
                       float clamp, int dtype, std::uintptr_t stream) {
    check(gk::bias_act(ptr<const void>(x), ptr<const void>(b), ptr<const void>(g), ptr<const void>(g2),
                       ptr<void>(out), n, C, stride_dim, mode, act, alpha, gain, clamp, dtype, stream_of(stream)),
          "bias_act");
  });
}

}  // namespace gk_bind
