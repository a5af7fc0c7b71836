// Per-sample coefficients of the fused noise-schedule steps, computed in float64 from the table of
// alphas_cumprod (abar). Every step is out = ca*a + cb*b + cc*c (c may be absent). Shared by the CPU
// and CUDA kernels, so the two cannot drift apart.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define DDMINI_HD __host__ __device__ __forceinline__
#else
#define DDMINI_HD inline
#endif

namespace ddmini {

enum StepOp : int { kQSample = 0, kDDPMSmall = 1, kDDPMLarge = 2, kDDIM = 3 };

struct StepCoefs {
  float ca, cb, cc;
};

// 0/0 guard: a term whose numerator vanishes with its denominator (abar_t == 1) contributes 0.
DDMINI_HD double safe_div(double num, double den) { return den > 0.0 ? num / den : 0.0; }

// t in [0, T); t_prev < 0 means abar_prev = 1 (DDIM's last step).
DDMINI_HD StepCoefs step_coefs(int op, const double* abar, int64_t t, int64_t t_prev, double eta) {
  const double ab_t = abar[t];
  StepCoefs k{0.f, 0.f, 0.f};
  if (op == kQSample) {  // sqrt(abar_t) x0 + sqrt(1 - abar_t) noise
    k.ca = (float)sqrt(ab_t);
    k.cb = (float)sqrt(1.0 - ab_t);
  } else if (op == kDDPMSmall || op == kDDPMLarge) {
    // x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t noise
    const double ab_prev = t > 0 ? abar[t - 1] : 1.0;
    const double alpha = ab_t / ab_prev, beta = 1.0 - alpha;
    const double inv_sqrt_alpha = 1.0 / sqrt(alpha);
    k.ca = (float)inv_sqrt_alpha;
    k.cb = (float)(-safe_div(beta, sqrt(1.0 - ab_t)) * inv_sqrt_alpha);
    double var = op == kDDPMSmall ? safe_div(beta * (1.0 - ab_prev), 1.0 - ab_t) : beta;
    k.cc = t > 0 ? (float)sqrt(var > 0.0 ? var : 0.0) : 0.f;
  } else {  // DDIM
    const double ab_prev = t_prev >= 0 ? abar[t_prev] : 1.0;
    const double sigma =
        eta * sqrt(safe_div(1.0 - ab_prev, 1.0 - ab_t)) * sqrt(fmax(1.0 - ab_t / ab_prev, 0.0));
    const double dir = sqrt(fmax(1.0 - ab_prev - sigma * sigma, 0.0));
    const double s = sqrt(ab_prev / ab_t);  // sqrt(abar_prev) / sqrt(abar_t)
    // sqrt(abar_prev) * (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) + dir * eps + sigma * noise
    k.ca = (float)s;
    k.cb = (float)(dir - s * sqrt(1.0 - ab_t));
    k.cc = (float)sigma;
  }
  return k;
}

}  // namespace ddmini
