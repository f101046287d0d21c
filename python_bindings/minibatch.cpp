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
  m.def("mb_std_partials", &gk::mb_std_partials);
  m.def("mb_std_forward", [](std::uintptr_t x, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F, float eps,
                             std::uintptr_t out, std::uintptr_t partials, int dtype, std::uintptr_t stream) {
    check(gk::mb_std_forward(ptr<const void>(x), N, C, HW, G, F, eps, ptr<void>(out), ptr<float>(partials), dtype,
                             stream_of(stream)), "mb_std_forward");
  });
  m.def("mb_std_backward", [](std::uintptr_t x, std::uintptr_t dout, int64_t N, int64_t C, int64_t HW, int64_t G,
                              int64_t F, float eps, std::uintptr_t dx, int dtype, std::uintptr_t stream) {
    check(gk::mb_std_backward(ptr<const void>(x), ptr<const void>(dout), N, C, HW, G, F, eps, ptr<void>(dx), dtype,
                              stream_of(stream)), "mb_std_backward");
  });
}

}  // namespace gk_bind
