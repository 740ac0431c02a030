// pybind11 bindings of codesign._C. Tensors cross as raw addresses plus element strides and
// shapes, so the extension needs no torch headers and survives torch upgrades; codesign/ops.py
// checks dtype, device, shape and strides before calling in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "buffers.h"
#include "common.h"
#include "kernels.h"

namespace py = pybind11;
using codesign::MixedShape;

namespace {

template <typename T>
T* ptr(uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

void check_dtype(const std::string& dtype) {
  if (dtype != "float32" && dtype != "float64")
    throw std::invalid_argument("codesign._C supports float32 and float64, got " + dtype);
}

// A map crosses as (address, stride_n, stride_c, stride_h, stride_w), strides in elements.
using MapArg = std::tuple<uintptr_t, int64_t, int64_t, int64_t, int64_t>;

template <typename T>
codesign::Map<T> map_of(const MapArg& a) {
  return {reinterpret_cast<T*>(std::get<0>(a)), std::get<1>(a), std::get<2>(a), std::get<3>(a),
          std::get<4>(a)};
}

template <typename T>
std::vector<codesign::Map<T>> maps_of(const std::vector<MapArg>& v) {
  std::vector<codesign::Map<T>> out;
  out.reserve(v.size());
  for (const auto& a : v) out.push_back(map_of<T>(a));
  return out;
}

// shape: n, c, h, w, ho, wo, stride; layout: 0 NCHW, 1 NHWC (channels_last).
MixedShape shape_of(const std::vector<int64_t>& sh, int layout) {
  if (sh.size() != 7) throw std::invalid_argument("mixed_op: shape must be n, c, h, w, ho, wo, stride");
  if (layout != codesign::kNCHW && layout != codesign::kNHWC)
    throw std::invalid_argument("mixed_op: layout must be 0 (NCHW) or 1 (NHWC)");
  return MixedShape{sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], sh[6], static_cast<codesign::Layout>(layout)};
}

template <typename T>
void mixed_fwd_t(const MixedShape& s, const MapArg& x, const std::vector<MapArg>& ys, uintptr_t w,
                 const std::vector<int>& free_ops, const MapArg& out) {
  codesign::mixed_op_forward<T>(s, map_of<const T>(x), maps_of<const T>(ys), ptr<const T>(w), free_ops,
                                map_of<T>(out));
}

void mixed_fwd(const std::string& dtype, int layout, const std::vector<int64_t>& shape, const MapArg& x,
               const std::vector<MapArg>& ys, uintptr_t w, const std::vector<int>& free_ops,
               const MapArg& out) {
  check_dtype(dtype);
  const MixedShape s = shape_of(shape, layout);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    mixed_fwd_t<float>(s, x, ys, w, free_ops, out);
  else
    mixed_fwd_t<double>(s, x, ys, w, free_ops, out);
}

template <typename T>
void mixed_bwd_t(const MixedShape& s, const MapArg& grad_out, const MapArg& x,
                 const std::vector<MapArg>& ys, uintptr_t w, const std::vector<int>& free_ops,
                 const MapArg& grad_x, const std::vector<MapArg>& grad_ys, uintptr_t grad_w) {
  codesign::mixed_op_backward<T>(s, map_of<const T>(grad_out), map_of<const T>(x), maps_of<const T>(ys),
                                 ptr<const T>(w), free_ops, map_of<T>(grad_x), maps_of<T>(grad_ys),
                                 ptr<T>(grad_w));
}

void mixed_bwd(const std::string& dtype, int layout, const std::vector<int64_t>& shape,
               const MapArg& grad_out, const MapArg& x, const std::vector<MapArg>& ys, uintptr_t w,
               const std::vector<int>& free_ops, const MapArg& grad_x, const std::vector<MapArg>& grad_ys,
               uintptr_t grad_w) {
  check_dtype(dtype);
  const MixedShape s = shape_of(shape, layout);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    mixed_bwd_t<float>(s, grad_out, x, ys, w, free_ops, grad_x, grad_ys, grad_w);
  else
    mixed_bwd_t<double>(s, grad_out, x, ys, w, free_ops, grad_x, grad_ys, grad_w);
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

// shape: n, c, h, w, ho, wo, k, stride, pad, dilation.
codesign::DepthwiseShape dw_shape(const std::vector<int64_t>& v) {
  if (v.size() != 10) throw std::invalid_argument("depthwise: shape must be n, c, h, w, ho, wo, k, stride, pad, dilation");
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]};
}

void dw_fwd(const std::string& dtype, const std::vector<int64_t>& shape, const MapArg& x, uintptr_t w,
            const MapArg& out) {
  check_dtype(dtype);
  const codesign::DepthwiseShape s = dw_shape(shape);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::depthwise_forward<float>(s, map_of<const float>(x), ptr<const float>(w), map_of<float>(out));
  else
    codesign::depthwise_forward<double>(s, map_of<const double>(x), ptr<const double>(w), map_of<double>(out));
}

void dw_bwd(const std::string& dtype, const std::vector<int64_t>& shape, const MapArg& grad_out,
            const MapArg& x, uintptr_t w, const MapArg& grad_x, uintptr_t grad_w) {
  check_dtype(dtype);
  const codesign::DepthwiseShape s = dw_shape(shape);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::depthwise_backward<float>(s, map_of<const float>(grad_out), map_of<const float>(x),
                                        ptr<const float>(w), map_of<float>(grad_x), ptr<float>(grad_w));
  else
    codesign::depthwise_backward<double>(s, map_of<const double>(grad_out), map_of<const double>(x),
                                         ptr<const double>(w), map_of<double>(grad_x), ptr<double>(grad_w));
}

codesign::BatchNormShape bn_shape(const std::vector<int64_t>& v) {
  if (v.size() != 4) throw std::invalid_argument("batch_norm: shape must be n, c, h, w");
  return {v[0], v[1], v[2], v[3]};
}

// params: weight, bias, save_mean, save_invstd, save_var (addresses).
void bn_fwd(const std::string& dtype, const std::vector<int64_t>& shape, const MapArg& x,
            const std::vector<uintptr_t>& params, double eps, bool relu, const MapArg& out) {
  check_dtype(dtype);
  if (params.size() != 5) throw std::invalid_argument("batch_norm: 5 parameter addresses expected");
  const codesign::BatchNormShape s = bn_shape(shape);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::batch_norm_forward<float>(s, map_of<const float>(x), ptr<const float>(params[0]),
                                        ptr<const float>(params[1]), eps, relu, map_of<float>(out),
                                        ptr<float>(params[2]), ptr<float>(params[3]), ptr<float>(params[4]));
  else
    codesign::batch_norm_forward<double>(s, map_of<const double>(x), ptr<const double>(params[0]),
                                         ptr<const double>(params[1]), eps, relu, map_of<double>(out),
                                         ptr<double>(params[2]), ptr<double>(params[3]), ptr<double>(params[4]));
}

// params: weight, bias, save_mean, save_invstd, grad_weight, grad_bias (addresses).
void bn_bwd(const std::string& dtype, const std::vector<int64_t>& shape, const MapArg& grad_out, const MapArg& x,
            const std::vector<uintptr_t>& params, bool relu, const MapArg& grad_x) {
  check_dtype(dtype);
  if (params.size() != 6) throw std::invalid_argument("batch_norm: 6 parameter addresses expected");
  const codesign::BatchNormShape s = bn_shape(shape);
  py::gil_scoped_release nogil;
  if (dtype == "float32")
    codesign::batch_norm_backward<float>(s, map_of<const float>(grad_out), map_of<const float>(x),
                                         ptr<const float>(params[0]), ptr<const float>(params[1]),
                                         ptr<const float>(params[2]), ptr<const float>(params[3]), relu,
                                         map_of<float>(grad_x), ptr<float>(params[4]), ptr<float>(params[5]));
  else
    codesign::batch_norm_backward<double>(s, map_of<const double>(grad_out), map_of<const double>(x),
                                          ptr<const double>(params[0]), ptr<const double>(params[1]),
                                          ptr<const double>(params[2]), ptr<const double>(params[3]), relu,
                                          map_of<double>(grad_x), ptr<double>(params[4]), ptr<double>(params[5]));
}

// A DLPack capsule of an uninitialised tensor on a pooled buffer (torch.from_dlpack takes it).
py::object empty_pooled(const std::string& dtype, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& strides) {
  check_dtype(dtype);
  if (shape.size() != strides.size()) throw std::invalid_argument("empty_pooled: shape and strides differ in length");
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0 || strides[d] < 0) throw std::invalid_argument("empty_pooled: negative size or stride");
  codesign::DLManagedTensor* t = codesign::pooled_tensor(2, dtype == "float32" ? 32 : 64, shape, strides);
  PyObject* cap = PyCapsule_New(t, "dltensor", [](PyObject* c) {
    if (PyCapsule_IsValid(c, "dltensor")) {  // never handed to a consumer
      auto* m = static_cast<codesign::DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
      m->deleter(m);
    }
  });
  if (cap == nullptr) {
    t->deleter(t);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(cap);
}

py::dict buffer_pool_stats() {
  const codesign::PoolStats st = codesign::pool_stats();
  py::dict d;
  d["idle_bytes"] = st.idle_bytes;
  d["limit_bytes"] = st.limit_bytes;
  d["fresh"] = st.fresh;
  d["reused"] = st.reused;
  return d;
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
  m.def("depthwise_conv2d_forward", &dw_fwd);
  m.def("depthwise_conv2d_backward", &dw_bwd);
  m.def("batch_norm_forward", &bn_fwd);
  m.def("batch_norm_backward", &bn_bwd);
  m.def("gumbel_softmax_forward", &gumbel_fwd);
  m.def("gumbel_softmax_backward", &gumbel_bwd);
  m.def("philox4x32_10", &philox);
  m.def("empty_pooled", &empty_pooled);
  m.def("set_buffer_pool_limit", &codesign::set_pool_limit);
  m.def("buffer_pool_stats", &buffer_pool_stats);
  m.def("max_threads", &codesign::max_threads);
  m.attr("has_openmp") = py::bool_(CODESIGN_HAVE_OPENMP != 0);
}
