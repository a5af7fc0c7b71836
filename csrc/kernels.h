// Declarations of every kernel in ddmini._C. <op>_cpu lives in <op>_cpu.cpp, <op>_cuda in <op>_cuda.cu.
#pragma once
#include <cstdint>

namespace ddmini {

// One fused noise-schedule step: out[b, i] = ca[b]*a[b, i] + cb[b]*b[b, i] + cc[b]*c[b, i],
// coefficients from schedule_coefs.h. Pointers are host pointers for *_cpu, device pointers for *_cuda.
struct StepArgs {
  int op = 0;                       // StepOp
  const float* a = nullptr;         // x0 (q_sample) or x_t
  const float* b = nullptr;         // noise (q_sample) or eps
  const float* c = nullptr;         // noise for the steps; may be null
  float* out = nullptr;             // may alias a, b or c
  int64_t batch = 0, inner = 0;     // B and elements per sample
  const double* abar = nullptr;     // alphas_cumprod, T entries
  int64_t T = 0;
  const int64_t* t = nullptr;       // per-sample timesteps (B,), or null to use t_scalar
  int64_t t_scalar = 0;
  const int64_t* t_prev = nullptr;  // DDIM only
  int64_t t_prev_scalar = -1;
  double eta = 0.0;                 // DDIM only
  bool philox = false;              // noise generated in the kernel (c must be null): philox.h stream
  uint64_t seed = 0, offset = 0;    //   (seed, offset), element i of the flat range
};

void check_schedule_table(const double* abar, int64_t T);
// out[0:n] = normals of the Philox stream (seed, offset), elements start .. start + n - 1.
void philox_normal_cpu(float* out, int64_t start, int64_t n, uint64_t seed, uint64_t offset, int num_threads);
#ifdef DDMINI_WITH_CUDA
void philox_normal_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream);
#endif
void schedule_step_cpu(const StepArgs& s, int num_threads);
#ifdef DDMINI_WITH_CUDA
void schedule_step_cuda(const StepArgs& s, uintptr_t stream);
#endif

// out[b] = tr((C1[b] C2[b])^{1/2}) for B pairs of symmetric PSD d x d float64 matrices (row-major);
// NaN where the eigenvalue iteration did not converge, kNotPsd1 / kNotPsd2 where C1 / C2 is not PSD
// within a relative tolerance kPsdTol of its largest entry (eigenvalue).
constexpr double kPsdTol = 1e-8;
constexpr double kNotPsd1 = -1.0, kNotPsd2 = -2.0;
void trace_sqrt_product_cpu(const double* C1, const double* C2, int64_t B, int64_t d, double* out,
                            int num_threads);

// GroupNorm with a per-sample affine, then SiLU (group_norm_silu_cpu.cpp): y = silu(A[n,c] xhat + B[n,c]).
// x, y, dy, dx hold N samples of C channels by HW pixels, channels innermost when channels_last
// (else channels first), float32 or (bf16) bfloat16 bits; A, B, dA, dB are float32 (N, C); mean and
// rstd float32 (N, G), written by the forward and read by the backward. dx may not alias x or dy.
struct GroupNormSiluArgs {
  int64_t N = 0, C = 0, HW = 0, G = 0;
  bool channels_last = true;
  bool bf16 = false;
  float eps = 1e-5f;
  const float* A = nullptr;
  const float* B = nullptr;
};
void group_norm_silu_forward_cpu(const GroupNormSiluArgs& s, const void* x, void* y, float* mean, float* rstd,
                                 int num_threads);
void group_norm_silu_backward_cpu(const GroupNormSiluArgs& s, const void* dy, const void* x, const float* mean,
                                  const float* rstd, void* dx, float* dA, float* dB, int num_threads);

void axpy_cpu(float a, const float* x, float* y, int64_t n, int num_threads);
#ifdef DDMINI_WITH_CUDA
void axpy_cuda(float a, const float* x, float* y, int64_t n, uintptr_t stream);
#endif

}  // namespace ddmini
