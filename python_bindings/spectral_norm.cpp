// pybind11 defs of the spectral_norm launchers (csrc/include/gankern/spectral_norm.h).
#include "bind.h"
#include "gankern/spectral_norm.h"

namespace gk_bind {

void bind_spectral_norm(py::module_& m) {
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
  m.def("sn_grad_dot", [](std::uintptr_t meta, std::uintptr_t items, int n_items, std::uintptr_t g,
                          std::uintptr_t dots, int dtype, std::uintptr_t stream) {
    check(gk::sn_grad_dot(ptr<const int64_t>(meta), ptr<const int32_t>(items), n_items, ptr<const void>(g),
                          ptr<float>(dots), dtype, stream_of(stream)), "sn_grad_dot");
  });
  m.def("sn_grad", [](std::uintptr_t meta, std::uintptr_t items, int n_items, std::uintptr_t g, std::uintptr_t sigma,
                      std::uintptr_t dots, std::uintptr_t u, std::uintptr_t v, std::uintptr_t dw, int dtype,
                      std::uintptr_t stream) {
    check(gk::sn_grad(ptr<const int64_t>(meta), ptr<const int32_t>(items), n_items, ptr<const void>(g),
                      ptr<const float>(sigma), ptr<const float>(dots), ptr<const float>(u), ptr<const float>(v),
                      ptr<void>(dw), dtype, stream_of(stream)), "sn_grad");
  });
}

}  // namespace gk_bind
