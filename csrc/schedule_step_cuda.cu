// Fused noise-schedule steps on the GPU: one grid-stride pass, float4 loads/stores when every
// pointer is 16-byte aligned and the per-sample size is a multiple of 4 (then a float4 never spans
// two samples). Each thread derives its sample's coefficients in float64 from the device table and
// reuses them while consecutive elements belong to the same sample. Timesteps are validated by the
// Python layer; here they are clamped so a bad value can never read outside the table.
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "kernels.h"
#include "schedule_coefs.h"

namespace ddmini {
namespace {

struct DevStep {
  int op;
  int64_t T;
  const double* abar;
  const int64_t* t;
  int64_t t_scalar;
  const int64_t* t_prev;
  int64_t t_prev_scalar;
  double eta;
};

__device__ __forceinline__ StepCoefs coefs_for(const DevStep& d, int64_t b) {
  int64_t t = d.t ? d.t[b] : d.t_scalar;
  t = t < 0 ? 0 : (t >= d.T ? d.T - 1 : t);
  int64_t tp = d.t_prev ? d.t_prev[b] : d.t_prev_scalar;
  tp = tp >= d.T ? d.T - 1 : tp;
  return step_coefs(d.op, d.abar, t, tp, d.eta);
}

template <bool HasC>
__global__ void step_scalar(DevStep d, const float* a, const float* b, const float* c, float* out,
                            int64_t n, int64_t total) {
  int64_t cached = -1;
  StepCoefs k{0.f, 0.f, 0.f};
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / n;
    if (s != cached) { k = coefs_for(d, s); cached = s; }
    float v = k.ca * a[i] + k.cb * b[i];
    if (HasC) v += k.cc * c[i];
    out[i] = v;
  }
}

template <bool HasC>
__global__ void step_vec4(DevStep d, const float4* a, const float4* b, const float4* c, float4* out,
                          int64_t n4, int64_t total4) {
  int64_t cached = -1;
  StepCoefs k{0.f, 0.f, 0.f};
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total4;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / n4;
    if (s != cached) { k = coefs_for(d, s); cached = s; }
    const float4 x = a[i], y = b[i];
    float4 r = make_float4(k.ca * x.x + k.cb * y.x, k.ca * x.y + k.cb * y.y,
                           k.ca * x.z + k.cb * y.z, k.ca * x.w + k.cb * y.w);
    if (HasC) {
      const float4 z = c[i];
      r.x += k.cc * z.x; r.y += k.cc * z.y; r.z += k.cc * z.z; r.w += k.cc * z.w;
    }
    out[i] = r;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void schedule_step_cuda(const StepArgs& s, uintptr_t stream) {
  const int64_t total = s.batch * s.inner;
  if (total == 0) return;
  auto st = reinterpret_cast<cudaStream_t>(stream);
  DevStep d{s.op, s.T, s.abar, s.t, s.t_scalar, s.t_prev, s.t_prev_scalar, s.eta};
  const bool vec = s.inner % 4 == 0 && aligned16(s.a) && aligned16(s.b) && aligned16(s.out) &&
                   (s.c == nullptr || aligned16(s.c));
  if (vec) {
    const int64_t n4 = s.inner / 4, total4 = total / 4;
    auto a = reinterpret_cast<const float4*>(s.a);
    auto b = reinterpret_cast<const float4*>(s.b);
    auto c = reinterpret_cast<const float4*>(s.c);
    auto o = reinterpret_cast<float4*>(s.out);
    if (s.c) step_vec4<true><<<grid_for(total4, kBlock), kBlock, 0, st>>>(d, a, b, c, o, n4, total4);
    else step_vec4<false><<<grid_for(total4, kBlock), kBlock, 0, st>>>(d, a, b, c, o, n4, total4);
  } else {
    if (s.c) step_scalar<true><<<grid_for(total, kBlock), kBlock, 0, st>>>(d, s.a, s.b, s.c, s.out, s.inner, total);
    else step_scalar<false><<<grid_for(total, kBlock), kBlock, 0, st>>>(d, s.a, s.b, s.c, s.out, s.inner, total);
  }
  check_launch("schedule_step");
}

}  // namespace ddmini
