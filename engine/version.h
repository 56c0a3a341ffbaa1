// version.h: what this build of kdlab is, for `kdlab --version` and run records.
#pragma once
#include <string>

namespace kd {

std::string version_string();     // "0.1.0"
std::string git_revision();       // short hash at configure time, or "unknown"
std::string cpu_isa_available();  // best ISA this CPU supports: "avx512", "avx2" or "scalar"
std::string build_backends();     // e.g. "scalar, openblas, onednn"
std::string version_report();     // all of the above, several lines

}  // namespace kd
