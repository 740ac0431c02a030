// Declarations of codesign's CPU kernels. All buffers are owned by the caller (torch tensors
// handed over by codesign/ops.py); the kernels never allocate tensors.
#pragma once
#include <cstdint>
#include <vector>

namespace codesign {

// Parameter-free candidates of a mixed op, in the order the Python layer encodes them.
enum FreeOp : int { kZero = 0, kIdentity = 1, kAvgPool3 = 2, kMaxPool3 = 3 };

// Memory layouts of the mixed op's 4-D maps. NCHW: every (n, c) plane is an image of one
// channel. NHWC (torch's channels_last): every n is an image whose pixels hold C contiguous
// channels. Either way a kernel walks images of rows of pixels of `ch` contiguous values.
enum Layout : int { kNCHW = 0, kNHWC = 1 };

// A 4-D map [N, C, H, W] given by its address and element strides.
template <typename T>
struct Map {
  T* p = nullptr;
  int64_t sn = 0, sc = 0, sh = 0, sw = 0;
};

struct MixedShape {
  int64_t n, c, h, w;    // input x
  int64_t ho, wo;        // output (and every y_k)
  int64_t stride;
  Layout layout;
};

// x may have any strides whose channel stride is 1 under NHWC; out and every ys[k] must have
// dense rows (pixel stride 1 under NCHW, C under NHWC), which codesign/ops.py guarantees.
template <typename T>
void mixed_op_forward(const MixedShape& s, Map<const T> x, const std::vector<Map<const T>>& ys,
                      const T* weights, const std::vector<int>& free_ops, Map<T> out);

// grad_ys[k].p may be null (that y_k needs no gradient). grad_w has K_p + len(free_ops)
// entries, or is null when the weights need no gradient: then no y_k is read (their maps may be
// null) and x only where a max pool routes its gradient. grad_out, grad_x and grad_ys have dense
// rows.
template <typename T>
void mixed_op_backward(const MixedShape& s, Map<const T> grad_out, Map<const T> x,
                       const std::vector<Map<const T>>& ys, const T* weights,
                       const std::vector<int>& free_ops, Map<T> grad_x,
                       const std::vector<Map<T>>& grad_ys, T* grad_w);

struct DepthwiseShape {
  int64_t n, c, h, w;    // input x, channels_last
  int64_t ho, wo;        // output
  int64_t k, stride, pad, dilation;
};

// out = conv2d(x, w, stride, pad, dilation, groups=C) on NHWC maps: x has channel stride 1, out
// has dense rows; w is [C, K, K] contiguous.
template <typename T>
void depthwise_forward(const DepthwiseShape& s, Map<const T> x, const T* w, Map<T> out);

// grad_x.p or grad_w may be null (not wanted). grad_out and grad_x have dense rows.
template <typename T>
void depthwise_backward(const DepthwiseShape& s, Map<const T> grad_out, Map<const T> x, const T* w,
                        Map<T> grad_x, T* grad_w);

struct BatchNormShape {
  int64_t n, c, h, w;  // channels_last maps with dense rows
};

// Training-mode batch norm (+ ReLU when relu): normalises with the batch's statistics and writes
// them: mean, 1/std and the (biased) variance, per channel.
template <typename T>
void batch_norm_forward(const BatchNormShape& s, Map<const T> x, const T* weight, const T* bias, double eps,
                        bool relu, Map<T> out, T* save_mean, T* save_invstd, T* save_var);

// grad_x.p, grad_weight or grad_bias may be null (not wanted).
template <typename T>
void batch_norm_backward(const BatchNormShape& s, Map<const T> grad_out, Map<const T> x, const T* weight,
                         const T* bias, const T* save_mean, const T* save_invstd, bool relu, Map<T> grad_x,
                         T* grad_weight, T* grad_bias);

// Gumbel-softmax over rows of logits [R, K]; see codesign/ops.py for the noise definition.
template <typename T>
void gumbel_softmax_forward(const T* logits, int64_t rows, int64_t cols, double tau, uint64_t seed,
                            bool hard, T* y, int64_t* index);

template <typename T>
void gumbel_softmax_backward(const T* grad_y, const T* logits, int64_t rows, int64_t cols,
                             double tau, uint64_t seed, T* grad_logits);

}  // namespace codesign
