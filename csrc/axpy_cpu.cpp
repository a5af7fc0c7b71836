// y <- a*x + y: the trivial kernel that proves the build path end to end.
#include "common.h"
#include "kernels.h"

namespace ddmini {

void axpy_cpu(float a, const float* x, float* y, int64_t n, int num_threads) {
#pragma omp parallel for simd num_threads(num_threads) schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}

}  // namespace ddmini
