// Fused DARTS/GDAS edge: out = sum_k w_k * y_k + sum_j w_j * free_op_j(x).
// The pooled maps of the free ops are computed window by window inside the loop and never stored;
// backward recomputes them. Work is split over (n, c) planes, so each thread owns whole planes of
// x's gradient and no atomics are needed; weight gradients are reduced per plane and then summed
// in a fixed order, which keeps results identical whatever the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace codesign {
namespace {

struct Window {
  int64_t r0, r1, c0, c1;  // inclusive-exclusive bounds in the input plane
};

inline Window window_of(const MixedShape& s, int64_t oi, int64_t oj) {
  const int64_t r = oi * s.stride - 1, c = oj * s.stride - 1;
  return Window{std::max<int64_t>(r, 0), std::min<int64_t>(r + 3, s.h), std::max<int64_t>(c, 0),
                std::min<int64_t>(c + 3, s.w)};
}

// Average (count_include_pad=False) and max with the index of the first maximum in scan order,
// NaN-propagating like torch's max_pool2d.
template <typename T>
inline void pool_window(const T* xp, int64_t w, const Window& win, T* avg, T* mx, int64_t* arg) {
  T sum = 0;
  T best = -std::numeric_limits<T>::infinity();
  int64_t best_idx = win.r0 * w + win.c0;
  for (int64_t r = win.r0; r < win.r1; ++r) {
    for (int64_t c = win.c0; c < win.c1; ++c) {
      const T v = xp[r * w + c];
      sum += v;
      if (v > best || std::isnan(v)) {
        if (!std::isnan(best)) {
          best = v;
          best_idx = r * w + c;
        }
      }
    }
  }
  *avg = sum / static_cast<T>((win.r1 - win.r0) * (win.c1 - win.c0));
  *mx = best;
  *arg = best_idx;
}

struct FreeSlots {
  int identity = -1, avg = -1, max = -1;  // index into weights, or -1 when absent
};

FreeSlots find_slots(const std::vector<int>& free_ops, int64_t kp) {
  FreeSlots f;
  for (size_t j = 0; j < free_ops.size(); ++j) {
    const int slot = static_cast<int>(kp + j);
    switch (free_ops[j]) {
      case kIdentity: f.identity = slot; break;
      case kAvgPool3: f.avg = slot; break;
      case kMaxPool3: f.max = slot; break;
      default: break;  // zero contributes nothing
    }
  }
  return f;
}

}  // namespace

template <typename T>
void mixed_op_forward(const MixedShape& s, const T* x, const std::vector<const T*>& ys,
                      const T* weights, const std::vector<int>& free_ops, T* out) {
  const int64_t planes = s.n * s.c, in_sz = s.h * s.w, out_sz = s.ho * s.wo;
  const int64_t kp = static_cast<int64_t>(ys.size());
  const FreeSlots f = find_slots(free_ops, kp);
  // Repeated free ops (e.g. two avg pools) act as one op with the sum of their weights.
  T w_id = 0, w_avg = 0, w_max = 0;
  for (size_t j = 0; j < free_ops.size(); ++j) {
    const T wj = weights[kp + j];
    if (free_ops[j] == kIdentity) w_id += wj;
    if (free_ops[j] == kAvgPool3) w_avg += wj;
    if (free_ops[j] == kMaxPool3) w_max += wj;
  }
  const bool pools = f.avg >= 0 || f.max >= 0;

#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* o = out + p * out_sz;
    const T* xp = x + p * in_sz;
    if (kp == 0) {
      std::fill(o, o + out_sz, T(0));
    } else {
      const T w0 = weights[0];
      const T* y0 = ys[0] + p * out_sz;
#pragma omp simd
      for (int64_t i = 0; i < out_sz; ++i) o[i] = w0 * y0[i];
      for (int64_t k = 1; k < kp; ++k) {
        const T wk = weights[k];
        const T* yk = ys[k] + p * out_sz;
#pragma omp simd
        for (int64_t i = 0; i < out_sz; ++i) o[i] += wk * yk[i];
      }
    }
    if (f.identity >= 0) {
#pragma omp simd
      for (int64_t i = 0; i < out_sz; ++i) o[i] += w_id * xp[i];
    }
    if (pools) {
      for (int64_t oi = 0; oi < s.ho; ++oi) {
        for (int64_t oj = 0; oj < s.wo; ++oj) {
          T a, m;
          int64_t arg;
          pool_window(xp, s.w, window_of(s, oi, oj), &a, &m, &arg);
          T acc = 0;
          if (f.avg >= 0) acc += w_avg * a;
          if (f.max >= 0) acc += w_max * m;
          o[oi * s.wo + oj] += acc;
        }
      }
    }
  }
}

template <typename T>
void mixed_op_backward(const MixedShape& s, const T* grad_out, const T* x,
                       const std::vector<const T*>& ys, const T* weights,
                       const std::vector<int>& free_ops, T* grad_x, const std::vector<T*>& grad_ys,
                       T* grad_w) {
  const int64_t planes = s.n * s.c, in_sz = s.h * s.w, out_sz = s.ho * s.wo;
  const int64_t kp = static_cast<int64_t>(ys.size());
  const FreeSlots f = find_slots(free_ops, kp);
  T w_id = 0, w_avg = 0, w_max = 0;
  for (size_t j = 0; j < free_ops.size(); ++j) {
    const T wj = weights[kp + j];
    if (free_ops[j] == kIdentity) w_id += wj;
    if (free_ops[j] == kAvgPool3) w_avg += wj;
    if (free_ops[j] == kMaxPool3) w_max += wj;
  }
  const bool pools = f.avg >= 0 || f.max >= 0;
  // Per-plane partial sums of <grad_out, candidate_k>: [planes, 3 + kp] (identity, avg, max, y_k).
  const int64_t np = 3 + kp;
  std::vector<double> partial(static_cast<size_t>(planes * np), 0.0);

#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* g = grad_out + p * out_sz;
    const T* xp = x + p * in_sz;
    T* gx = grad_x + p * in_sz;
    double* part = partial.data() + p * np;
    for (int64_t k = 0; k < kp; ++k) {
      const T wk = weights[k];
      const T* yk = ys[k] + p * out_sz;
      T* gyk = grad_ys[k] ? grad_ys[k] + p * out_sz : nullptr;
      double dot = 0.0;
      if (gyk) {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < out_sz; ++i) {
          gyk[i] = wk * g[i];
          dot += static_cast<double>(g[i]) * yk[i];
        }
      } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < out_sz; ++i) dot += static_cast<double>(g[i]) * yk[i];
      }
      part[3 + k] = dot;
    }
    if (f.identity >= 0) {
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < in_sz; ++i) {
        gx[i] = w_id * g[i];
        dot += static_cast<double>(g[i]) * xp[i];
      }
      part[0] = dot;
    } else {
      std::fill(gx, gx + in_sz, T(0));
    }
    if (pools) {
      double dot_avg = 0.0, dot_max = 0.0;
      for (int64_t oi = 0; oi < s.ho; ++oi) {
        for (int64_t oj = 0; oj < s.wo; ++oj) {
          const Window win = window_of(s, oi, oj);
          T a, m;
          int64_t arg;
          pool_window(xp, s.w, win, &a, &m, &arg);
          const T go = g[oi * s.wo + oj];
          if (f.avg >= 0) {
            dot_avg += static_cast<double>(go) * a;
            const T share = w_avg * go / static_cast<T>((win.r1 - win.r0) * (win.c1 - win.c0));
            for (int64_t r = win.r0; r < win.r1; ++r)
              for (int64_t c = win.c0; c < win.c1; ++c) gx[r * s.w + c] += share;
          }
          if (f.max >= 0) {
            dot_max += static_cast<double>(go) * m;
            gx[arg] += w_max * go;
          }
        }
      }
      part[1] = dot_avg;
      part[2] = dot_max;
    }
  }

  std::vector<double> total(static_cast<size_t>(np), 0.0);
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t k = 0; k < np; ++k) total[k] += partial[p * np + k];
  for (int64_t k = 0; k < kp; ++k) grad_w[k] = static_cast<T>(total[3 + k]);
  for (size_t j = 0; j < free_ops.size(); ++j) {
    double v = 0.0;
    switch (free_ops[j]) {
      case kIdentity: v = total[0]; break;
      case kAvgPool3: v = total[1]; break;
      case kMaxPool3: v = total[2]; break;
      default: break;
    }
    grad_w[kp + j] = static_cast<T>(v);
  }
}

template void mixed_op_forward<float>(const MixedShape&, const float*,
                                      const std::vector<const float*>&, const float*,
                                      const std::vector<int>&, float*);
template void mixed_op_forward<double>(const MixedShape&, const double*,
                                       const std::vector<const double*>&, const double*,
                                       const std::vector<int>&, double*);
template void mixed_op_backward<float>(const MixedShape&, const float*, const float*,
                                       const std::vector<const float*>&, const float*,
                                       const std::vector<int>&, float*,
                                       const std::vector<float*>&, float*);
template void mixed_op_backward<double>(const MixedShape&, const double*, const double*,
                                        const std::vector<const double*>&, const double*,
                                        const std::vector<int>&, double*,
                                        const std::vector<double*>&, double*);

}  // namespace codesign
