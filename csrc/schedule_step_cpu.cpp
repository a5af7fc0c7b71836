// Fused noise-schedule steps on the CPU: ONE pass over memory, out = ca*a + cb*b (+ cc*c) with
// per-sample float64-derived coefficients. OpenMP splits the flat index range evenly across threads
// (so B = 1 with a huge sample and B = 256 small samples both use every core); the inner loop is a
// contiguous run inside one sample and vectorises. out may alias a, b or c (elementwise read-then-write).
#include <algorithm>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "philox.h"
#include "philox_avx2.h"
#include "schedule_coefs.h"

namespace ddmini {

namespace {

// out[0:n] = ca*a + cb*b (+ cc*c): the contiguous run of one sample.
DDMINI_ALWAYS_INLINE void lincomb2_impl(float ca, const float* a, float cb, const float* b, float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = ca * a[j] + cb * b[j];
}

DDMINI_ALWAYS_INLINE void lincomb3_impl(float ca, const float* a, float cb, const float* b, float cc,
                                       const float* c, float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = ca * a[j] + cb * b[j] + cc * c[j];
}

constexpr int64_t kTile = 1024;  // in-kernel noise is made per L1-sized tile, then used at once

// out[0:n] = normals of elements start .. start + n - 1 of the stream (seed, offset).
DDMINI_ALWAYS_INLINE void philox_fill_impl(float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset) {
  constexpr int kQ = 256;
  float buf[4][kQ];
  const int64_t q_begin = start >> 2, q_end = (start + n + 3) >> 2;
  for (int64_t q0 = q_begin; q0 < q_end; q0 += kQ) {
    const int m = (int)std::min<int64_t>(kQ, q_end - q0);
#pragma omp simd
    for (int k = 0; k < m; ++k)
      philox_normal4((uint64_t)(q0 + k), seed, offset, buf[0][k], buf[1][k], buf[2][k], buf[3][k]);
    const int64_t lo = std::max(start, q0 * 4), hi = std::min(start + n, (q0 + m) * 4);
    for (int64_t i = lo; i < hi; ++i) out[i - start] = buf[i & 3][(i >> 2) - q0];
  }
}

DDMINI_MULTIVERSION(void, lincomb2, (float ca, const float* a, float cb, const float* b, float* out, int64_t n),
                    (ca, a, cb, b, out, n))
DDMINI_MULTIVERSION(void, lincomb3,
                    (float ca, const float* a, float cb, const float* b, float cc, const float* c, float* out,
                     int64_t n),
                    (ca, a, cb, b, cc, c, out, n))
#if DDMINI_ISA_VARIANTS
// The AVX2 variant of philox_fill: blocks made eight at a time by philox_avx2.h into a contiguous buffer.
__attribute__((target("avx2,fma"))) void philox_fill_avx2(float* out, int64_t start, int64_t n, uint64_t seed,
                                                         uint64_t offset) {
  constexpr int kQ = 256;
  alignas(32) float buf[4 * kQ];
  const int64_t q_begin = start >> 2, q_end = (start + n + 3) >> 2;
  for (int64_t q0 = q_begin; q0 < q_end; q0 += kQ) {
    const int m = (int)std::min<int64_t>(kQ, q_end - q0);
    for (int k = 0; k < m; k += 8) philox_normal32((uint64_t)(q0 + k), seed, offset, buf + 4 * k);
    const int64_t lo = std::max(start, q0 * 4), hi = std::min(start + n, (q0 + m) * 4);
    std::copy(buf + (lo - q0 * 4), buf + (hi - q0 * 4), out + (lo - start));
  }
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) void philox_fill_avx512(
    float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset) {
  philox_fill_impl(out, start, n, seed, offset);
}

void philox_fill_baseline(float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset) {
  philox_fill_impl(out, start, n, seed, offset);
}

void philox_fill(float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset) {
  switch (cpu_isa_active()) {
    case kIsaAVX512:
      return philox_fill_avx512(out, start, n, seed, offset);
    case kIsaAVX2:
      return philox_fill_avx2(out, start, n, seed, offset);
    default:
      return philox_fill_baseline(out, start, n, seed, offset);
  }
}
#else
DDMINI_MULTIVERSION(void, philox_fill, (float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset),
                    (out, start, n, seed, offset))
#endif

}  // namespace

void philox_normal_cpu(float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset, int num_threads) {
  if (n <= 0) return;
  const int nt = n >= kStepParallelGrain ? std::max(1, num_threads) : 1;
#pragma omp parallel num_threads(nt)
  {
    const int tid = thread_num(), nth = num_threads_in_team();
    const int64_t begin = n * tid / nth, end = n * (tid + 1) / nth;
    philox_fill(out + begin, start + begin, end - begin, seed, offset);
  }
}

void check_schedule_table(const double* abar, int64_t T) {
  DDMINI_CHECK_ARG(T >= 1, "alphas_cumprod must have at least one entry");
  for (int64_t i = 0; i < T; ++i)
    DDMINI_CHECK_ARG(abar[i] > 0.0 && abar[i] <= 1.0,
                     "alphas_cumprod must lie in (0, 1]; entry " + std::to_string(i) + " is " +
                         std::to_string(abar[i]));
}

void schedule_step_cpu(const StepArgs& s, int num_threads) {
  const int64_t B = s.batch, n = s.inner, total = B * n;
  if (total == 0) return;
  // Coefficients first (cheap: B entries), validating every timestep.
  std::vector<StepCoefs> coefs(B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = s.t ? s.t[b] : s.t_scalar;
    const int64_t tp = s.t_prev ? s.t_prev[b] : s.t_prev_scalar;
    DDMINI_CHECK_ARG(t >= 0 && t < s.T, "t must lie in [0, " + std::to_string(s.T) + "); got " +
                                            std::to_string(t) + " at sample " + std::to_string(b));
    DDMINI_CHECK_ARG(tp < s.T, "t_prev must be < " + std::to_string(s.T) + "; got " + std::to_string(tp));
    coefs[b] = step_coefs(s.op, s.abar, t, tp, s.eta);
  }
  const float* a = s.a;
  const float* bb = s.b;
  const float* c = s.c;
  float* out = s.out;
  const StepCoefs* k = coefs.data();
  const int nt = total >= kStepParallelGrain ? std::max(1, num_threads) : 1;
#pragma omp parallel num_threads(nt)
  {
    const int tid = thread_num(), nth = num_threads_in_team();
    const int64_t begin = total * tid / nth, end = total * (tid + 1) / nth;
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / n, stop = std::min(end, (b + 1) * n);
      const float ca = k[b].ca, cb = k[b].cb, cc = k[b].cc;
      if (s.philox && cc != 0.f) {
        float tile[kTile];
        for (int64_t j = i; j < stop; j += kTile) {
          const int64_t len = std::min(kTile, stop - j);
          philox_fill(tile, j, len, s.seed, s.offset);
          lincomb3(ca, a + j, cb, bb + j, cc, tile, out + j, len);
        }
      } else if (c && cc != 0.f)
        lincomb3(ca, a + i, cb, bb + i, cc, c + i, out + i, stop - i);
      else
        lincomb2(ca, a + i, cb, bb + i, out + i, stop - i);
      i = stop;
    }
  }
}

}  // namespace ddmini
