// Launch helpers shared by the CUDA kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ddmini {

constexpr int kBlock = 256;

inline int grid_for(int64_t n, int block) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  int64_t want = (n + block - 1) / block;
  int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 80) * 8;  // grid-stride beyond this
  return static_cast<int>(want < cap ? (want > 0 ? want : 1) : cap);
}

inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("ddmini CUDA kernel '") + what +
                             "' failed to launch: " + cudaGetErrorString(err));
}

}  // namespace ddmini
