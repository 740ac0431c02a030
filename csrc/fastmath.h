// Vectorisable float32 log and exp (Cephes' minimax polynomials, ~1 ulp on the ranges used here).
// Written with plain arithmetic and bit casts so that loops under `#pragma omp simd` compile to
// SIMD code; std::log/std::exp calls would stay scalar without -ffast-math and libmvec.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace codesign {

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// log(x) for positive, normal, finite x. The reduction x = 2^e * (1 + m) with 1 + m in
// [sqrt(1/2), sqrt(2)) is done on the bits (as musl's logf does), so the loop has no branch.
inline float fast_logf(float x) {
  const uint32_t off = float_to_bits(x) - 0x3F3504F3u;  // bits of sqrt(1/2)
  const float e = static_cast<float>(static_cast<int32_t>(off) >> 23);
  const float m = bits_to_float((off & 0x007FFFFFu) + 0x3F3504F3u) - 1.0f;
  const float z = m * m;
  float y = 7.0376836292E-2f;
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  y += -2.12194440E-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// exp(x) for x <= 0 (softmax after subtracting the row maximum); underflows to exactly 0.
inline float fast_expf_nonpos(float x) {
  const bool under = x < -87.33654f;
  x = under ? -87.33654f : x;
  // Round x/ln2 to the nearest integer with the 1.5 * 2^23 trick (|x/ln2| < 2^22 here).
  const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  x -= fx * 0.693359375f;
  x -= fx * -2.12194440E-4f;
  const float z = x * x;
  float y = 1.9875691500E-4f;
  y = y * x + 1.3981999507E-3f;
  y = y * x + 8.3334519073E-3f;
  y = y * x + 4.1665795894E-2f;
  y = y * x + 1.6666665459E-1f;
  y = y * x + 5.0000001201E-1f;
  y = y * z + x + 1.0f;
  const float scale = bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(fx) + 127) << 23);
  return under ? 0.0f : y * scale;
}

}  // namespace codesign
