// Fused DARTS/GDAS edge: out = sum_k w_k * y_k + sum_j w_j * free_op_j(x).
//
// Both memory layouts run the same code: a map is a set of *images* (NCHW: the N*C planes, one
// value per pixel; NHWC/channels_last: the N images, C contiguous values per pixel), and every
// loop runs over a row of pixels flattened with its channels, so it is branch-free and vectorises
// whatever C is (a horizontal neighbour is `ch` values away).
//
// Forward: work is split over (image, block of output rows). The two 3x3 pools share one pass:
// every input row's horizontal 3-wide sums and maxima are computed once (the same loads serve
// both), kept in a per-thread scratch of a few rows, and combined vertically for each output row;
// then every output row is written once, with the weighted parametric outputs, identity and pools
// accumulated while it sits in L1. Pooled maps are never tensors, and backward recomputes them.
//
// Backward: work is split over images, so x's gradient needs no atomics. At stride 1 (identity and
// the normal cells' pools) the pools' transposes are taken separably, row by row, and x's
// gradient is written once per row (free_ops_backward_stride1); their weights' gradients are
// <adjoint, x> rather than <g, pooled map>, so no pooled map is formed. At stride 2 each thread
// scatters the gradient of its image's pools into a padded per-thread plane, walking each
// window's taps, and copies its interior out. Weight gradients are reduced per image and then
// summed in a fixed order, which keeps results identical whatever the thread count.
//
// Max pool: the gradient goes to the first maximum of each window in row-major scan order, as in
// torch's max_pool2d. NaN inputs are not given torch's NaN-propagating max semantics.
#include <algorithm>
#include <cstring>
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

// One image of a map: rows of pixels of `ch` contiguous values; rs / ps are the row and pixel
// strides in elements.
template <typename T>
struct Image {
  T* p;
  int64_t rs, ps;
  T* row(int64_t r) const { return p + r * rs; }
};

// How a layout cuts a map into images.
struct Images {
  Layout layout;
  int64_t count, ch, c;
  explicit Images(const MixedShape& s)
      : layout(s.layout), count(s.layout == kNCHW ? s.n * s.c : s.n), ch(s.layout == kNCHW ? 1 : s.c),
        c(s.c) {}
  template <typename T>
  Image<T> of(const Map<T>& m, int64_t i) const {
    if (layout == kNCHW) return {m.p + (i / c) * m.sn + (i % c) * m.sc, m.sh, m.sw};
    return {m.p + i * m.sn, m.sh, m.sw};
  }
};

// Row r of image a as a dense run of w * ch values: the row itself when its pixels are dense,
// else gathered into buf (x may be a channel slice of a wider map, as partial-channel edges pass).
template <typename T>
const T* dense_row(const Image<const T>& a, int64_t r, int64_t w, int64_t ch, T* buf) {
  const T* src = a.row(r);
  if (a.ps == ch) return src;
  for (int64_t q = 0; q < w; ++q) std::memcpy(buf + q * ch, src + q * a.ps, sizeof(T) * ch);
  return buf;
}

// Horizontal 3-wide sums and maxima of a dense input row `a` (w pixels) at the centres of the
// wo output columns: hs/hm hold wo * ch values. Windows are clipped at the borders.
template <typename T>
void hpool(const T* a, int64_t w, int64_t wo, int64_t s, int64_t ch, T* hs, T* hm) {
  if (s == 1 && w > 1) {
    for (int64_t c = 0; c < ch; ++c) {
      hs[c] = a[c] + a[ch + c];
      hm[c] = a[c] > a[ch + c] ? a[c] : a[ch + c];
    }
    const int64_t end = (w - 1) * ch;
#pragma omp simd
    for (int64_t i = ch; i < end; ++i) {
      const T l = a[i - ch], m = a[i], r = a[i + ch];
      hs[i] = l + m + r;
      const T t = l > m ? l : m;
      hm[i] = t > r ? t : r;
    }
    for (int64_t i = end; i < end + ch; ++i) {
      hs[i] = a[i - ch] + a[i];
      hm[i] = a[i - ch] > a[i] ? a[i - ch] : a[i];
    }
    return;
  }
  for (int64_t oj = 0; oj < wo; ++oj) {
    const int64_t centre = oj * s, lo = std::max<int64_t>(centre - 1, 0),
                  hi = std::min(centre + 1, w - 1);
    T* hso = hs + oj * ch;
    T* hmo = hm + oj * ch;
    std::memcpy(hso, a + lo * ch, sizeof(T) * ch);
    std::memcpy(hmo, a + lo * ch, sizeof(T) * ch);
    for (int64_t q = lo + 1; q <= hi; ++q) {
      const T* aq = a + q * ch;
#pragma omp simd
      for (int64_t c = 0; c < ch; ++c) {
        hso[c] += aq[c];
        hmo[c] = hmo[c] > aq[c] ? hmo[c] : aq[c];
      }
    }
  }
}

// Per-call constants of the pools: 1 / (valid rows) of each output row, and 1 / (valid columns)
// of each output column repeated over the channels.
template <typename T>
struct PoolConsts {
  Scratch<T> inv_rows, inv_cols;
  PoolConsts(const MixedShape& s, int64_t ch) : inv_rows(s.ho), inv_cols(s.wo * ch) {
    for (int64_t i = 0; i < s.ho; ++i) inv_rows[i] = T(1) / valid(i * s.stride, s.h);
    for (int64_t j = 0; j < s.wo; ++j)
      std::fill_n(inv_cols.begin() + j * ch, ch, T(1) / valid(j * s.stride, s.w));
  }
  static T valid(int64_t centre, int64_t size) {
    return static_cast<T>(std::min(centre + 1, size - 1) - std::max<int64_t>(centre - 1, 0) + 1);
  }
};

// Average and max pools of output row oi from the horizontal rows hs/hm, whose first stored row
// is input row r_base; each stored row holds n = wo * ch values.
template <typename T>
void vpool(const MixedShape& s, const PoolConsts<T>& pc, int64_t oi, const T* hs, const T* hm,
           int64_t r_base, int64_t n, T* avg, T* mx) {
  const int64_t centre = oi * s.stride, lo = std::max<int64_t>(centre - 1, 0),
                hi = std::min(centre + 1, s.h - 1);
  const T* s0 = hs + (lo - r_base) * n;
  const T* m0 = hm + (lo - r_base) * n;
  std::memcpy(avg, s0, sizeof(T) * n);
  std::memcpy(mx, m0, sizeof(T) * n);
  for (int64_t r = lo + 1; r <= hi; ++r) {
    const T* sr = hs + (r - r_base) * n;
    const T* mr = hm + (r - r_base) * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      avg[i] += sr[i];
      mx[i] = mx[i] > mr[i] ? mx[i] : mr[i];
    }
  }
  const T ri = pc.inv_rows[oi];
  const T* ci = pc.inv_cols.data();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) avg[i] *= ri * ci[i];
}

// o += w_avg * avg + w_max * max of output row oi, in one pass over the horizontal rows hs/hm
// (whose first stored row is input row r_base; n values each). At a border the window's missing
// row reads as zeros for the sum and as a repeat of a present row for the max.
template <typename T, bool kAvg, bool kMax>
void add_pools_row(const MixedShape& s, const PoolConsts<T>& pc, int64_t oi, const T* hs,
                   const T* hm, int64_t r_base, int64_t n, const T* zeros, T w_avg, T w_max, T* o) {
  const int64_t centre = oi * s.stride, lo = std::max<int64_t>(centre - 1, 0),
                hi = std::min(centre + 1, s.h - 1);
  const T* s0 = hs + (lo - r_base) * n;
  const T* m0 = hm + (lo - r_base) * n;
  const T* s1 = hi > lo ? s0 + n : zeros;
  const T* m1 = hi > lo ? m0 + n : m0;
  const T* s2 = hi > lo + 1 ? s0 + 2 * n : zeros;
  const T* m2 = hi > lo + 1 ? m0 + 2 * n : m1;
  const T wa = w_avg * pc.inv_rows[oi];
  const T* ci = pc.inv_cols.data();
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    T add = 0;
    if (kAvg) add += wa * ci[j] * (s0[j] + s1[j] + s2[j]);
    if (kMax) {
      const T t = m0[j] > m1[j] ? m0[j] : m1[j];
      add += w_max * (t > m2[j] ? t : m2[j]);
    }
    o[j] += add;
  }
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;  // one row: accumulate in T, rows and images are then summed in double
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Adds v (wo * ch values of output row oi) to tap (dr, dc) of every output window in the padded
// plane gp ((w + 2) * ch values per row); the stride-2 backward's path.
template <typename T>
void scatter_tap(const MixedShape& s, int64_t ch, int64_t oi, int64_t dr, int64_t dc, const T* v,
                 T* gp) {
  const int64_t prow = (s.w + 2) * ch;
  T* g = gp + (oi * s.stride + dr) * prow + dc * ch;
  for (int64_t oj = 0; oj < s.wo; ++oj) {
    T* go = g + oj * s.stride * ch;
    const T* vo = v + oj * ch;
#pragma omp simd
    for (int64_t c = 0; c < ch; ++c) go[c] += vo[c];
  }
}

// Per-thread scratch of the stride-1 backward, in values; n = w * ch values per row, and padded
// rows hold ch more at each end. The max pool's rows (row maxima, their args, vsel) live in rings
// of kRing rows, computed just ahead of the row that reads them: a few rows stay in L1 where whole
// images of them would go through L2.
constexpr int64_t kRing = 4;

template <typename T>
struct Stride1Scratch {
  Scratch<T> rowmax, rowarg, vsel, routed, vbox, grow;
  Stride1Scratch(const MixedShape& s, int64_t ch, bool max) {
    const int64_t n = s.w * ch, padded = n + 2 * ch;
    if (max) {
      rowmax.resize(kRing * n);
      rowarg.resize(kRing * padded);
      vsel.resize(kRing * n);
      routed.resize(padded);
    }
    vbox.resize(padded);
    grow.resize(n);
  }
};

// x's gradient of row r from its parts, and (kW) the free ops' weight gradients (part += <g, x>,
// <ga, x>, <gm, x>): ga = the avg pool's adjoint from the padded vertical box sums v, gm = the max
// pool's from the padded routed gradient ro and this row's first-max args ha (padding: -1).
// Without kW, x's row a is not read (and may be null).
template <typename T, bool kW, bool kId, bool kAvg, bool kMax>
void combine_row(int64_t n, int64_t ch, const T* g, const T* a, const T* v, const T* ro, const T* ha,
                 T w_id, T w_avg, T w_max, T* out, double* part) {
  T acc_id = 0, acc_avg = 0, acc_max = 0;
#pragma omp simd reduction(+ : acc_id, acc_avg, acc_max)
  for (int64_t j = 0; j < n; ++j) {
    T o = 0;
    if (kId) {
      if (kW) acc_id += g[j] * a[j];
      o += w_id * g[j];
    }
    if (kAvg) {
      const T ga = v[j - ch] + v[j] + v[j + ch];
      if (kW) acc_avg += ga * a[j];
      o += w_avg * ga;
    }
    if (kMax) {  // the column left of j sends what its arg 2 routes, j its arg 1, the right its 0
      const T l = ro[j - ch], m = ro[j], r = ro[j + ch];
      const T gm = (ha[j - ch] == T(2) ? l : T(0)) + (ha[j] == T(1) ? m : T(0)) +
                   (ha[j + ch] == T(0) ? r : T(0));
      if (kW) acc_max += gm * a[j];
      o += w_max * gm;
    }
    out[j] = o;
  }
  if (kW) {
    part[0] += acc_id;
    part[1] += acc_avg;
    part[2] += acc_max;
  }
}

template <typename T>
using CombineRow = void (*)(int64_t, int64_t, const T*, const T*, const T*, const T*, const T*, T,
                            T, T, T*, double*);

template <typename T, bool kW>
CombineRow<T> combine_row_for(const FreeWeights& f) {
  const int k = (f.identity ? 4 : 0) | (f.avg ? 2 : 0) | (f.max ? 1 : 0);
  switch (k) {
    case 0: return combine_row<T, kW, false, false, false>;
    case 1: return combine_row<T, kW, false, false, true>;
    case 2: return combine_row<T, kW, false, true, false>;
    case 3: return combine_row<T, kW, false, true, true>;
    case 4: return combine_row<T, kW, true, false, false>;
    case 5: return combine_row<T, kW, true, false, true>;
    case 6: return combine_row<T, kW, true, true, false>;
    default: return combine_row<T, kW, true, true, true>;
  }
}

// The free ops' share of x's gradient and of the weights' gradients for one image, at stride 1,
// without forming a pooled map: the pools' transposes are taken separably, row by row.
//   avg: x's adjoint ga = hbox(ci * vbox(ri * g)); its weight's gradient <g, avg(x)> = <ga, x>.
//   max: every input row's horizontal 3-wide maxima and the first of the three holding each are
//        recomputed; every output row's window max is in the first of its rows holding it
//        (vsel); g is routed down to that row, then across to that row's first max column: gm.
//        Its weight's gradient <g, max(x)> = <gm, x>. First row, then first column, is the first
//        maximum in row-major scan order: torch's max_pool2d tie rule.
// x's gradient w_id g + w_avg ga + w_max gm is written once per row.
template <typename T>
void free_ops_backward_stride1(const MixedShape& s, const FreeWeights& f, const PoolConsts<T>& pc,
                               int64_t ch, const Image<const T>& gi, const Image<const T>& xi,
                               const Image<T>& gxi, T* rowbuf, Stride1Scratch<T>& sc, double* part,
                               bool want_w) {
  const int64_t h = s.h, w = s.w, n = w * ch, padded = n + 2 * ch;
  auto max_row = [&](int64_t r) { return sc.rowmax.data() + (r % kRing) * n; };
  auto arg_row = [&](int64_t r) { return sc.rowarg.data() + (r % kRing) * padded + ch; };
  auto vsel_row = [&](int64_t oi) { return sc.vsel.data() + (oi % kRing) * n; };
  // input row r's horizontal 3-wide maxima and the first of the three holding each (args 0-2)
  auto row_maxima = [&](int64_t r) {
    const T* a = dense_row(xi, r, w, ch, rowbuf);
    T* hm = max_row(r);
    T* ha = arg_row(r);
    std::fill(ha - ch, ha, T(-1));
    std::fill(ha + n, ha + n + ch, T(-1));
    for (int64_t c = 0; c < ch; ++c) {  // column 0 sees columns 0 and 1: args 1 and 2
      const bool right = w > 1 && a[ch + c] > a[c];
      hm[c] = right ? a[ch + c] : a[c];
      ha[c] = right ? T(2) : T(1);
    }
    const int64_t end = (w - 1) * ch;
#pragma omp simd
    for (int64_t i = ch; i < end; ++i) {
      const T l = a[i - ch], m = a[i], rr = a[i + ch];
      const bool mid = m > l;
      const T best = mid ? m : l;
      const bool right = rr > best;
      hm[i] = right ? rr : best;
      ha[i] = right ? T(2) : (mid ? T(1) : T(0));
    }
    if (w > 1)
      for (int64_t i = end; i < end + ch; ++i) {  // the last column sees w-2 and w-1: args 0, 1
        const bool mid = a[i] > a[i - ch];
        hm[i] = mid ? a[i] : a[i - ch];
        ha[i] = mid ? T(1) : T(0);
      }
  };
  // vsel of output row oi: the first input row holding the window's max
  auto window_rows = [&](int64_t oi) {
    const int64_t lo = std::max<int64_t>(oi - 1, 0), hi = std::min(oi + 1, h - 1);
    const T* m0 = max_row(lo);
    T* vs = vsel_row(oi);
    const T r0 = static_cast<T>(lo), r1 = static_cast<T>(lo + 1), r2 = static_cast<T>(lo + 2);
    if (hi == lo) {
      std::fill(vs, vs + n, r0);
    } else if (hi == lo + 1) {
      const T* m1 = max_row(lo + 1);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) vs[j] = m1[j] > m0[j] ? r1 : r0;
    } else {
      const T* m1 = max_row(lo + 1);
      const T* m2 = max_row(lo + 2);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const bool up1 = m1[j] > m0[j];
        const T best = up1 ? m1[j] : m0[j];
        vs[j] = m2[j] > best ? r2 : (up1 ? r1 : r0);
      }
    }
  };
  int64_t maxima_done = 0, vsel_done = 0;  // rows computed so far, in order
  const T w_id = static_cast<T>(f.w_id), w_avg = static_cast<T>(f.w_avg),
          w_max = static_cast<T>(f.w_max);
  const CombineRow<T> combine = want_w ? combine_row_for<T, true>(f) : combine_row_for<T, false>(f);
  T* v = sc.vbox.data() + ch;  // padded by ch zeros at each end
  std::fill(v - ch, v, T(0));
  std::fill(v + n, v + n + ch, T(0));
  T* ro = f.max ? sc.routed.data() + ch : nullptr;
  if (ro) {
    std::fill(ro - ch, ro, T(0));
    std::fill(ro + n, ro + n + ch, T(0));
  }
  const T* ci = pc.inv_cols.data();
  for (int64_t r = 0; r < h; ++r) {
    const int64_t lo = std::max<int64_t>(r - 1, 0), hi = std::min(r + 1, h - 1);
    const T rr = static_cast<T>(r);
    if (f.max) {  // vsel of output rows up to hi, and the row maxima those read (up to hi + 1)
      for (; vsel_done <= hi; ++vsel_done) {
        for (; maxima_done <= std::min(vsel_done + 1, h - 1); ++maxima_done) row_maxima(maxima_done);
        window_rows(vsel_done);
      }
    }
    for (int64_t oi = lo; oi <= hi; ++oi) {  // the output rows whose windows hold row r
      const T* g = gi.row(oi);
      const bool first = oi == lo;  // the first row starts the sums
      const T ri = pc.inv_rows[oi];
      if (f.avg && ro) {
        const T* vs = vsel_row(oi);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T gj = g[j];
          v[j] = (first ? T(0) : v[j]) + ri * ci[j] * gj;
          ro[j] = (first ? T(0) : ro[j]) + (vs[j] == rr ? gj : T(0));
        }
      } else if (f.avg) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) v[j] = (first ? T(0) : v[j]) + ri * ci[j] * g[j];
      } else if (ro) {
        const T* vs = vsel_row(oi);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T gj = g[j];
          ro[j] = (first ? T(0) : ro[j]) + (vs[j] == rr ? gj : T(0));
        }
      }
    }
    const T* a = want_w ? dense_row(xi, r, w, ch, rowbuf) : nullptr;
    T* gx = gxi.row(r);
    const bool dense_out = gxi.ps == ch;
    T* out = dense_out ? gx : sc.grow.data();
    combine(n, ch, gi.row(r), a, v, ro, f.max ? arg_row(r) : nullptr, w_id,
            w_avg, w_max, out, part);
    if (!dense_out)
      for (int64_t q = 0; q < w; ++q) std::memcpy(gx + q * gxi.ps, out + q * ch, sizeof(T) * ch);
  }
}

int64_t row_blocks(const MixedShape& s, int64_t images) {
  const int64_t want = 8 * static_cast<int64_t>(max_threads());
  if (images >= want) return 1;
  return std::min(s.ho, (want + images - 1) / images);
}

}  // namespace

template <typename T>
void mixed_op_forward(const MixedShape& s, Map<const T> x, const std::vector<Map<const T>>& ys,
                      const T* weights, const std::vector<int>& free_ops, Map<T> out) {
  const Images im(s);
  const int64_t ch = im.ch, n_out = s.wo * ch;
  const int64_t kp = static_cast<int64_t>(ys.size());
  const FreeWeights f = free_weights(free_ops, kp, weights);
  const T w_id = static_cast<T>(f.w_id), w_avg = static_cast<T>(f.w_avg),
          w_max = static_cast<T>(f.w_max);
  const bool pools = f.avg || f.max;
  const PoolConsts<T> pc(s, ch);
  const int64_t blocks = row_blocks(s, im.count);
  const int64_t block_rows = (s.ho + blocks - 1) / blocks;
  const int64_t tasks = im.count * blocks;

#pragma omp parallel
  {
    const int64_t stored_rows = std::min(s.h, block_rows * s.stride + 2);
    Scratch<T> rowbuf(s.w * ch), hs(pools ? stored_rows * n_out : 0),
        hm(pools ? stored_rows * n_out : 0), zeros(pools ? n_out : 0);
    std::vector<Image<const T>> yi(kp);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t i = t / blocks, oi0 = (t % blocks) * block_rows;
      const int64_t oi1 = std::min(oi0 + block_rows, s.ho);
      if (oi0 >= oi1) continue;
      const Image<const T> xi = im.of(x, i);
      const Image<T> oimg = im.of(out, i);
      for (int64_t k = 0; k < kp; ++k) yi[k] = im.of(ys[k], i);
      const int64_t r_lo = std::max<int64_t>(oi0 * s.stride - 1, 0);
      if (pools) {
        const int64_t r_hi = std::min((oi1 - 1) * s.stride + 1, s.h - 1);
        for (int64_t r = r_lo; r <= r_hi; ++r)
          hpool(dense_row(xi, r, s.w, ch, rowbuf.data()), s.w, s.wo, s.stride, ch,
                hs.data() + (r - r_lo) * n_out, hm.data() + (r - r_lo) * n_out);
      }
      for (int64_t oi = oi0; oi < oi1; ++oi) {
        T* o = oimg.row(oi);
        if (kp == 0) {
          std::fill(o, o + n_out, T(0));
        } else {
          const T w0 = weights[0];
          const T* y0 = yi[0].row(oi);
#pragma omp simd
          for (int64_t j = 0; j < n_out; ++j) o[j] = w0 * y0[j];
          for (int64_t k = 1; k < kp; ++k) {
            const T wk = weights[k];
            const T* yk = yi[k].row(oi);
#pragma omp simd
            for (int64_t j = 0; j < n_out; ++j) o[j] += wk * yk[j];
          }
        }
        if (f.identity) {  // stride 1: output row oi is input row oi
          const T* a = dense_row(xi, oi, s.w, ch, rowbuf.data());
#pragma omp simd
          for (int64_t j = 0; j < n_out; ++j) o[j] += w_id * a[j];
        }
        if (f.avg && f.max)
          add_pools_row<T, true, true>(s, pc, oi, hs.data(), hm.data(), r_lo, n_out, zeros.data(),
                                       w_avg, w_max, o);
        else if (f.avg)
          add_pools_row<T, true, false>(s, pc, oi, hs.data(), hm.data(), r_lo, n_out, zeros.data(),
                                        w_avg, w_max, o);
        else if (f.max)
          add_pools_row<T, false, true>(s, pc, oi, hs.data(), hm.data(), r_lo, n_out, zeros.data(),
                                        w_avg, w_max, o);
      }
    }
  }
}

template <typename T>
void mixed_op_backward(const MixedShape& s, Map<const T> grad_out, Map<const T> x,
                       const std::vector<Map<const T>>& ys, const T* weights,
                       const std::vector<int>& free_ops, Map<T> grad_x,
                       const std::vector<Map<T>>& grad_ys, T* grad_w) {
  const Images im(s);
  const int64_t ch = im.ch, n_out = s.wo * ch, n_in = s.w * ch;
  const int64_t kp = static_cast<int64_t>(ys.size());
  const FreeWeights f = free_weights(free_ops, kp, weights);
  const T w_avg = static_cast<T>(f.w_avg), w_max = static_cast<T>(f.w_max);
  const bool pools = f.avg || f.max;
  const PoolConsts<T> pc(s, ch);
  const int64_t prow = (s.w + 2) * ch, plane = (s.h + 2) * prow;
  // Per-image partial sums of <grad_out, candidate>: [images, 3 + kp] (identity, avg, max, y_k).
  const int64_t np = 3 + kp;
  std::vector<double> partial(static_cast<size_t>(im.count * np), 0.0);

  const bool stride1 = s.stride == 1;
  const bool want_w = grad_w != nullptr;  // null: the weights need no gradient, y_k are not read
#pragma omp parallel
  {
    const bool general = !stride1;  // stride 2: pools only, through a padded plane
    Scratch<T> rowbuf(n_in), hs(general ? s.h * n_out : 0), hm(general ? s.h * n_out : 0),
        avg(general ? n_out : 0), mx(general ? n_out : 0), tmp(general ? n_out : 0),
        vavg(general ? n_out : 0), gpad(general ? plane : 0), xpad(general && f.max ? plane : 0);
    Stride1Scratch<T> sc1(stride1 ? s : MixedShape{}, ch, stride1 && f.max);
    std::vector<Image<const T>> yi(kp);
    std::vector<Image<T>> gyi(kp);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < im.count; ++i) {
      const Image<const T> gi = im.of(grad_out, i), xi = im.of(x, i);
      const Image<T> gxi = im.of(grad_x, i);
      for (int64_t k = 0; k < kp; ++k) {
        yi[k] = ys[k].p ? im.of(ys[k], i) : Image<const T>{nullptr, 0, 0};
        gyi[k] = grad_ys[k].p ? im.of(grad_ys[k], i) : Image<T>{nullptr, 0, 0};
      }
      double* part = partial.data() + i * np;
      for (int64_t oi = 0; oi < s.ho; ++oi) {
        const T* g = gi.row(oi);
        for (int64_t k = 0; k < kp; ++k) {
          if (gyi[k].p && want_w) {  // <g, y_k> and y_k's gradient w_k g in one pass
            const T* y = yi[k].row(oi);
            const T wk = weights[k];
            T* gy = gyi[k].row(oi);
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < n_out; ++j) {
              acc += g[j] * y[j];
              gy[j] = wk * g[j];
            }
            part[3 + k] += acc;
          } else if (gyi[k].p) {  // no weight gradient: y_k is not read
            const T wk = weights[k];
            T* gy = gyi[k].row(oi);
#pragma omp simd
            for (int64_t j = 0; j < n_out; ++j) gy[j] = wk * g[j];
          } else if (want_w) {
            part[3 + k] += dot(g, yi[k].row(oi), n_out);
          }
        }
      }
      if (stride1) {
        free_ops_backward_stride1(s, f, pc, ch, gi, xi, gxi, rowbuf.data(), sc1, part, want_w);
        continue;
      }
      if (pools) {
        for (int64_t r = 0; r < s.h; ++r)
          hpool(dense_row(xi, r, s.w, ch, rowbuf.data()), s.w, s.wo, s.stride, ch,
                hs.data() + r * n_out, hm.data() + r * n_out);
      }
      T* gp = gpad.data();
      std::fill(gp, gp + plane, T(0));
      if (f.max) {  // x with a -inf border: every window's taps can be walked without bounds
        T* xp = xpad.data();
        std::fill(xp, xp + prow, -std::numeric_limits<T>::infinity());
        std::fill(xp + (s.h + 1) * prow, xp + plane, -std::numeric_limits<T>::infinity());
        for (int64_t r = 0; r < s.h; ++r) {
          T* xr = xp + (r + 1) * prow;
          std::fill(xr, xr + ch, -std::numeric_limits<T>::infinity());
          std::fill(xr + (s.w + 1) * ch, xr + prow, -std::numeric_limits<T>::infinity());
          std::memcpy(xr + ch, dense_row(xi, r, s.w, ch, rowbuf.data()), sizeof(T) * n_in);
        }
      }
      for (int64_t oi = 0; pools && oi < s.ho; ++oi) {
        const T* g = gi.row(oi);
        vpool(s, pc, oi, hs.data(), hm.data(), 0, n_out, avg.data(), mx.data());
        const T* v = vavg.data();  // d avg / d x: every tap of the window gets w * g / count
        if (f.avg) {
          if (want_w) part[1] += dot(g, avg.data(), n_out);
          T* vw = vavg.data();
          const T ri = w_avg * pc.inv_rows[oi];
          const T* ci = pc.inv_cols.data();
#pragma omp simd
          for (int64_t j = 0; j < n_out; ++j) vw[j] = g[j] * ri * ci[j];
          if (!f.max)  // with a max pool too, its tap walk below adds v in the same pass
            for (int64_t dr = 0; dr < 3; ++dr)
              for (int64_t dc = 0; dc < 3; ++dc) scatter_tap(s, ch, oi, dr, dc, v, gp);
        }
        if (f.max) {
          const T* m = mx.data();
          if (want_w) part[2] += dot(g, m, n_out);
          // Route each window's gradient to its first maximum in scan order: walk the 9 taps in
          // order and give what is left to the first one equal to the window's max.
          T* left = tmp.data();
#pragma omp simd
          for (int64_t j = 0; j < n_out; ++j) left[j] = w_max * g[j];
          for (int64_t dr = 0; dr < 3; ++dr) {
            const int64_t off = (oi * s.stride + dr) * prow;
            for (int64_t dc = 0; dc < 3; ++dc) {
              const T* xr = xpad.data() + off + dc * ch;
              T* gr = gp + off + dc * ch;
              for (int64_t oj = 0; oj < s.wo; ++oj) {
                const int64_t q = oj * s.stride * ch;
                const T* vo = f.avg ? v + oj * ch : nullptr;
#pragma omp simd
                for (int64_t c = 0; c < ch; ++c) {
                  const int64_t j = oj * ch + c;
                  const T take = xr[q + c] == m[j] ? left[j] : T(0);
                  gr[q + c] += vo ? take + vo[c] : take;
                  left[j] -= take;
                }
              }
            }
          }
        }
      }
      for (int64_t r = 0; r < s.h; ++r) std::memcpy(gxi.row(r), gp + (r + 1) * prow + ch, sizeof(T) * n_in);
    }
  }

  if (!want_w) return;
  std::vector<double> total(static_cast<size_t>(np), 0.0);
  for (int64_t i = 0; i < im.count; ++i)
    for (int64_t k = 0; k < np; ++k) total[k] += partial[i * np + k];
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

#define CODESIGN_INSTANTIATE(T)                                                                \
  template void mixed_op_forward<T>(const MixedShape&, Map<const T>,                           \
                                    const std::vector<Map<const T>>&, const T*,                \
                                    const std::vector<int>&, Map<T>);                          \
  template void mixed_op_backward<T>(const MixedShape&, Map<const T>, Map<const T>,            \
                                     const std::vector<Map<const T>>&, const T*,               \
                                     const std::vector<int>&, Map<T>,                          \
                                     const std::vector<Map<T>>&, T*);
CODESIGN_INSTANTIATE(float)
CODESIGN_INSTANTIATE(double)
#undef CODESIGN_INSTANTIATE

}  // namespace codesign
