// y <- a*x + y on the GPU (grid-stride loop).
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "kernels.h"

namespace ddmini {
namespace {
__global__ void axpy_kernel(float a, const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = a * x[i] + y[i];
}
}  // namespace

void axpy_cuda(float a, const float* x, float* y, int64_t n, uintptr_t stream) {
  if (n == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  axpy_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(a, x, y, n);
  check_launch("axpy");
}

}  // namespace ddmini
