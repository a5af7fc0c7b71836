// GroupNorm + per-sample affine + SiLU in one pass over the activations, forward and backward:
//   xhat = (x - mean_g) * rstd_g            (biased variance over the group's channels and pixels)
//   z    = A[n, c] * xhat + B[n, c]         (A, B: GroupNorm's weight and bias, times / plus a
//                                            per-sample scale and shift, folded by the caller)
//   y    = z * sigmoid(z)
// Backward, with dz = dy * s * (1 + z (1 - s)), s = sigmoid(z), and means over the group's m elements:
//   dA[n, c] = sum_hw dz * xhat,  dB[n, c] = sum_hw dz,
//   dx = rstd_g * (A dz - mean_g(A dz) - xhat * mean_g(A dz xhat)).
// One sample's activations (at most a few tens of KB in the U-Nets here) stay in cache across the
// passes, so the work is a few sweeps over L1/L2 rather than the ~8 sweeps over memory of GroupNorm,
// mul, add and SiLU as separate PyTorch ops (and their backward). Samples run in parallel.
// Layouts: channels_last (N, H*W, C: C innermost, what ddmini trains in float32) or channels-first
// (N, C, H*W). Storage of x, y, dy, dx: float32, or bfloat16 (bf16 autocast training), always computed
// in float32 (as autocast runs GroupNorm) and rounded to nearest even once on store. A, B, dA, dB,
// mean, rstd are float32. exp is a polynomial (fast_exp) that the compiler vectorises, within ~2 ulp of expf.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace ddmini {
namespace {

DDMINI_ALWAYS_INLINE float bits_to_float(uint32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

DDMINI_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// Element storage: float32 as is; bf16 as the upper 16 bits of a float32 (loads exact; stores round to
// nearest even, NaN kept a quiet NaN).
DDMINI_ALWAYS_INLINE float load(const float* p, int64_t i) { return p[i]; }
DDMINI_ALWAYS_INLINE float load(const uint16_t* p, int64_t i) { return bits_to_float((uint32_t)p[i] << 16); }
DDMINI_ALWAYS_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
DDMINI_ALWAYS_INLINE void store(uint16_t* p, int64_t i, float v) {
  const uint32_t u = float_to_bits(v);
  const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  p[i] = (uint16_t)(v != v ? 0x7fc0u : r);
}

// e^x for x in float range: 2^n * e^r, n = round(x / ln 2), |r| <= ln2 / 2, e^r by a degree-6
// Taylor polynomial (relative error < 2e-7 on that range). Inputs are clamped to [-87, 88] so 2^n
// stays a normal float; NaN passes the clamps (comparisons with NaN are false) and comes out NaN.
DDMINI_ALWAYS_INLINE float fast_exp(float x) {
  x = x < -87.f ? -87.f : x;
  x = x > 88.f ? 88.f : x;
  const float n = std::floor(x * 1.44269504f + 0.5f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 split in two for exactness
  const float p =
      1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
  return p * bits_to_float((uint32_t)((int32_t)n + 127) << 23);
}

DDMINI_ALWAYS_INLINE float sigmoid(float z) { return 1.f / (1.f + fast_exp(-z)); }

constexpr int64_t kBlock = 16;  // pixels per float partial sum (channels_last)

struct Dims {
  int64_t C, HW, G;
  int64_t cg() const { return C / G; }
  double m() const { return (double)(cg() * HW); }
};

// acc[c] = sum over the HW pixels of (x - center[c]), or of its square, channels_last: float sums over
// blocks of kBlock pixels added in double (float accuracy of a sum of kBlock terms, not of HW terms).
template <bool kSquare, typename T>
DDMINI_ALWAYS_INLINE void channel_sums(const T* __restrict x, int64_t HW, int64_t C, const float* __restrict center,
                                       float* __restrict s, double* __restrict acc) {
  for (int64_t c = 0; c < C; ++c) acc[c] = 0.0;
  for (int64_t p0 = 0; p0 < HW; p0 += kBlock) {
    for (int64_t c = 0; c < C; ++c) s[c] = 0.f;
    for (int64_t p = p0; p < std::min(HW, p0 + kBlock); ++p) {
      const T* xp = x + p * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float u = load(xp, c) - center[c];
        s[c] += kSquare ? u * u : u;
      }
    }
    for (int64_t c = 0; c < C; ++c) acc[c] += s[c];
  }
}

// Per-thread scratch: per-channel float and double arrays, and a sample's dz (backward).
struct Scratch {
  std::vector<float> f;
  std::vector<double> d;
  Scratch(int64_t C, int64_t per_sample) : f(4 * C + per_sample), d(2 * C) {}
  float* ch(int k, int64_t C) { return f.data() + k * C; }
  float* dz(int64_t C) { return f.data() + 4 * C; }
};

// ---- channels_last: element (p, c) of a sample at p * C + c ------------------------------------
template <typename T>
DDMINI_ALWAYS_INLINE void fwd_cl(const T* __restrict x, const float* __restrict A, const float* __restrict B,
                                 T* __restrict y, float* __restrict mean, float* __restrict rstd, Dims d, float eps,
                                 float* __restrict s, float* __restrict a, float* __restrict b,
                                 double* __restrict acc) {
  const int64_t C = d.C, HW = d.HW, cg = d.cg();
  for (int64_t c = 0; c < C; ++c) a[c] = 0.f;
  channel_sums<false>(x, HW, C, a, s, acc);
  for (int64_t g = 0; g < d.G; ++g) {
    double t = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += acc[c];
    mean[g] = (float)(t / d.m());
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) a[c] = mean[g];
  }
  channel_sums<true>(x, HW, C, a, s, acc);
  for (int64_t g = 0; g < d.G; ++g) {
    double t = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += acc[c];
    rstd[g] = (float)(1.0 / std::sqrt(t / d.m() + eps));
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      a[c] = rstd[g] * A[c];
      b[c] = B[c] - mean[g] * a[c];
    }
  }
  for (int64_t p = 0; p < HW; ++p) {
    const T* xp = x + p * C;
    T* yp = y + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float z = load(xp, c) * a[c] + b[c];
      store(yp, c, z * sigmoid(z));
    }
  }
}

template <typename T>
DDMINI_ALWAYS_INLINE void bwd_cl(const T* __restrict dy, const T* __restrict x, const float* __restrict A,
                                 const float* __restrict B, const float* __restrict mean, const float* __restrict rstd,
                                 T* __restrict dx, float* __restrict dA, float* __restrict dB, Dims d,
                                 float* __restrict mc, float* __restrict rc, float* __restrict k2,
                                 float* __restrict k3, double* __restrict acc, float* __restrict dzs) {
  const int64_t C = d.C, HW = d.HW, cg = d.cg();
  for (int64_t c = 0; c < C; ++c) {
    mc[c] = mean[c / cg];
    rc[c] = rstd[c / cg];
    acc[c] = acc[C + c] = 0.0;
  }
  // pass 1: dz into dzs, per-channel sums of dz and dz * xhat (blocks as in the forward) into dB and dA
  for (int64_t p0 = 0; p0 < HW; p0 += kBlock) {
    for (int64_t c = 0; c < C; ++c) k2[c] = k3[c] = 0.f;
    for (int64_t p = p0; p < std::min(HW, p0 + kBlock); ++p) {
      const T* xp = x + p * C;
      const T* gp = dy + p * C;
      float* op = dzs + p * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (load(xp, c) - mc[c]) * rc[c];
        const float z = xh * A[c] + B[c];
        const float sg = sigmoid(z);
        const float dz = load(gp, c) * sg * (1.f + z * (1.f - sg));
        op[c] = dz;
        k2[c] += dz;
        k3[c] += dz * xh;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      acc[c] += k2[c];
      acc[C + c] += k3[c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    dB[c] = (float)acc[c];
    dA[c] = (float)acc[C + c];
  }
  // dx = k1 dz + k2 x + k3 per channel (k1 = rstd A kept in rc)
  for (int64_t g = 0; g < d.G; ++g) {
    double t1 = 0.0, t2 = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      t1 += A[c] * acc[c];
      t2 += A[c] * acc[C + c];
    }
    const float m1 = (float)(t1 / d.m()), m2 = (float)(t2 / d.m());
    const float r = rstd[g];
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      rc[c] = r * A[c];
      k2[c] = -r * r * m2;
      k3[c] = r * (r * m2 * mean[g] - m1);
    }
  }
  for (int64_t p = 0; p < HW; ++p) {
    const T* xp = x + p * C;
    const float* zp = dzs + p * C;
    T* op = dx + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) store(op, c, rc[c] * zp[c] + k2[c] * load(xp, c) + k3[c]);
  }
}

// ---- channels-first: channel c of a sample at c * HW .. (c + 1) * HW ---------------------------
template <typename T>
DDMINI_ALWAYS_INLINE void fwd_cf(const T* __restrict x, const float* __restrict A, const float* __restrict B,
                                 T* __restrict y, float* __restrict mean, float* __restrict rstd, Dims d, float eps) {
  const int64_t HW = d.HW, cg = d.cg(), m = cg * HW;
  for (int64_t g = 0; g < d.G; ++g) {
    const T* xg = x + g * m;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < m; ++i) s += load(xg, i);
    const float mu = (float)(s / d.m());
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < m; ++i) {
      const float u = load(xg, i) - mu;
      v += u * u;
    }
    const float r = (float)(1.0 / std::sqrt(v / d.m() + eps));
    mean[g] = mu;
    rstd[g] = r;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const float a = r * A[c], b = B[c] - mu * a;
      const T* xc = x + c * HW;
      T* yc = y + c * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        const float z = load(xc, i) * a + b;
        store(yc, i, z * sigmoid(z));
      }
    }
  }
}

template <typename T>
DDMINI_ALWAYS_INLINE void bwd_cf(const T* __restrict dy, const T* __restrict x, const float* __restrict A,
                                 const float* __restrict B, const float* __restrict mean, const float* __restrict rstd,
                                 T* __restrict dx, float* __restrict dA, float* __restrict dB, Dims d,
                                 float* __restrict dzs) {
  const int64_t HW = d.HW, cg = d.cg();
  for (int64_t g = 0; g < d.G; ++g) {
    const float mu = mean[g], r = rstd[g];
    double t1 = 0.0, t2 = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const T* xc = x + c * HW;
      const T* gc = dy + c * HW;
      float* oc = dzs + c * HW;
      const float a = A[c], b = B[c];
      double tdz = 0.0, tdzx = 0.0;  // float partial sums over kBlock * 4 pixels, added in double
      for (int64_t i0 = 0; i0 < HW; i0 += 4 * kBlock) {
        const int64_t i1 = std::min(HW, i0 + 4 * kBlock);
        float sdz = 0.f, sdzx = 0.f;
#pragma omp simd reduction(+ : sdz, sdzx)
        for (int64_t i = i0; i < i1; ++i) {
          const float xh = (load(xc, i) - mu) * r;
          const float z = xh * a + b;
          const float sg = sigmoid(z);
          const float dz = load(gc, i) * sg * (1.f + z * (1.f - sg));
          oc[i] = dz;
          sdz += dz;
          sdzx += dz * xh;
        }
        tdz += sdz;
        tdzx += sdzx;
      }
      dA[c] = (float)tdzx;
      dB[c] = (float)tdz;
      t1 += a * tdz;
      t2 += a * tdzx;
    }
    const float m1 = (float)(t1 / d.m()), m2 = (float)(t2 / d.m());
    const float k2 = -r * r * m2, k3 = r * (r * m2 * mu - m1);
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const float k1 = r * A[c];
      const T* xc = x + c * HW;
      const float* zc = dzs + c * HW;
      T* oc = dx + c * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) store(oc, i, k1 * zc[i] + k2 * load(xc, i) + k3);
    }
  }
}

// Sample n, forward or backward, either layout, storage T; compiled per CPU variant below.
template <typename T>
DDMINI_ALWAYS_INLINE void fwd_sample_t(const GroupNormSiluArgs& s, int64_t n, const void* x, void* y, float* mean,
                                       float* rstd, Scratch& w) {
  const Dims d{s.C, s.HW, s.G};
  const int64_t per = s.C * s.HW;
  const T* xn = static_cast<const T*>(x) + n * per;
  T* yn = static_cast<T*>(y) + n * per;
  const float *A = s.A + n * s.C, *B = s.B + n * s.C;
  if (s.channels_last)
    fwd_cl(xn, A, B, yn, mean + n * s.G, rstd + n * s.G, d, s.eps, w.ch(0, s.C), w.ch(1, s.C), w.ch(2, s.C),
           w.d.data());
  else
    fwd_cf(xn, A, B, yn, mean + n * s.G, rstd + n * s.G, d, s.eps);
}

template <typename T>
DDMINI_ALWAYS_INLINE void bwd_sample_t(const GroupNormSiluArgs& s, int64_t n, const void* dy, const void* x,
                                       const float* mean, const float* rstd, void* dx, float* dA, float* dB,
                                       Scratch& w) {
  const Dims d{s.C, s.HW, s.G};
  const int64_t per = s.C * s.HW;
  const T* gn = static_cast<const T*>(dy) + n * per;
  const T* xn = static_cast<const T*>(x) + n * per;
  T* on = static_cast<T*>(dx) + n * per;
  const float *A = s.A + n * s.C, *B = s.B + n * s.C;
  if (s.channels_last)
    bwd_cl(gn, xn, A, B, mean + n * s.G, rstd + n * s.G, on, dA + n * s.C, dB + n * s.C, d, w.ch(0, s.C),
           w.ch(1, s.C), w.ch(2, s.C), w.ch(3, s.C), w.d.data(), w.dz(s.C));
  else
    bwd_cf(gn, xn, A, B, mean + n * s.G, rstd + n * s.G, on, dA + n * s.C, dB + n * s.C, d, w.dz(s.C));
}

DDMINI_ALWAYS_INLINE void fwd_sample_impl(const GroupNormSiluArgs& s, int64_t n, const void* x, void* y, float* mean,
                                          float* rstd, Scratch& w) {
  if (s.bf16)
    fwd_sample_t<uint16_t>(s, n, x, y, mean, rstd, w);
  else
    fwd_sample_t<float>(s, n, x, y, mean, rstd, w);
}

DDMINI_ALWAYS_INLINE void bwd_sample_impl(const GroupNormSiluArgs& s, int64_t n, const void* dy, const void* x,
                                          const float* mean, const float* rstd, void* dx, float* dA, float* dB,
                                          Scratch& w) {
  if (s.bf16)
    bwd_sample_t<uint16_t>(s, n, dy, x, mean, rstd, dx, dA, dB, w);
  else
    bwd_sample_t<float>(s, n, dy, x, mean, rstd, dx, dA, dB, w);
}

DDMINI_MULTIVERSION(void, fwd_sample,
                    (const GroupNormSiluArgs& s, int64_t n, const void* x, void* y, float* mean, float* rstd,
                     Scratch& w),
                    (s, n, x, y, mean, rstd, w))
DDMINI_MULTIVERSION(void, bwd_sample,
                    (const GroupNormSiluArgs& s, int64_t n, const void* dy, const void* x, const float* mean,
                     const float* rstd, void* dx, float* dA, float* dB, Scratch& w),
                    (s, n, dy, x, mean, rstd, dx, dA, dB, w))

// fn(n, scratch) for every sample, in parallel when the work is large enough, after checking the dims.
template <typename Fn>
void for_each_sample(const GroupNormSiluArgs& s, int num_threads, int64_t scratch_per_sample, Fn fn) {
  DDMINI_CHECK_ARG(s.N >= 0 && s.C >= 1 && s.HW >= 1, "group_norm_silu: empty channel or pixel dimension");
  DDMINI_CHECK_ARG(s.G >= 1 && s.C % s.G == 0, "group_norm_silu: groups must divide the channels");
  DDMINI_CHECK_ARG(s.eps > 0.f && std::isfinite(s.eps), "group_norm_silu: eps must be positive and finite");
  const int threads = s.N * s.C * s.HW >= kParallelGrain ? num_threads : 1;
#pragma omp parallel num_threads(threads)
  {
    Scratch w(s.C, scratch_per_sample);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) fn(n, w);
  }
}

}  // namespace

void group_norm_silu_forward_cpu(const GroupNormSiluArgs& s, const void* x, void* y, float* mean, float* rstd,
                                 int num_threads) {
  for_each_sample(s, num_threads, 0, [&](int64_t n, Scratch& w) { fwd_sample(s, n, x, y, mean, rstd, w); });
}

void group_norm_silu_backward_cpu(const GroupNormSiluArgs& s, const void* dy, const void* x, const float* mean,
                                  const float* rstd, void* dx, float* dA, float* dB, int num_threads) {
  for_each_sample(s, num_threads, s.C * s.HW,
                  [&](int64_t n, Scratch& w) { bwd_sample(s, n, dy, x, mean, rstd, dx, dA, dB, w); });
}

}  // namespace ddmini
