// Launch helpers shared by the CUDA kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

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

// Blocks of `block` threads of `kernel` resident on one multiprocessor at once (its registers decide),
// cached per kernel and device.
inline int blocks_per_sm(const void* kernel, int block, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(kernel, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, block, 0) != cudaSuccess || n < 1) {
    cudaGetLastError();  // clear it; fall back to one block per multiprocessor
    n = 1;
  }
  cache[key] = n;
  return n;
}

// A grid of at most one full wave of `kernel`: every block resident at once. A larger grid runs in
// two waves, the second partly empty, which costs a streaming kernel a share of its bandwidth.
template <typename Kernel>
inline int wave_grid_for(Kernel kernel, int64_t n, int block) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 80) *
                      blocks_per_sm(reinterpret_cast<const void*>(kernel), block, device);
  const int64_t want = (n + block - 1) / block;
  return static_cast<int>(want < cap ? (want > 0 ? want : 1) : cap);
}

inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("ddmini CUDA kernel '") + what +
                             "' failed to launch: " + cudaGetErrorString(err));
}

}  // namespace ddmini
