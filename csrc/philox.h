// Counter-based Gaussian noise: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011) + Box-Muller, shared by the CPU and CUDA kernels so both give the same numbers.
//
// Element i of the stream (seed, offset) comes from Philox block q = i / 4 with counter
// (q_lo, q_hi, offset_lo, offset_hi) and key (seed_lo, seed_hi): the four 32-bit words x0..x3 give
// u1 = ((x0 >> 8) + 1) / 2^24 in (0, 1], u2 = (x1 >> 8) / 2^24 (and u3, u4 from x2, x3), then
// normals r cos(th), r sin(th) with r = sqrt(-2 ln u1), th = 2 pi (u2 - 1/2), for lanes 0, 1 (2, 3).
// The value of element i does not depend on how the range is split across threads or blocks.
// log and sincos are short polynomials (|error| < 1e-6 over the range used), so the loop vectorises.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define DDMINI_PHD __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
// always inlined: each CPU variant of the caller (common.h) compiles these for its own instruction set
#define DDMINI_PHD inline __attribute__((always_inline))
#else
#define DDMINI_PHD inline
#endif

namespace ddmini {

// Scalars in and out (no arrays), rounds unrolled: the form compilers vectorise across a loop.
DDMINI_PHD void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma GCC unroll 10
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
}

DDMINI_PHD uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t i;
  __builtin_memcpy(&i, &f, 4);
  return i;
#endif
}

DDMINI_PHD float bits_float(uint32_t i) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(i);
#else
  float f;
  __builtin_memcpy(&f, &i, 4);
  return f;
#endif
}

// ln(u) for u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1)).
DDMINI_PHD float fast_log(float u) {
  const uint32_t bits = float_bits(u);
  const float m1 = bits_float((bits & 0x7fffffu) | 0x3f800000u);  // in [1, 2)
  const bool big = m1 > 1.41421356f;
  const float m = big ? 0.5f * m1 : m1;
  const int e = (int)((bits >> 23) & 0xff) - 127 + (big ? 1 : 0);
  const float s = (m - 1.f) / (m + 1.f), s2 = s * s;
  const float p = 2.f * s * (1.f + s2 * (1.f / 3 + s2 * (1.f / 5 + s2 * (1.f / 7 + s2 * (1.f / 9)))));
  return (float)e * 0.69314718f + p;
}

// sin and cos of th = 2 pi (u - 1/2) in [-pi, pi) via the half angle x = th / 2 in [-pi/2, pi/2).
DDMINI_PHD void fast_sincos_2pi(float u, float* s_out, float* c_out) {
  const float x = 3.14159265f * (u - 0.5f), x2 = x * x;
  const float s = x * (1.f + x2 * (-1.f / 6 + x2 * (1.f / 120 + x2 * (-1.f / 5040 + x2 * (1.f / 362880 + x2 * (-1.f / 39916800))))));
  const float c = 1.f + x2 * (-0.5f + x2 * (1.f / 24 + x2 * (-1.f / 720 + x2 * (1.f / 40320 + x2 * (-1.f / 3628800 + x2 * (1.f / 479001600))))));
  *s_out = 2.f * s * c;
  *c_out = c * c - s * s;
}

// Box-Muller on two Philox words: (r cos th, r sin th).
DDMINI_PHD void box_muller(uint32_t a, uint32_t b, float& n0, float& n1) {
  const float scale = 1.f / 16777216.f;
  const float u1 = (float)((a >> 8) + 1u) * scale;
  const float u2 = (float)(b >> 8) * scale;
  const float r = std::sqrt(-2.f * fast_log(u1));
  float s, c;
  fast_sincos_2pi(u2, &s, &c);
  n0 = r * c;
  n1 = r * s;
}

// The four normals of Philox block q.
DDMINI_PHD void philox_normal4(uint64_t q, uint64_t seed, uint64_t offset, float& n0, float& n1, float& n2,
                               float& n3) {
  uint32_t x0 = (uint32_t)q, x1 = (uint32_t)(q >> 32), x2 = (uint32_t)offset, x3 = (uint32_t)(offset >> 32);
  philox4x32_10(x0, x1, x2, x3, (uint32_t)seed, (uint32_t)(seed >> 32));
  box_muller(x0, x1, n0, n1);
  box_muller(x2, x3, n2, n3);
}

}  // namespace ddmini
