// Declarations of codesign's CPU kernels. All buffers are contiguous, row-major, owned by the
// caller (torch tensors handed over by codesign/ops.py); the kernels never allocate tensors.
#pragma once
#include <cstdint>
#include <vector>

namespace codesign {

// Parameter-free candidates of a mixed op, in the order the Python layer encodes them.
enum FreeOp : int { kZero = 0, kIdentity = 1, kAvgPool3 = 2, kMaxPool3 = 3 };

struct MixedShape {
  int64_t n, c, h, w;    // input x
  int64_t ho, wo;        // output (and every y_k)
  int64_t stride;
};

template <typename T>
void mixed_op_forward(const MixedShape& s, const T* x, const std::vector<const T*>& ys,
                      const T* weights, const std::vector<int>& free_ops, T* out);

// grad_ys[k] may be null (that y_k needs no gradient). grad_w has K_p + len(free_ops) entries.
template <typename T>
void mixed_op_backward(const MixedShape& s, const T* grad_out, const T* x,
                       const std::vector<const T*>& ys, const T* weights,
                       const std::vector<int>& free_ops, T* grad_x, const std::vector<T*>& grad_ys,
                       T* grad_w);

// Gumbel-softmax over rows of logits [R, K]; see codesign/ops.py for the noise definition.
template <typename T>
void gumbel_softmax_forward(const T* logits, int64_t rows, int64_t cols, double tau, uint64_t seed,
                            bool hard, T* y, int64_t* index);

template <typename T>
void gumbel_softmax_backward(const T* grad_y, const T* logits, int64_t rows, int64_t cols,
                             double tau, uint64_t seed, T* grad_logits);

}  // namespace codesign
