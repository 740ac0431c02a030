// Shared helpers of codesign's C++ kernels: OpenMP shims, cache-line-aligned scratch and the
// counter-based RNG.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#if CODESIGN_HAVE_OPENMP
#include <omp.h>
#endif

namespace codesign {

// Scratch buffers start on a cache line, as torch's tensors do (and so do their rows wherever a
// row is a multiple of 16 floats). With -march=native on AVX-512 hardware a loop's vectors are a
// cache line wide, so a buffer at malloc's 16-byte alignment would make every load and store of
// it straddle two lines.
constexpr std::size_t kCacheLine = 64;

template <typename T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}  // NOLINT: rebinding, as allocators must allow
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{kCacheLine}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{kCacheLine}); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};

template <typename T>
using Scratch = std::vector<T, CacheAligned<T>>;

inline int max_threads() {
#if CODESIGN_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Philox-4x32-10 (Salmon et al., SC'11), the generator Triton's tl.randint4x implements.
// Counter (c0, c1, 0, 0), key (seed_lo, seed_hi). Using the same generator on both backends makes
// a given (seed, row, col) draw the same Gumbel noise on the CPU and on the GPU.
struct Philox4 {
  uint32_t v[4];
};

inline uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

inline Philox4 philox4x32_10(uint64_t seed, uint32_t c0, uint32_t c1) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t x0 = c0, x1 = c1, x2 = 0, x3 = 0;
  for (int r = 0; r < 10; ++r) {
    const uint32_t a = 0xD2511F53u, b = 0xCD9E8D57u;
    const uint32_t p0 = x0, p2 = x2;
    x0 = mulhi32(b, p2) ^ x1 ^ k0;
    x2 = mulhi32(a, p0) ^ x3 ^ k1;
    x1 = b * p2;
    x3 = a * p0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{x0, x1, x2, x3}};
}

// Triton's uint_to_uniform_float for 32-bit words: a value in [0, 1).
inline float uint_to_uniform(uint32_t u) {
  int32_t x = static_cast<int32_t>(u);
  x ^= x >> 31;  // x < 0 ? -x - 1 : x, without a branch so that callers vectorise
  return static_cast<float>(x) * 4.6566127342e-10f;
}

// Uniform in the open interval (0, 1): log(0) and log(-log(1)) are where Gumbel sampling breaks.
constexpr float kUMin = 1.1754944e-38f;   // smallest normal float
constexpr float kUMax = 0.99999994f;      // 1 - 2^-24, the largest float below 1

inline float clamp_open_unit(float u) {
  u = u < kUMin ? kUMin : u;
  return u > kUMax ? kUMax : u;
}

}  // namespace codesign
