// version.h: what this build of kdlab is, for `kdlab --version` and run records.
#pragma once
#include <string>

namespace kd {

std::string version_string();     // "0.1.0"
std::string git_revision();       // short hash at configure time, or "unknown"
std::string cpu_isa_available();  // best ISA this CPU supports: "avx512", "avx2" or "scalar"
std::string build_backends();     // e.g. "scalar, openblas, onednn"
std::string blas_core();          // the kernel set OpenBLAS chose at load time, e.g. "SkylakeX", "Haswell"
// Non-empty when OpenBLAS fell back to its pre-AVX2 kernels on a CPU with AVX2 or AVX-512 (an
// OpenBLAS older than the CPU model, e.g. 0.3.21 on family 6 model 207 picks "Prescott"): the
// message names the fix (OPENBLAS_CORETYPE). Empty when OPENBLAS_CORETYPE is set by the user.
std::string blas_core_warning();
// The rule itself, for any core name and ISA ("scalar", "avx2", "avx512"); tested on its own.
std::string blas_core_warning_for(const std::string& core, const std::string& isa);
std::string version_report();     // all of the above, several lines

}  // namespace kd
