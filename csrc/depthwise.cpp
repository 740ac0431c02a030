// Depthwise 2-D convolution (groups = channels, no bias) on channels_last (NHWC) maps: the
// separable and dilated convolutions of the DARTS candidates.
//
// A row of pixels with its C channels is one dense run of W * C values, and a tap (kh, kw) of
// the kernel is the same multiply-add for every value of an output row: with the weights
// repeated along the row (w_row[j] = w[j % C][kh][kw]), stride 1 is a flat, branch-free loop
// that vectorises whatever C is; stride 2 walks the output pixels and vectorises over C. Each
// thread owns whole images and keeps a zero-padded copy of its image (and, in backward, of the
// image's gradient), so no loop checks borders.
//
// Backward computes the input and weight gradients in one pass over the output gradient. Weight
// gradients are summed per image (in T) and then over images in a fixed order (in double), so
// results do not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace codesign {
namespace {

// w [C, K, K] repeated along an output row: taps[(kh * K + kw) * wo * C + j] = w[j % C][kh][kw].
template <typename T>
Scratch<T> tap_rows(const DepthwiseShape& s, const T* w) {
  const int64_t n = s.wo * s.c, k2 = s.k * s.k;
  Scratch<T> taps(static_cast<size_t>(k2 * n));
  for (int64_t t = 0; t < k2; ++t)
    for (int64_t j = 0; j < n; ++j) taps[t * n + j] = w[(j % s.c) * k2 + t];
  return taps;
}

// Copies image i of x (channel stride 1) into a zero-padded plane of (h + 2p) x (w + 2p) pixels.
template <typename T>
void pad_image(const DepthwiseShape& s, const Map<const T>& x, int64_t i, T* pad) {
  const int64_t pw = (s.w + 2 * s.pad) * s.c;
  std::fill(pad, pad + (s.h + 2 * s.pad) * pw, T(0));
  for (int64_t r = 0; r < s.h; ++r) {
    const T* src = x.p + i * x.sn + r * x.sh;
    T* dst = pad + (r + s.pad) * pw + s.pad * s.c;
    if (x.sw == s.c) {
      std::memcpy(dst, src, sizeof(T) * s.w * s.c);
    } else {  // a channel slice of a wider map
      for (int64_t q = 0; q < s.w; ++q) std::memcpy(dst + q * s.c, src + q * x.sw, sizeof(T) * s.c);
    }
  }
}

// out[j] (+)= sum over output pixels of taps[j] * src at column offset `col` of that pixel.
template <typename T>
void tap_fma(const DepthwiseShape& s, const T* tap, const T* src, T* out) {
  if (s.stride == 1) {
    const int64_t n = s.wo * s.c;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += tap[j] * src[j];
    return;
  }
  for (int64_t oj = 0; oj < s.wo; ++oj) {
    const T* a = src + oj * s.stride * s.c;
    const T* t = tap + oj * s.c;
    T* o = out + oj * s.c;
#pragma omp simd
    for (int64_t c = 0; c < s.c; ++c) o[c] += t[c] * a[c];
  }
}

}  // namespace

template <typename T>
void depthwise_forward(const DepthwiseShape& s, Map<const T> x, const T* w, Map<T> out) {
  const Scratch<T> taps = tap_rows(s, w);
  const int64_t n_out = s.wo * s.c, pw = (s.w + 2 * s.pad) * s.c;
#pragma omp parallel
  {
    Scratch<T> pad((s.h + 2 * s.pad) * pw);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.n; ++i) {
      pad_image(s, x, i, pad.data());
      for (int64_t oi = 0; oi < s.ho; ++oi) {
        T* o = out.p + i * out.sn + oi * out.sh;
        std::fill(o, o + n_out, T(0));
        for (int64_t kh = 0; kh < s.k; ++kh) {
          const T* row = pad.data() + (oi * s.stride + kh * s.dilation) * pw;
          for (int64_t kw = 0; kw < s.k; ++kw)
            tap_fma(s, taps.data() + (kh * s.k + kw) * n_out, row + kw * s.dilation * s.c, o);
        }
      }
    }
  }
}

template <typename T>
void depthwise_backward(const DepthwiseShape& s, Map<const T> grad_out, Map<const T> x, const T* w,
                        Map<T> grad_x, T* grad_w) {
  const Scratch<T> taps = tap_rows(s, w);
  const int64_t n_out = s.wo * s.c, pw = (s.w + 2 * s.pad) * s.c, k2 = s.k * s.k;
  const int64_t plane = (s.h + 2 * s.pad) * pw;
  // Per-image weight gradients [n, C * K * K], summed in image order afterwards.
  std::vector<double> partial(static_cast<size_t>(s.n * s.c * k2), 0.0);
#pragma omp parallel
  {
    Scratch<T> pad(plane), gpad(grad_x.p ? plane : 0), acc(grad_w ? k2 * n_out : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.n; ++i) {
      if (grad_w) {
        pad_image(s, x, i, pad.data());
        std::fill(acc.begin(), acc.end(), T(0));
      }
      if (grad_x.p) std::fill(gpad.begin(), gpad.end(), T(0));
      for (int64_t oi = 0; oi < s.ho; ++oi) {
        const T* g = grad_out.p + i * grad_out.sn + oi * grad_out.sh;
        for (int64_t kh = 0; kh < s.k; ++kh) {
          const int64_t off = (oi * s.stride + kh * s.dilation) * pw;
          for (int64_t kw = 0; kw < s.k; ++kw) {
            const int64_t t = kh * s.k + kw, col = kw * s.dilation * s.c;
            // acc[t][j] += g[j] * x at tap t of output j: the forward's product with g as the taps
            if (grad_w) tap_fma(s, g, pad.data() + off + col, acc.data() + t * n_out);
            if (grad_x.p) {  // the transpose: scatter w * g back to the tap's input
              const T* tap = taps.data() + t * n_out;
              T* dst = gpad.data() + off + col;
              if (s.stride == 1) {
#pragma omp simd
                for (int64_t j = 0; j < n_out; ++j) dst[j] += tap[j] * g[j];
              } else {
                for (int64_t oj = 0; oj < s.wo; ++oj) {
                  T* d = dst + oj * s.stride * s.c;
                  const T* ts = tap + oj * s.c;
                  const T* gs = g + oj * s.c;
#pragma omp simd
                  for (int64_t c = 0; c < s.c; ++c) d[c] += ts[c] * gs[c];
                }
              }
            }
          }
        }
      }
      if (grad_x.p) {
        for (int64_t r = 0; r < s.h; ++r)
          std::memcpy(grad_x.p + i * grad_x.sn + r * grad_x.sh, gpad.data() + (r + s.pad) * pw + s.pad * s.c,
                      sizeof(T) * s.w * s.c);
      }
      if (grad_w) {
        double* part = partial.data() + i * s.c * k2;
        for (int64_t t = 0; t < k2; ++t) {
          const T* a = acc.data() + t * n_out;
          for (int64_t j = 0; j < n_out; ++j) part[(j % s.c) * k2 + t] += static_cast<double>(a[j]);
        }
      }
    }
  }
  if (grad_w) {
    std::vector<double> total(static_cast<size_t>(s.c * k2), 0.0);
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t e = 0; e < s.c * k2; ++e) total[e] += partial[i * s.c * k2 + e];
    for (int64_t e = 0; e < s.c * k2; ++e) grad_w[e] = static_cast<T>(total[e]);
  }
}

#define CODESIGN_INSTANTIATE(T)                                                                   \
  template void depthwise_forward<T>(const DepthwiseShape&, Map<const T>, const T*, Map<T>);     \
  template void depthwise_backward<T>(const DepthwiseShape&, Map<const T>, Map<const T>,          \
                                      const T*, Map<T>, T*);
CODESIGN_INSTANTIATE(float)
CODESIGN_INSTANTIATE(double)
#undef CODESIGN_INSTANTIATE

}  // namespace codesign
