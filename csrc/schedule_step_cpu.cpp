// Fused noise-schedule steps on the CPU: ONE pass over memory, out = ca*a + cb*b (+ cc*c) with
// per-sample float64-derived coefficients. OpenMP splits the flat index range evenly across threads
// (so B = 1 with a huge sample and B = 256 small samples both use every core); the inner loop is a
// contiguous run inside one sample and vectorises. out may alias a, b or c (elementwise read-then-write).
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "schedule_coefs.h"

namespace ddmini {

namespace {

// out[0:n] = ca*a + cb*b (+ cc*c): the contiguous run of one sample.
DDMINI_CLONES void lincomb2(float ca, const float* a, float cb, const float* b, float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = ca * a[j] + cb * b[j];
}

DDMINI_CLONES void lincomb3(float ca, const float* a, float cb, const float* b, float cc, const float* c,
                            float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = ca * a[j] + cb * b[j] + cc * c[j];
}

}  // namespace

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
  const int nt = total >= kParallelGrain ? std::max(1, num_threads) : 1;
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int64_t begin = total * tid / nth, end = total * (tid + 1) / nth;
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / n, stop = std::min(end, (b + 1) * n);
      const float ca = k[b].ca, cb = k[b].cb, cc = k[b].cc;
      if (c && cc != 0.f)
        lincomb3(ca, a + i, cb, bb + i, cc, c + i, out + i, stop - i);
      else
        lincomb2(ca, a + i, cb, bb + i, out + i, stop - i);
      i = stop;
    }
  }
}

}  // namespace ddmini
