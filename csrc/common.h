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

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace ddmini
