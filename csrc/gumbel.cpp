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
#include "fastmath.h"
#include "kernels.h"

namespace codesign {
namespace {

// float32 uses the vectorisable polynomials; float64 (tests, gradcheck) the libm functions.
inline float log_(float x) { return fast_logf(x); }
inline double log_(double x) { return std::log(x); }
inline float exp_nonpos(float x) { return fast_expf_nonpos(x); }
inline double exp_nonpos(double x) { return std::exp(x); }

// Rows are processed in chunks of about kChunk elements so every step is a simple loop over a
// small buffer that stays in L1 and vectorises.
constexpr int64_t kChunk = 1024;

template <typename T>
struct Workspace {
  Scratch<uint32_t> w0, w1, w2, w3, words;
  Scratch<T> z;
  explicit Workspace(int64_t elems)
      : w0(elems / 4 + 2), w1(elems / 4 + 2), w2(elems / 4 + 2), w3(elems / 4 + 2),
        words(4 * (elems / 4 + 2)), z(elems) {}
};

// z[i] = (logits + g) / tau for the elements of rows [r0, r1), then a softmax per row in place.
// Writes the first argmax of every row into best.
template <typename T>
void soft_rows(const T* logits, int64_t r0, int64_t r1, int64_t cols, T inv_tau, uint64_t seed,
               Workspace<T>& ws, int64_t* best) {
  const uint64_t n0 = static_cast<uint64_t>(r0 * cols), n1 = static_cast<uint64_t>(r1 * cols);
  const uint64_t q0 = n0 >> 2, q1 = (n1 + 3) >> 2;
  const int64_t nq = static_cast<int64_t>(q1 - q0);
  uint32_t *w0 = ws.w0.data(), *w1 = ws.w1.data(), *w2 = ws.w2.data(), *w3 = ws.w3.data();
#pragma omp simd
  for (int64_t j = 0; j < nq; ++j) {
    const uint64_t q = q0 + static_cast<uint64_t>(j);
    const Philox4 b = philox4x32_10(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32));
    w0[j] = b.v[0];
    w1[j] = b.v[1];
    w2[j] = b.v[2];
    w3[j] = b.v[3];
  }
  uint32_t* words = ws.words.data();
  for (int64_t j = 0; j < nq; ++j) {
    words[4 * j] = w0[j];
    words[4 * j + 1] = w1[j];
    words[4 * j + 2] = w2[j];
    words[4 * j + 3] = w3[j];
  }
  const uint32_t* wp = words + (n0 - 4 * q0);
  const T* l = logits + n0;
  T* z = ws.z.data();
  const int64_t count = static_cast<int64_t>(n1 - n0);
  // Two loops: GCC vectorises each of them, but not the two fused into one.
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) z[i] = static_cast<T>(clamp_open_unit(uint_to_uniform(wp[i])));
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) z[i] = (l[i] - log_(-log_(z[i]))) * inv_tau;
  for (int64_t r = 0; r < r1 - r0; ++r) {
    T* zr = z + r * cols;
    int64_t arg = 0;
    for (int64_t c = 1; c < cols; ++c)
      if (zr[c] > zr[arg]) arg = c;
    const T zmax = zr[arg];
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) {
      zr[c] = exp_nonpos(zr[c] - zmax);
      sum += zr[c];
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) zr[c] *= inv;
    best[r] = arg;
  }
}

inline int64_t rows_per_chunk(int64_t cols) { return std::max<int64_t>(1, kChunk / cols); }

}  // namespace

template <typename T>
void gumbel_softmax_forward(const T* logits, int64_t rows, int64_t cols, double tau, uint64_t seed,
                            bool hard, T* y, int64_t* index) {
  const T inv_tau = static_cast<T>(1.0 / tau);
  const int64_t rpc = rows_per_chunk(cols);
  const int64_t chunks = (rows + rpc - 1) / rpc;
#pragma omp parallel
  {
    Workspace<T> ws(rpc * cols);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t r0 = ch * rpc, r1 = std::min(rows, r0 + rpc);
      soft_rows(logits, r0, r1, cols, inv_tau, seed, ws, index + r0);
      T* yc = y + r0 * cols;
      const int64_t count = (r1 - r0) * cols;
      if (hard) {
        std::fill(yc, yc + count, T(0));
        for (int64_t r = 0; r < r1 - r0; ++r) yc[r * cols + index[r0 + r]] = T(1);
      } else {
        std::copy(ws.z.data(), ws.z.data() + count, yc);
      }
    }
  }
}

template <typename T>
void gumbel_softmax_backward(const T* grad_y, const T* logits, int64_t rows, int64_t cols,
                             double tau, uint64_t seed, T* grad_logits) {
  const T inv_tau = static_cast<T>(1.0 / tau);
  const int64_t rpc = rows_per_chunk(cols);
  const int64_t chunks = (rows + rpc - 1) / rpc;
#pragma omp parallel
  {
    Workspace<T> ws(rpc * cols);
    std::vector<int64_t> best(rpc);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t r0 = ch * rpc, r1 = std::min(rows, r0 + rpc);
      soft_rows(logits, r0, r1, cols, inv_tau, seed, ws, best.data());
      // Gradient of the soft sample; hard samples pass it straight through.
      for (int64_t r = 0; r < r1 - r0; ++r) {
        const T* zr = ws.z.data() + r * cols;
        const T* gy = grad_y + (r0 + r) * cols;
        T* gl = grad_logits + (r0 + r) * cols;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < cols; ++c) dot += gy[c] * zr[c];
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) gl[c] = zr[c] * (gy[c] - dot) * inv_tau;
      }
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
