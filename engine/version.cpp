#include "engine/version.h"

#include <fmt/format.h>

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

std::string version_report() {
  return fmt::format("kdlab {} (git {})\nbackends compiled in: {}\nCPU ISA available: {}\n", version_string(),
                     git_revision(), build_backends(), cpu_isa_available());
}

}  // namespace kd
