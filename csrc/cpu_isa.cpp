// Which CPU variant of the hot loops runs (common.h): the widest this CPU supports, or one forced
// narrower by set_cpu_isa for tests and benchmarks.
#include <atomic>
#include <string>

#include "common.h"

namespace ddmini {

namespace {

int best_isa() {
#if DDMINI_ISA_VARIANTS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    return kIsaAVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kIsaAVX2;
#endif
  return kIsaBaseline;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{best_isa()};
  return isa;
}

}  // namespace

const char* cpu_isa_name(int isa) {
  switch (isa) {
    case kIsaAVX512:
      return "avx512";
    case kIsaAVX2:
      return "avx2";
    case kIsaBaseline:
      return "baseline";
    default:
      return "unknown";
  }
}

bool cpu_isa_supported(int isa) { return isa >= kIsaBaseline && isa <= best_isa(); }

int cpu_isa_active() { return active().load(std::memory_order_relaxed); }

void set_cpu_isa(int isa) {
  DDMINI_CHECK_ARG(cpu_isa_supported(isa), std::string("CPU kernel variant '") + cpu_isa_name(isa) +
                                               "' is not supported on this CPU (best: " +
                                               cpu_isa_name(best_isa()) + ")");
  active().store(isa, std::memory_order_relaxed);
}

}  // namespace ddmini
