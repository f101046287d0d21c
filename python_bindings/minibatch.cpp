// pybind11 defs of the minibatch launchers (csrc/include/gankern/minibatch.h).
#include "bind.h"
#include "gankern/minibatch.h"

namespace gk_bind {

void bind_minibatch(py::module_& m) {
  m.attr("MB_MAX_C") = gk::MB_MAX_C;
  m.def("mb_disc_forward", [](std::uintptr_t M, int64_t N, int64_t B, int64_t C, std::uintptr_t out, int dtype,
                              std::uintptr_t stream) {
    check(gk::mb_disc_forward(ptr<const void>(M), N, B, C, ptr<void>(out), dtype, stream_of(stream)),
          "mb_disc_forward");
  });
  m.def("mb_disc_backward", [](std::uintptr_t M, std::uintptr_t g, int64_t N, int64_t B, int64_t C,
                               std::uintptr_t dM, int dtype, std::uintptr_t stream) {
    check(gk::mb_disc_backward(ptr<const void>(M), ptr<const void>(g), N, B, C, ptr<void>(dM), dtype,
                               stream_of(stream)), "mb_disc_backward");
  });
}

}  // namespace gk_bind
