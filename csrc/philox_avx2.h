// Philox4x32-10 + Box-Muller (philox.h) eight blocks at a time in AVX2 registers, for the CPU kernels'
// AVX2 variant: compilers do not vectorise the rounds' 32x32->64-bit multiplies for AVX2 (there is no
// 64-bit lane multiply), so the scalar form runs ~4x slower there than with AVX-512. Here each multiply
// is two _mm256_mul_epu32 (even lanes, then odd lanes shifted down), and log / sin / cos are the
// polynomials of philox.h's fast_log and fast_sincos_2pi on eight floats. The words are bit-identical
// to philox.h's; the normals agree with the scalar code to float rounding (FMA contraction may differ),
// which tests/test_kernels.py bounds across every CPU variant.
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>

namespace ddmini {

#define DDMINI_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

// (hi, lo) 32-bit halves of the eight products a[i] * m (m broadcast).
DDMINI_AVX2 void mulhilo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                        // lanes 0,2,4,6 as 64-bit products
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1,3,5,7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

DDMINI_AVX2 void philox8(__m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3, uint32_t k0, uint32_t k1) {
  const __m256i M0 = _mm256_set1_epi32((int)0xD2511F53u), M1 = _mm256_set1_epi32((int)0xCD9E8D57u);
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(c0, M0, hi0, lo0);
    mulhilo8(c2, M1, hi1, lo1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// philox.h fast_log on eight u in (0, 1].
DDMINI_AVX2 __m256 log8(__m256 u) {
  const __m256i bits = _mm256_castps_si256(u);
  const __m256 m1 = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(0x3f800000)));
  const __m256 big = _mm256_cmp_ps(m1, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  const __m256 m = _mm256_blendv_ps(m1, _mm256_mul_ps(m1, _mm256_set1_ps(0.5f)), big);
  const __m256i e_raw = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(0xff)),
                                         _mm256_set1_epi32(127));
  const __m256i e_int = _mm256_sub_epi32(e_raw, _mm256_castps_si256(big));  // big is all ones (-1) where set
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 s = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
  const __m256 s2 = _mm256_mul_ps(s, s);
  __m256 p = _mm256_set1_ps(1.f / 9);
  p = _mm256_add_ps(_mm256_set1_ps(1.f / 7), _mm256_mul_ps(s2, p));
  p = _mm256_add_ps(_mm256_set1_ps(1.f / 5), _mm256_mul_ps(s2, p));
  p = _mm256_add_ps(_mm256_set1_ps(1.f / 3), _mm256_mul_ps(s2, p));
  p = _mm256_add_ps(one, _mm256_mul_ps(s2, p));
  p = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.f), s), p);
  return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(e_int), _mm256_set1_ps(0.69314718f)), p);
}

// philox.h fast_sincos_2pi on eight u in [0, 1).
DDMINI_AVX2 void sincos8(__m256 u, __m256& s_out, __m256& c_out) {
  const __m256 x = _mm256_mul_ps(_mm256_set1_ps(3.14159265f), _mm256_sub_ps(u, _mm256_set1_ps(0.5f)));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 s = _mm256_set1_ps(-1.f / 39916800);
  s = _mm256_add_ps(_mm256_set1_ps(1.f / 362880), _mm256_mul_ps(x2, s));
  s = _mm256_add_ps(_mm256_set1_ps(-1.f / 5040), _mm256_mul_ps(x2, s));
  s = _mm256_add_ps(_mm256_set1_ps(1.f / 120), _mm256_mul_ps(x2, s));
  s = _mm256_add_ps(_mm256_set1_ps(-1.f / 6), _mm256_mul_ps(x2, s));
  s = _mm256_mul_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_mul_ps(x2, s)));
  __m256 c = _mm256_set1_ps(1.f / 479001600);
  c = _mm256_add_ps(_mm256_set1_ps(-1.f / 3628800), _mm256_mul_ps(x2, c));
  c = _mm256_add_ps(_mm256_set1_ps(1.f / 40320), _mm256_mul_ps(x2, c));
  c = _mm256_add_ps(_mm256_set1_ps(-1.f / 720), _mm256_mul_ps(x2, c));
  c = _mm256_add_ps(_mm256_set1_ps(1.f / 24), _mm256_mul_ps(x2, c));
  c = _mm256_add_ps(_mm256_set1_ps(-0.5f), _mm256_mul_ps(x2, c));
  c = _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_mul_ps(x2, c));
  s_out = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.f), s), c);
  c_out = _mm256_sub_ps(_mm256_mul_ps(c, c), _mm256_mul_ps(s, s));
}

// philox.h box_muller on eight word pairs: (r cos th, r sin th).
DDMINI_AVX2 void box_muller8(__m256i a, __m256i b, __m256& n0, __m256& n1) {
  const __m256 scale = _mm256_set1_ps(1.f / 16777216.f);
  const __m256 u1 = _mm256_mul_ps(
      _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_srli_epi32(a, 8), _mm256_set1_epi32(1))), scale);
  const __m256 u2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 8)), scale);
  const __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.f), log8(u1)));
  __m256 s, c;
  sincos8(u2, s, c);
  n0 = _mm256_mul_ps(r, c);
  n1 = _mm256_mul_ps(r, s);
}

// The 32 normals of Philox blocks q .. q + 7, in element order (block q's four, then q + 1's, ...).
DDMINI_AVX2 void philox_normal32(uint64_t q, uint64_t seed, uint64_t offset, float* dst) {
  alignas(32) uint32_t lo[8], hi[8];
  for (int j = 0; j < 8; ++j) {
    lo[j] = (uint32_t)(q + j);
    hi[j] = (uint32_t)((q + j) >> 32);
  }
  __m256i c0 = _mm256_load_si256((const __m256i*)lo), c1 = _mm256_load_si256((const __m256i*)hi);
  __m256i c2 = _mm256_set1_epi32((int)(uint32_t)offset), c3 = _mm256_set1_epi32((int)(uint32_t)(offset >> 32));
  philox8(c0, c1, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32));
  __m256 a, b, c, d;  // element 4j + 0..3 of block q + j in lane j
  box_muller8(c0, c1, a, b);
  box_muller8(c2, c3, c, d);
  // 4 x 8 -> 8 x 4 transpose, so each block's four normals are contiguous
  const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
  const __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u1, 0x20));
  _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
  _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
  _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
}

#undef DDMINI_AVX2

}  // namespace ddmini
#endif
