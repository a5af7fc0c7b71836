// Shared helpers for ddmini's kernels. User-facing argument errors throw std::invalid_argument,
// which pybind11 turns into Python's ValueError; broken internal invariants throw std::logic_error.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ddmini {

#define DDMINI_CHECK_ARG(cond, msg)                                   \
  do {                                                                \
    if (!(cond)) throw std::invalid_argument(std::string(msg));       \
  } while (0)

#ifdef DDMINI_WITH_OPENMP
constexpr bool kHasOpenMP = true;
#else
constexpr bool kHasOpenMP = false;
#endif

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time (GCC/Clang
// function multi-versioning), so one portable wheel is fast on every x86-64 machine.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DDMINI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DDMINI_CLONES
#endif

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace ddmini
