// fuzz_npy.cpp: libFuzzer target for the NumPy .npy reader (engine/npy.h).
//
// The input is a whole file, parsed from memory (load_npy reads the file and calls the same
// parse_npy). An accepted array is written back and read again: the round trip must succeed.
#include "engine/npy.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  kdfuzz::expect_kd_errors_only([&] {
    kd::Tensor t = kd::parse_npy(bytes, "fuzz.npy");
    kd::Tensor back = kd::parse_npy(kd::serialize_npy(t), "fuzz.npy (written back)");
    if (back.shape() != t.shape() || back.dtype() != t.dtype()) {
      std::fprintf(stderr, "fuzz_npy: the written-back array differs in shape or dtype\n");
      std::abort();
    }
  });
  return 0;
}
