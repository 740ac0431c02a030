// Fused DARTS/GDAS edge: out = sum_k w_k * y_k + sum_j w_j * free_op_j(x).
//
// Work is split over (n, c) planes: each thread owns whole planes, so x's gradient needs no
// atomics, and the pooled maps of the free ops live only in a per-thread scratch buffer the size
// of one plane (L1/L2-resident) — they are never written to memory as tensors, and backward
// recomputes them. Pools are computed separably on padded copies of the plane so that every inner
// loop is branch-free and vectorises. Weight gradients are reduced per plane and then summed in a
// fixed order, which keeps results identical whatever the thread count.
//
// Max pool: the gradient goes to the first maximum of each window in row-major scan order, as in
// torch's max_pool2d. NaN inputs are not given torch's NaN-propagating max semantics.
#include <algorithm>
#include <limits>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace codesign {
namespace {

struct FreeWeights {
  bool identity = false, avg = false, max = false;
  double w_id = 0, w_avg = 0, w_max = 0;  // repeated free ops act as one with summed weights
};

template <typename T>
FreeWeights free_weights(const std::vector<int>& free_ops, int64_t kp, const T* weights) {
  FreeWeights f;
  for (size_t j = 0; j < free_ops.size(); ++j) {
    const double wj = static_cast<double>(weights[kp + j]);
    switch (free_ops[j]) {
      case kIdentity: f.identity = true; f.w_id += wj; break;
      case kAvgPool3: f.avg = true; f.w_avg += wj; break;
      case kMaxPool3: f.max = true; f.w_max += wj; break;
      default: break;  // zero contributes nothing
    }
  }
  return f;
}

// Per-thread scratch for one plane. Padded planes are (h + 2) x (w + 2).
template <typename T>
struct Scratch {
  int64_t ph, pw;
  std::vector<T> pad, hbuf, avg, mx, gpad;
  std::vector<T> inv_rows, inv_cols;  // 1 / (valid rows), 1 / (valid cols) of each output window
  Scratch(const MixedShape& s)
      : ph(s.h + 2), pw(s.w + 2), pad(ph * pw), hbuf(ph * s.w), avg(s.ho * s.wo),
        mx(s.ho * s.wo), gpad(ph * pw), inv_rows(s.ho), inv_cols(s.wo) {
    for (int64_t i = 0; i < s.ho; ++i) inv_rows[i] = T(1) / valid(i * s.stride, s.h);
    for (int64_t j = 0; j < s.wo; ++j) inv_cols[j] = T(1) / valid(j * s.stride, s.w);
  }
  static T valid(int64_t centre, int64_t size) {
    return static_cast<T>(std::min(centre + 1, size - 1) - std::max<int64_t>(centre - 1, 0) + 1);
  }
};

// Copies plane xp into the padded buffer with the given border value.
template <typename T>
void pad_plane(const MixedShape& s, const T* xp, T border, T* pad) {
  const int64_t pw = s.w + 2;
  std::fill(pad, pad + pw, border);
  std::fill(pad + (s.h + 1) * pw, pad + (s.h + 2) * pw, border);
  for (int64_t r = 0; r < s.h; ++r) {
    T* row = pad + (r + 1) * pw;
    row[0] = border;
    row[pw - 1] = border;
    std::copy(xp + r * s.w, xp + (r + 1) * s.w, row + 1);
  }
}

// 3x3 window sums (kSum) or maxima of the padded plane at every output position.
enum class Reduce { kSum, kMax };

template <typename T, Reduce R>
void window_reduce(const MixedShape& s, const T* pad, T* hbuf, T* out) {
  const int64_t pw = s.w + 2;
  for (int64_t r = 0; r < s.h + 2; ++r) {
    const T* a = pad + r * pw;
    T* h = hbuf + r * s.w;
#pragma omp simd
    for (int64_t c = 0; c < s.w; ++c) {
      if constexpr (R == Reduce::kSum) {
        h[c] = a[c] + a[c + 1] + a[c + 2];
      } else {
        const T m = a[c] > a[c + 1] ? a[c] : a[c + 1];
        h[c] = m > a[c + 2] ? m : a[c + 2];
      }
    }
  }
  for (int64_t oi = 0; oi < s.ho; ++oi) {
    const T* h0 = hbuf + (oi * s.stride) * s.w;  // padded rows oi*s .. oi*s + 2
    const T* h1 = h0 + s.w;
    const T* h2 = h1 + s.w;
    T* o = out + oi * s.wo;
    if (s.stride == 1) {
#pragma omp simd
      for (int64_t oj = 0; oj < s.wo; ++oj) {
        if constexpr (R == Reduce::kSum) {
          o[oj] = h0[oj] + h1[oj] + h2[oj];
        } else {
          const T m = h0[oj] > h1[oj] ? h0[oj] : h1[oj];
          o[oj] = m > h2[oj] ? m : h2[oj];
        }
      }
    } else {
      for (int64_t oj = 0; oj < s.wo; ++oj) {
        const int64_t c = oj * s.stride;
        if constexpr (R == Reduce::kSum) {
          o[oj] = h0[c] + h1[c] + h2[c];
        } else {
          const T m = h0[c] > h1[c] ? h0[c] : h1[c];
          o[oj] = m > h2[c] ? m : h2[c];
        }
      }
    }
  }
}

// Average pool (count_include_pad=False) of plane xp into sc.avg.
template <typename T>
void avg_pool(const MixedShape& s, const T* xp, Scratch<T>& sc) {
  pad_plane(s, xp, T(0), sc.pad.data());
  window_reduce<T, Reduce::kSum>(s, sc.pad.data(), sc.hbuf.data(), sc.avg.data());
  for (int64_t oi = 0; oi < s.ho; ++oi) {
    T* a = sc.avg.data() + oi * s.wo;
    const T ri = sc.inv_rows[oi];
    const T* ci = sc.inv_cols.data();
#pragma omp simd
    for (int64_t oj = 0; oj < s.wo; ++oj) a[oj] *= ri * ci[oj];
  }
}

// Max pool of plane xp into sc.mx; leaves the -inf padded plane in sc.pad.
template <typename T>
void max_pool(const MixedShape& s, const T* xp, Scratch<T>& sc) {
  pad_plane(s, xp, -std::numeric_limits<T>::infinity(), sc.pad.data());
  window_reduce<T, Reduce::kMax>(s, sc.pad.data(), sc.hbuf.data(), sc.mx.data());
}

}  // namespace

template <typename T>
void mixed_op_forward(const MixedShape& s, const T* x, const std::vector<const T*>& ys,
                      const T* weights, const std::vector<int>& free_ops, T* out) {
  const int64_t planes = s.n * s.c, in_sz = s.h * s.w, out_sz = s.ho * s.wo;
  const int64_t kp = static_cast<int64_t>(ys.size());
  const FreeWeights f = free_weights(free_ops, kp, weights);
  const T w_id = static_cast<T>(f.w_id), w_avg = static_cast<T>(f.w_avg),
          w_max = static_cast<T>(f.w_max);

#pragma omp parallel
  {
    Scratch<T> sc(s);
#pragma omp for schedule(static)
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
      if (f.identity) {
#pragma omp simd
        for (int64_t i = 0; i < out_sz; ++i) o[i] += w_id * xp[i];
      }
      if (f.avg) {
        avg_pool(s, xp, sc);
        const T* a = sc.avg.data();
#pragma omp simd
        for (int64_t i = 0; i < out_sz; ++i) o[i] += w_avg * a[i];
      }
      if (f.max) {
        max_pool(s, xp, sc);
        const T* m = sc.mx.data();
#pragma omp simd
        for (int64_t i = 0; i < out_sz; ++i) o[i] += w_max * m[i];
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
  const FreeWeights f = free_weights(free_ops, kp, weights);
  const T w_id = static_cast<T>(f.w_id), w_avg = static_cast<T>(f.w_avg),
          w_max = static_cast<T>(f.w_max);
  const int64_t pw = s.w + 2;
  // Per-plane partial sums of <grad_out, candidate>: [planes, 3 + kp] (identity, avg, max, y_k).
  const int64_t np = 3 + kp;
  std::vector<double> partial(static_cast<size_t>(planes * np), 0.0);

#pragma omp parallel
  {
    Scratch<T> sc(s);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T* g = grad_out + p * out_sz;
      const T* xp = x + p * in_sz;
      T* gx = grad_x + p * in_sz;
      double* part = partial.data() + p * np;
      for (int64_t k = 0; k < kp; ++k) {
        const T wk = weights[k];
        const T* yk = ys[k] + p * out_sz;
        T* gyk = grad_ys[k] ? grad_ys[k] + p * out_sz : nullptr;
        T dot = 0;  // one plane: accumulate in T, planes are then summed in double
        if (gyk) {
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < out_sz; ++i) {
            gyk[i] = wk * g[i];
            dot += g[i] * yk[i];
          }
        } else {
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < out_sz; ++i) dot += g[i] * yk[i];
        }
        part[3 + k] = dot;
      }
      // grad_x accumulates in the padded buffer (pools scatter into the border), then is copied.
      T* gp = sc.gpad.data();
      std::fill(gp, gp + (s.h + 2) * pw, T(0));
      if (f.identity) {
        T dot = 0;
        for (int64_t r = 0; r < s.h; ++r) {
          const T* gr = g + r * s.w;
          const T* xr = xp + r * s.w;
          T* gpr = gp + (r + 1) * pw + 1;
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < s.w; ++c) {
            gpr[c] = w_id * gr[c];
            dot += gr[c] * xr[c];
          }
        }
        part[0] = dot;
      }
      if (f.avg) {
        avg_pool(s, xp, sc);
        const T* a = sc.avg.data();
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < out_sz; ++i) dot += g[i] * a[i];
        part[1] = dot;
        // The transpose of a 3x3 box sum is a 3x3 box sum: put w * g / count at every window
        // centre of a zero plane, then box-sum it into the padded gradient.
        T* u = sc.pad.data();
        std::fill(u, u + (s.h + 2) * pw, T(0));
        for (int64_t oi = 0; oi < s.ho; ++oi) {
          T* ur = u + (oi * s.stride + 1) * pw + 1;
          const T* gr = g + oi * s.wo;
          const T ri = w_avg * sc.inv_rows[oi];
          for (int64_t oj = 0; oj < s.wo; ++oj) ur[oj * s.stride] = gr[oj] * ri * sc.inv_cols[oj];
        }
        T* hb = sc.hbuf.data();  // horizontal sums, (h + 2) x w
        for (int64_t r = 0; r < s.h + 2; ++r) {
          const T* ur = u + r * pw;
          T* h = hb + r * s.w;
#pragma omp simd
          for (int64_t c = 0; c < s.w; ++c) h[c] = ur[c] + ur[c + 1] + ur[c + 2];
        }
        for (int64_t r = 0; r < s.h; ++r) {
          const T* h0 = hb + r * s.w;
          const T* h1 = h0 + s.w;
          const T* h2 = h1 + s.w;
          T* gpr = gp + (r + 1) * pw + 1;
#pragma omp simd
          for (int64_t c = 0; c < s.w; ++c) gpr[c] += h0[c] + h1[c] + h2[c];
        }
      }
      if (f.max) {
        max_pool(s, xp, sc);  // sc.pad now holds the -inf padded plane
        const T* m = sc.mx.data();
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < out_sz; ++i) dot += g[i] * m[i];
        part[2] = dot;
        // Route each window's gradient to its first maximum in scan order: walk the 9 offsets in
        // order, and give the gradient to the first one equal to the window's max.
        const T* xpad = sc.pad.data();
        for (int64_t oi = 0; oi < s.ho; ++oi) {
          const T* mr = m + oi * s.wo;
          const T* gr = g + oi * s.wo;
          T* left = sc.avg.data();  // reused as "gradient not yet routed" for this output row
#pragma omp simd
          for (int64_t oj = 0; oj < s.wo; ++oj) left[oj] = w_max * gr[oj];
          for (int64_t dr = 0; dr < 3; ++dr) {
            const int64_t row = (oi * s.stride + dr) * pw;
            for (int64_t dc = 0; dc < 3; ++dc) {
              const T* xr = xpad + row + dc;
              T* gpr = gp + row + dc;
              if (s.stride == 1) {
#pragma omp simd
                for (int64_t oj = 0; oj < s.wo; ++oj) {
                  const T take = xr[oj] == mr[oj] ? left[oj] : T(0);
                  gpr[oj] += take;
                  left[oj] -= take;
                }
              } else {
                for (int64_t oj = 0; oj < s.wo; ++oj) {
                  const int64_t c = oj * s.stride;
                  const T take = xr[c] == mr[oj] ? left[oj] : T(0);
                  gpr[c] += take;
                  left[oj] -= take;
                }
              }
            }
          }
        }
      }
      for (int64_t r = 0; r < s.h; ++r) std::copy(gp + (r + 1) * pw + 1, gp + (r + 1) * pw + 1 + s.w, gx + r * s.w);
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
