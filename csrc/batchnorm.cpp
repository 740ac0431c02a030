// Batch normalisation in training mode, optionally followed by a ReLU, on channels_last (NHWC)
// maps: the BN (+ ReLU) epilogues of the supernet's candidates in one kernel.
//
// Statistics over (N, H, W) per channel, in one pass over data shifted by one of its values per
// channel (so float32 keeps its accuracy without a second, centred pass); every per-channel
// quantity is applied along a row of W * C values through a row-long copy of it, so every loop
// is flat and vectorises whatever C is.
// Each thread owns whole images; per-image sums (in double) are reduced in image order, so
// results do not depend on the thread count. Backward recomputes the ReLU's mask from x, the
// saved mean and 1/std instead of keeping the output; its two per-channel sums come from one pass.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace codesign {
namespace {

template <typename T>
Scratch<T> along_row(const std::vector<double>& per_channel, int64_t w, int64_t c) {
  Scratch<T> row(static_cast<size_t>(w * c));
  for (int64_t j = 0; j < w * c; ++j) row[j] = static_cast<T>(per_channel[j % c]);
  return row;
}

// Two sums over images of f(row), folded per channel, from one pass over the map: f adds a row's
// contributions into acc0 and acc1 (W * C each).
template <typename T, typename F>
void channel_sums2(const BatchNormShape& s, F f, std::vector<double>& total0, std::vector<double>& total1) {
  const int64_t n_row = s.w * s.c;
  std::vector<double> partial(static_cast<size_t>(2 * s.n * s.c), 0.0);
#pragma omp parallel
  {
    Scratch<T> acc0(n_row), acc1(n_row);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.n; ++i) {
      std::fill(acc0.begin(), acc0.end(), T(0));
      std::fill(acc1.begin(), acc1.end(), T(0));
      for (int64_t r = 0; r < s.h; ++r) f(i, r, acc0.data(), acc1.data());
      double* part = partial.data() + 2 * i * s.c;
      for (int64_t j = 0; j < n_row; ++j) {
        part[j % s.c] += static_cast<double>(acc0[j]);
        part[s.c + j % s.c] += static_cast<double>(acc1[j]);
      }
    }
  }
  total0.assign(static_cast<size_t>(s.c), 0.0);
  total1.assign(static_cast<size_t>(s.c), 0.0);
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t c = 0; c < s.c; ++c) {
      total0[c] += partial[2 * i * s.c + c];
      total1[c] += partial[2 * i * s.c + s.c + c];
    }
}

template <typename T>
inline T affine(T x, T a, T b) {
  return x * a + b;
}

template <typename T, bool kRelu>
void bn_backward_rows(const BatchNormShape& s, Map<const T> x, Map<const T> grad_out,
                      const Scratch<T>& mean_row, const Scratch<T>& a_row,
                      const Scratch<T>& b_row, const std::vector<double>& scale,
                      const std::vector<double>& invstd, double count, Map<T> grad_x, T* grad_weight,
                      T* grad_bias) {
  const int64_t n_row = s.w * s.c;
  auto xrow = [&](int64_t i, int64_t r) { return x.p + i * x.sn + r * x.sh; };
  auto grow = [&](int64_t i, int64_t r) { return grad_out.p + i * grad_out.sn + r * grad_out.sh; };
  const T* sa = a_row.data();
  const T* sb = b_row.data();
  auto dy = [sa, sb](const T* a, const T* g, int64_t j) -> T {
    const T gj = g[j];  // loaded whatever the mask: a blend, not a masked load
    if (!kRelu) return gj;
    return affine(a[j], sa[j], sb[j]) > T(0) ? gj : T(0);
  };
  // sum(dy) and sum(dy * (x - mean)) per channel, in one pass over x and the gradient
  std::vector<double> sum_dy, sum_dy_xc;
  channel_sums2<T>(s, [&](int64_t i, int64_t r, T* acc0, T* acc1) {
    const T* a = xrow(i, r);
    const T* g = grow(i, r);
    const T* m = mean_row.data();
#pragma omp simd
    for (int64_t j = 0; j < n_row; ++j) {
      const T e = dy(a, g, j);
      acc0[j] += e;
      acc1[j] += e * (a[j] - m[j]);
    }
  }, sum_dy, sum_dy_xc);
  // grad_x = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
  //        = k * dy + q * (x - mean) + d, per channel
  std::vector<double> k(s.c), q(s.c), d(s.c);
  for (int64_t c = 0; c < s.c; ++c) {
    const double sum_dy_xhat = sum_dy_xc[c] * invstd[c];
    if (grad_weight) grad_weight[c] = static_cast<T>(sum_dy_xhat);
    if (grad_bias) grad_bias[c] = static_cast<T>(sum_dy[c]);
    k[c] = scale[c];
    q[c] = -scale[c] * invstd[c] * sum_dy_xhat / count;
    d[c] = -scale[c] * sum_dy[c] / count;
  }
  if (!grad_x.p) return;
  const Scratch<T> k_row = along_row<T>(k, s.w, s.c), q_row = along_row<T>(q, s.w, s.c),
                       d_row = along_row<T>(d, s.w, s.c);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t r = 0; r < s.h; ++r) {
      const T* a = xrow(i, r);
      const T* g = grow(i, r);
      T* o = grad_x.p + i * grad_x.sn + r * grad_x.sh;
      const T* m = mean_row.data();
      const T *kr = k_row.data(), *qr = q_row.data(), *dr = d_row.data();
#pragma omp simd
      for (int64_t j = 0; j < n_row; ++j) o[j] = kr[j] * dy(a, g, j) + qr[j] * (a[j] - m[j]) + dr[j];
    }
  }
}

}  // namespace

template <typename T>
void batch_norm_forward(const BatchNormShape& s, Map<const T> x, const T* weight, const T* bias, double eps,
                        bool relu, Map<T> out, T* save_mean, T* save_invstd, T* save_var) {
  const int64_t n_row = s.w * s.c;
  const double count = static_cast<double>(s.n * s.h * s.w);
  auto row = [&](int64_t i, int64_t r) { return x.p + i * x.sn + r * x.sh; };

  // Sums of x - k and its squares in one pass, k per channel a value of the map itself (its first
  // pixel): shifted data keep the variance's cancellation small, as a centred second pass would.
  std::vector<double> k(s.c);
  if (count > 0)
    for (int64_t c = 0; c < s.c; ++c) k[c] = static_cast<double>(x.p[c]);
  const Scratch<T> k_row = along_row<T>(k, s.w, s.c);
  std::vector<double> sum_d, sum_d2;
  channel_sums2<T>(s, [&](int64_t i, int64_t r, T* acc0, T* acc1) {
    const T* a = row(i, r);
    const T* kr = k_row.data();
#pragma omp simd
    for (int64_t j = 0; j < n_row; ++j) {
      const T d = a[j] - kr[j];
      acc0[j] += d;
      acc1[j] += d * d;
    }
  }, sum_d, sum_d2);
  std::vector<double> mean(s.c), var(s.c);
  for (int64_t c = 0; c < s.c; ++c) {
    const double md = sum_d[c] / count;
    mean[c] = k[c] + md;
    var[c] = std::max(sum_d2[c] - md * sum_d[c], 0.0);  // sum of squares about the mean
  }
  std::vector<double> scale(s.c), shift(s.c);
  for (int64_t c = 0; c < s.c; ++c) {
    const double v = var[c] / count;  // biased: what normalises
    const double invstd = 1.0 / std::sqrt(v + eps);
    save_mean[c] = static_cast<T>(mean[c]);
    save_invstd[c] = static_cast<T>(invstd);
    save_var[c] = static_cast<T>(v);
    scale[c] = static_cast<double>(weight[c]) * invstd;
    shift[c] = static_cast<double>(bias[c]) - mean[c] * scale[c];
  }
  const Scratch<T> a_row = along_row<T>(scale, s.w, s.c), b_row = along_row<T>(shift, s.w, s.c);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t r = 0; r < s.h; ++r) {
      const T* a = row(i, r);
      T* o = out.p + i * out.sn + r * out.sh;
      const T* sa = a_row.data();
      const T* sb = b_row.data();
      if (relu) {
#pragma omp simd
        for (int64_t j = 0; j < n_row; ++j) {
          const T y = affine(a[j], sa[j], sb[j]);
          o[j] = y > T(0) ? y : T(0);
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n_row; ++j) o[j] = affine(a[j], sa[j], sb[j]);
      }
    }
  }
}

template <typename T>
void batch_norm_backward(const BatchNormShape& s, Map<const T> grad_out, Map<const T> x, const T* weight,
                         const T* bias, const T* save_mean, const T* save_invstd, bool relu, Map<T> grad_x,
                         T* grad_weight, T* grad_bias) {
  const double count = static_cast<double>(s.n * s.h * s.w);
  std::vector<double> mean(s.c), invstd(s.c), scale(s.c), shift(s.c);
  for (int64_t c = 0; c < s.c; ++c) {
    mean[c] = save_mean[c];
    invstd[c] = save_invstd[c];
    scale[c] = static_cast<double>(weight[c]) * invstd[c];
    shift[c] = static_cast<double>(bias[c]) - mean[c] * scale[c];
  }
  const Scratch<T> mean_row = along_row<T>(mean, s.w, s.c), a_row = along_row<T>(scale, s.w, s.c),
                       b_row = along_row<T>(shift, s.w, s.c);
  // dy: the gradient at the BN's output (through the ReLU's mask, recomputed from x); the ReLU is
  // a template argument so that every loop below is branch-free and vectorises
  if (relu)
    bn_backward_rows<T, true>(s, x, grad_out, mean_row, a_row, b_row, scale, invstd, count, grad_x,
                              grad_weight, grad_bias);
  else
    bn_backward_rows<T, false>(s, x, grad_out, mean_row, a_row, b_row, scale, invstd, count, grad_x,
                               grad_weight, grad_bias);
}

#define CODESIGN_INSTANTIATE(T)                                                                      \
  template void batch_norm_forward<T>(const BatchNormShape&, Map<const T>, const T*, const T*, double, \
                                      bool, Map<T>, T*, T*, T*);                                     \
  template void batch_norm_backward<T>(const BatchNormShape&, Map<const T>, Map<const T>, const T*,  \
                                       const T*, const T*, const T*, bool, Map<T>, T*, T*);
CODESIGN_INSTANTIATE(float)
CODESIGN_INSTANTIATE(double)
#undef CODESIGN_INSTANTIATE

}  // namespace codesign
