// Choosing the kernel table once (CPUID, KDLAB_ISA) and the KDLAB_VERBOSE path log.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_set>

#include "engine/kernels/cpu_kernels.h"

namespace kd::kernels {

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  }
  return false;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

Isa parse_isa(const std::string& name) {
  if (name == "scalar") return Isa::scalar;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw Error(fmt::format("unknown instruction set '{}' (KDLAB_ISA); use scalar, avx2 or avx512", name));
}

static Isa best_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::scalar;
}

static const CpuKernels& table_for(Isa isa) {
  KD_CHECK(isa_supported(isa),
           "this CPU does not support the {} instruction set (KDLAB_ISA); its best is {}. Use KDLAB_ISA=scalar{} or "
           "unset KDLAB_ISA",
           isa_name(isa), isa_name(best_isa()), isa_supported(Isa::avx2) ? " or avx2" : "");
  switch (isa) {
    case Isa::avx2: return avx2_kernels();
    case Isa::avx512: return avx512_kernels();
    default: return scalar_kernels();
  }
}

// The best table for this CPU, or the one KDLAB_ISA names.
static const CpuKernels& startup_table() {
  if (const char* v = std::getenv("KDLAB_ISA"); v && *v) return table_for(parse_isa(v));
  return table_for(best_isa());
}

static std::atomic<const CpuKernels*> g_table{nullptr};

const CpuKernels& cpu() {
  const CpuKernels* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    t = &startup_table();
    g_table.store(t, std::memory_order_release);
    if (verbose()) std::fprintf(stderr, "[kdlab] CPU kernels: %s\n", t->name);
  }
  return *t;
}

void set_isa(Isa isa) { g_table.store(&table_for(isa), std::memory_order_release); }

bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("KDLAB_VERBOSE");
    return v && std::string(v) != "0" && *v;
  }();
  return on;
}

void log_path(const char* op, const Shape& shape, const std::string& path) {
  if (!verbose()) return;
  const std::string line = fmt::format("[kdlab] {} {} -> {}", op, shape_str(shape), path);
  static std::mutex mutex;
  static std::unordered_set<std::string>* seen = new std::unordered_set<std::string>();  // never destroyed
  std::lock_guard<std::mutex> lock(mutex);
  if (seen->insert(line).second) std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace kd::kernels
