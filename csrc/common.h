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

// CPU instruction-set variants. Hot loops are compiled three times (AVX-512, AVX2 + FMA, baseline
// x86-64) from one always-inline body, and every call goes through a switch on the active variant:
// the widest the CPU supports unless set_cpu_isa (Python: DDMINI_CPU_ISA, ddmini._ext.set_cpu_isa)
// forces a narrower one, so the tests and benchmarks can run every variant on one machine.
enum CpuIsa : int { kIsaBaseline = 0, kIsaAVX2 = 1, kIsaAVX512 = 2 };
const char* cpu_isa_name(int isa);
bool cpu_isa_supported(int isa);  // by this CPU and this build
int cpu_isa_active();
void set_cpu_isa(int isa);        // std::invalid_argument if not supported

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DDMINI_ISA_VARIANTS 1
#define DDMINI_ALWAYS_INLINE inline __attribute__((always_inline))
// Defines RET NAME PARAMS, dispatching to NAME##_impl ARGS compiled for each variant.
#define DDMINI_MULTIVERSION(RET, NAME, PARAMS, ARGS)                                                \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) RET NAME##_avx512 PARAMS { \
    return NAME##_impl ARGS;                                                                        \
  }                                                                                                 \
  __attribute__((target("avx2,fma"))) RET NAME##_avx2 PARAMS { return NAME##_impl ARGS; }           \
  RET NAME##_baseline PARAMS { return NAME##_impl ARGS; }                                           \
  RET NAME PARAMS {                                                                                 \
    switch (cpu_isa_active()) {                                                                     \
      case kIsaAVX512:                                                                              \
        return NAME##_avx512 ARGS;                                                                  \
      case kIsaAVX2:                                                                                \
        return NAME##_avx2 ARGS;                                                                    \
      default:                                                                                      \
        return NAME##_baseline ARGS;                                                                \
    }                                                                                               \
  }
#else
#define DDMINI_ISA_VARIANTS 0
#define DDMINI_ALWAYS_INLINE inline
#define DDMINI_MULTIVERSION(RET, NAME, PARAMS, ARGS) \
  RET NAME PARAMS { return NAME##_impl ARGS; }
#endif

// OpenMP is optional: without it the kernels run on one thread (the pragmas are ignored, or
// become simd hints under -fopenmp-simd).
#ifdef DDMINI_WITH_OPENMP
#include <omp.h>
inline int thread_num() { return omp_get_thread_num(); }
inline int num_threads_in_team() { return omp_get_num_threads(); }
#else
inline int thread_num() { return 0; }
inline int num_threads_in_team() { return 1; }
#endif

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

// The noise and the sampler steps (a few ns per element on one thread) stay on one thread below this many
// elements. A parallel region ends when its last thread does, and beside a busy multi-threaded process
// (torch matrix products on both cores of a 2-core machine) a woken team thread waited a scheduler tick or
// two for a core: 200,704 normals took 8.0 ms on two threads against 0.5 ms on one (bench/kernels.py --only
// load, Zen 3). One thread cannot be kept waiting; below 2^21 elements (about 5 ms on one thread) a second
// saves less than the wait it risks.
constexpr int64_t kStepParallelGrain = 1 << 21;

}  // namespace ddmini
