// Gumbel-softmax in one pass over logits [R, K].
// Noise: element (r, c) has flat counter n = r*K + c; Philox-4x32-10 keyed by the seed is run on
// counter n/4 (low word c0, high word c1) and lane n%4 gives a 32-bit word, mapped to a uniform u
// as Triton does, clamped into (0, 1), and g = -log(-log(u)). Nothing is stored: backward runs the
// same generator again. Each row depends only on (seed, r, c), so results do not depend on the
// thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace codesign {
namespace {

// Fills g[0..cols) with the Gumbel noise of row r.
template <typename T>
inline void row_noise(uint64_t seed, int64_t r, int64_t cols, T* g) {
  const uint64_t first = static_cast<uint64_t>(r) * static_cast<uint64_t>(cols);
  uint64_t q = first >> 2;
  Philox4 block = philox4x32_10(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32));
  for (int64_t c = 0; c < cols; ++c) {
    const uint64_t n = first + static_cast<uint64_t>(c);
    if ((n >> 2) != q) {
      q = n >> 2;
      block = philox4x32_10(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32));
    }
    const float u = clamp_open_unit(uint_to_uniform(block.v[n & 3]));
    g[c] = -std::log(-std::log(static_cast<T>(u)));
  }
}

// z = (logits + g) / tau, then y = softmax(z) in place; returns the index of the first maximum.
template <typename T>
inline int64_t soft_row(const T* l, int64_t cols, T inv_tau, T* z) {
  int64_t best = 0;
  for (int64_t c = 0; c < cols; ++c) {
    z[c] = (l[c] + z[c]) * inv_tau;
    if (z[c] > z[best]) best = c;
  }
  const T zmax = z[best];
  T sum = 0;
  for (int64_t c = 0; c < cols; ++c) {
    z[c] = std::exp(z[c] - zmax);
    sum += z[c];
  }
  const T inv = T(1) / sum;
  for (int64_t c = 0; c < cols; ++c) z[c] *= inv;
  return best;
}

constexpr int64_t kStackCols = 64;

}  // namespace

template <typename T>
void gumbel_softmax_forward(const T* logits, int64_t rows, int64_t cols, double tau, uint64_t seed,
                            bool hard, T* y, int64_t* index) {
  const T inv_tau = static_cast<T>(1.0 / tau);
#pragma omp parallel
  {
    std::vector<T> heap(cols > kStackCols ? cols : 0);
    T stack[kStackCols];
    T* z = cols > kStackCols ? heap.data() : stack;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      row_noise(seed, r, cols, z);
      const int64_t best = soft_row(logits + r * cols, cols, inv_tau, z);
      T* yr = y + r * cols;
      if (hard) {
        std::fill(yr, yr + cols, T(0));
        yr[best] = T(1);
      } else {
        std::copy(z, z + cols, yr);
      }
      index[r] = best;
    }
  }
}

template <typename T>
void gumbel_softmax_backward(const T* grad_y, const T* logits, int64_t rows, int64_t cols,
                             double tau, uint64_t seed, T* grad_logits) {
  const T inv_tau = static_cast<T>(1.0 / tau);
#pragma omp parallel
  {
    std::vector<T> heap(cols > kStackCols ? cols : 0);
    T stack[kStackCols];
    T* z = cols > kStackCols ? heap.data() : stack;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      row_noise(seed, r, cols, z);
      soft_row(logits + r * cols, cols, inv_tau, z);
      const T* gy = grad_y + r * cols;
      T dot = 0;
      for (int64_t c = 0; c < cols; ++c) dot += gy[c] * z[c];
      T* gl = grad_logits + r * cols;
      // d softmax(z)/d logits: straight-through for hard samples uses this soft gradient too.
      for (int64_t c = 0; c < cols; ++c) gl[c] = z[c] * (gy[c] - dot) * inv_tau;
    }
  }
}

template void gumbel_softmax_forward<float>(const float*, int64_t, int64_t, double, uint64_t, bool,
                                            float*, int64_t*);
template void gumbel_softmax_forward<double>(const double*, int64_t, int64_t, double, uint64_t,
                                             bool, double*, int64_t*);
template void gumbel_softmax_backward<float>(const float*, const float*, int64_t, int64_t, double,
                                             uint64_t, float*);
template void gumbel_softmax_backward<double>(const double*, const double*, int64_t, int64_t,
                                              double, uint64_t, double*);

}  // namespace codesign
