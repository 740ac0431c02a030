// pybind11 bindings of codesign._C. Tensors cross as raw addresses of contiguous buffers plus
// shapes, so the extension needs no torch headers and survives torch upgrades; codesign/ops.py
// checks dtype, device, shape and contiguity before calling in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace py = pybind11;
using codesign::MixedShape;

namespace {

template <typename T>
T* ptr(uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

template <typename T>
std::vector<const T*> cptrs(const std::vector<uintptr_t>& v) {
  std::vector<const T*> out;
  out.reserve(v.size());
  for (auto a : v) out.push_back(reinterpret_cast<const T*>(a));
  return out;
}

template <typename T>
std::vector<T*> mptrs(const std::vector<uintptr_t>& v) {
  std::vector<T*> out;
  out.reserve(v.size());
  for (auto a : v) out.push_back(reinterpret_cast<T*>(a));
  return out;
}

void check_dtype(const std::string& dtype) {
  if (dtype != "float32" && dtype != "float64")
    throw std::invalid_argument("codesign._C supports float32 and float64, got " + dtype);
}

MixedShape shape_of(const std::vector<int64_t>& xs, const std::vector<int64_t>& os, int64_t stride) {
  if (xs.size() != 4 || os.size() != 2) throw std::invalid_argument("mixed_op: bad shape vectors");
  return MixedShape{xs[0], xs[1], xs[2], xs[3], os[0], os[1], stride};
}

void mixed_fwd(const std::string& dtype, const std::vector<int64_t>& xshape,
               const std::vector<int64_t>& oshape, int64_t stride, uintptr_t x,
               const std::vector<uintptr_t>& ys, uintptr_t w, const std::vector<int>& free_ops,
               uintptr_t out) {
  check_dtype(dtype);
  const MixedShape s = shape_of(xshape, oshape, stride);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::mixed_op_forward<float>(s, ptr<const float>(x), cptrs<float>(ys), ptr<const float>(w),
                                      free_ops, ptr<float>(out));
  else
    codesign::mixed_op_forward<double>(s, ptr<const double>(x), cptrs<double>(ys),
                                       ptr<const double>(w), free_ops, ptr<double>(out));
}

void mixed_bwd(const std::string& dtype, const std::vector<int64_t>& xshape,
               const std::vector<int64_t>& oshape, int64_t stride, uintptr_t grad_out, uintptr_t x,
               const std::vector<uintptr_t>& ys, uintptr_t w, const std::vector<int>& free_ops,
               uintptr_t grad_x, const std::vector<uintptr_t>& grad_ys, uintptr_t grad_w) {
  check_dtype(dtype);
  const MixedShape s = shape_of(xshape, oshape, stride);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::mixed_op_backward<float>(s, ptr<const float>(grad_out), ptr<const float>(x),
                                       cptrs<float>(ys), ptr<const float>(w), free_ops,
                                       ptr<float>(grad_x), mptrs<float>(grad_ys), ptr<float>(grad_w));
  else
    codesign::mixed_op_backward<double>(s, ptr<const double>(grad_out), ptr<const double>(x),
                                        cptrs<double>(ys), ptr<const double>(w), free_ops,
                                        ptr<double>(grad_x), mptrs<double>(grad_ys),
                                        ptr<double>(grad_w));
}

void gumbel_fwd(const std::string& dtype, uintptr_t logits, int64_t rows, int64_t cols, double tau,
                uint64_t seed, bool hard, uintptr_t y, uintptr_t index) {
  check_dtype(dtype);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::gumbel_softmax_forward<float>(ptr<const float>(logits), rows, cols, tau, seed, hard,
                                            ptr<float>(y), ptr<int64_t>(index));
  else
    codesign::gumbel_softmax_forward<double>(ptr<const double>(logits), rows, cols, tau, seed, hard,
                                             ptr<double>(y), ptr<int64_t>(index));
}

void gumbel_bwd(const std::string& dtype, uintptr_t grad_y, uintptr_t logits, int64_t rows,
                int64_t cols, double tau, uint64_t seed, uintptr_t grad_logits) {
  check_dtype(dtype);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::gumbel_softmax_backward<float>(ptr<const float>(grad_y), ptr<const float>(logits),
                                             rows, cols, tau, seed, ptr<float>(grad_logits));
  else
    codesign::gumbel_softmax_backward<double>(ptr<const double>(grad_y), ptr<const double>(logits),
                                              rows, cols, tau, seed, ptr<double>(grad_logits));
}

// The raw generator, exposed so tests can compare it word for word with Triton's tl.randint4x.
std::vector<uint32_t> philox(uint64_t seed, uint32_t c0, uint32_t c1) {
  const auto b = codesign::philox4x32_10(seed, c0, c1);
  return {b.v[0], b.v[1], b.v[2], b.v[3]};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "codesign's C++ CPU kernels (fused mixed op, Gumbel-softmax)";
  m.def("mixed_op_forward", &mixed_fwd);
  m.def("mixed_op_backward", &mixed_bwd);
  m.def("gumbel_softmax_forward", &gumbel_fwd);
  m.def("gumbel_softmax_backward", &gumbel_bwd);
  m.def("philox4x32_10", &philox);
  m.def("max_threads", &codesign::max_threads);
  m.attr("has_openmp") = py::bool_(CODESIGN_HAVE_OPENMP != 0);
}
