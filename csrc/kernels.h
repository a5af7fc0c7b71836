// Declarations of every kernel in ddmini._C. <op>_cpu lives in <op>_cpu.cpp, <op>_cuda in <op>_cuda.cu.
#pragma once
#include <cstdint>

namespace ddmini {

void axpy_cpu(float a, const float* x, float* y, int64_t n, int num_threads);
#ifdef DDMINI_WITH_CUDA
void axpy_cuda(float a, const float* x, float* y, int64_t n, uintptr_t stream);
#endif

}  // namespace ddmini
