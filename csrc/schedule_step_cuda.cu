// Fused noise-schedule steps on the GPU: one grid-stride pass, float4 loads/stores when every
// pointer is 16-byte aligned and the per-sample size is a multiple of 4 (then a float4 never spans
// two samples). Each thread derives its sample's coefficients in float64 from the device table and
// reuses them while consecutive elements belong to the same sample. Timesteps are validated by the
// Python layer; here they are clamped so a bad value can never read outside the table.
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda_common.cuh"
#include "kernels.h"
#include "philox.h"
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
  uint64_t seed, offset;  // in-kernel noise (Noise == kPhilox)
};

enum NoiseKind { kNone = 0, kArray = 1, kPhilox = 2 };

__device__ __forceinline__ StepCoefs coefs_for(const DevStep& d, int64_t b) {
  int64_t t = d.t ? d.t[b] : d.t_scalar;
  t = t < 0 ? 0 : (t >= d.T ? d.T - 1 : t);
  int64_t tp = d.t_prev ? d.t_prev[b] : d.t_prev_scalar;
  tp = tp >= d.T ? d.T - 1 : tp;
  return step_coefs(d.op, d.abar, t, tp, d.eta);
}

template <int Noise>
__global__ void step_scalar(DevStep d, const float* a, const float* b, const float* c, float* out,
                            int64_t n, int64_t total) {
  int64_t cached = -1;
  StepCoefs k{0.f, 0.f, 0.f};
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / n;
    if (s != cached) { k = coefs_for(d, s); cached = s; }
    float v = k.ca * a[i] + k.cb * b[i];
    if (Noise == kArray) v += k.cc * c[i];
    if (Noise == kPhilox && k.cc != 0.f) {
      float z[4];
      philox_normal4((uint64_t)(i >> 2), d.seed, d.offset, z[0], z[1], z[2], z[3]);
      v += k.cc * z[i & 3];
    }
    out[i] = v;
  }
}

template <int Noise>
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
    if (Noise == kArray) {
      const float4 z = c[i];
      r.x += k.cc * z.x; r.y += k.cc * z.y; r.z += k.cc * z.z; r.w += k.cc * z.w;
    }
    if (Noise == kPhilox && k.cc != 0.f) {  // float4 i holds flat elements 4i .. 4i+3: Philox block i
      float z[4];
      philox_normal4((uint64_t)i, d.seed, d.offset, z[0], z[1], z[2], z[3]);
      r.x += k.cc * z[0]; r.y += k.cc * z[1]; r.z += k.cc * z[2]; r.w += k.cc * z[3];
    }
    out[i] = r;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

__global__ void philox_fill_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < blocks; q += (int64_t)gridDim.x * blockDim.x) {
    float z[4];
    philox_normal4((uint64_t)q, seed, offset, z[0], z[1], z[2], z[3]);
    for (int l = 0; l < 4; ++l)
      if (4 * q + l < n) out[4 * q + l] = z[l];
  }
}

template <typename Launch>
void by_noise(int noise, Launch&& launch) {
  if (noise == kPhilox) launch(std::integral_constant<int, kPhilox>{});
  else if (noise == kArray) launch(std::integral_constant<int, kArray>{});
  else launch(std::integral_constant<int, kNone>{});
}

}  // namespace

void schedule_step_cuda(const StepArgs& s, uintptr_t stream) {
  const int64_t total = s.batch * s.inner;
  if (total == 0) return;
  auto st = reinterpret_cast<cudaStream_t>(stream);
  DevStep d{s.op, s.T, s.abar, s.t, s.t_scalar, s.t_prev, s.t_prev_scalar, s.eta, s.seed, s.offset};
  const int noise = s.philox ? kPhilox : (s.c ? kArray : kNone);
  const bool vec = s.inner % 4 == 0 && aligned16(s.a) && aligned16(s.b) && aligned16(s.out) &&
                   (s.c == nullptr || aligned16(s.c));
  if (vec) {
    const int64_t n4 = s.inner / 4, total4 = total / 4;
    auto a = reinterpret_cast<const float4*>(s.a);
    auto b = reinterpret_cast<const float4*>(s.b);
    auto c = reinterpret_cast<const float4*>(s.c);
    auto o = reinterpret_cast<float4*>(s.out);
    by_noise(noise, [&](auto kind) {
      step_vec4<decltype(kind)::value><<<grid_for(total4, kBlock), kBlock, 0, st>>>(d, a, b, c, o, n4, total4);
    });
  } else {
    by_noise(noise, [&](auto kind) {
      step_scalar<decltype(kind)::value><<<grid_for(total, kBlock), kBlock, 0, st>>>(d, s.a, s.b, s.c, s.out,
                                                                                    s.inner, total);
    });
  }
  check_launch("schedule_step");
}

void philox_normal_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream) {
  if (n <= 0) return;
  philox_fill_kernel<<<grid_for((n + 3) / 4, kBlock), kBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      out, n, seed, offset);
  check_launch("philox_normal");
}

}  // namespace ddmini
