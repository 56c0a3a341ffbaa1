#include "engine/version.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>

#include "kdlab_git.h"  // generated at build time: KDLAB_GIT_REV

namespace kd {

std::string version_string() { return KDLAB_VERSION; }
std::string git_revision() { return KDLAB_GIT_REV; }

std::string cpu_isa_available() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "scalar";
}

std::string build_backends() {
  std::string s = "scalar reference, OpenBLAS sgemm";
#ifdef KDLAB_HAVE_DNNL
  s += ", oneDNN";
#endif
  return s;
}

std::string blas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

std::string blas_core_warning() {
  if (const char* v = std::getenv("OPENBLAS_CORETYPE"); v && *v) return "";  // the user's choice
  return blas_core_warning_for(blas_core(), cpu_isa_available());
}

std::string blas_core_warning_for(const std::string& core_name, const std::string& isa) {
  if (isa != "avx2" && isa != "avx512") return "";
  std::string core = core_name;
  std::transform(core.begin(), core.end(), core.begin(), [](unsigned char c) { return (char)std::tolower(c); });
  // OpenBLAS's kernel sets older than Haswell: SSE only (or AVX without FMA for sandybridge).
  static constexpr std::array<const char*, 14> old_cores{"katmai",  "coppermine", "northwood", "prescott",
                                                         "banias",  "core2",      "penryn",    "dunnington",
                                                         "nehalem", "atom",       "sandybridge", "opteron",
                                                         "barcelona", "bobcat"};
  if (std::find(old_cores.begin(), old_cores.end(), core) == old_cores.end()) return "";
  const char* fix = isa == "avx512" ? "SkylakeX" : "Haswell";
  return fmt::format(
      "OpenBLAS chose its '{}' kernels, which use neither AVX2 nor AVX-512, on this CPU that has {} (its OpenBLAS "
      "does not know the CPU model and fell back to them). Matrix products outside oneDNN (attention, the cpu "
      "backend) run slower; set OPENBLAS_CORETYPE={} in the environment to use its {} kernels",
      core_name, isa, fix, isa == "avx512" ? "AVX-512" : "AVX2");
}

std::string version_report() {
  return fmt::format("kdlab {} (git {})\nbackends compiled in: {}\nCPU ISA available: {}\nOpenBLAS kernels: {}\n",
                     version_string(), git_revision(), build_backends(), cpu_isa_available(), blas_core());
}

}  // namespace kd
