// fuzz_safetensors.cpp: libFuzzer target for the .safetensors reader (nn/safetensors.h).
//
// The input is a whole file. parse_safetensors reads it from memory; load_safetensors, which
// reads the same format from disk in pieces, shares its header checks (parse_header), so the
// two cannot disagree on what they accept.
#include "fuzz_util.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  kdfuzz::expect_kd_errors_only([&] {
    kd::nn::SafetensorsFile file = kd::nn::parse_safetensors(bytes, "fuzz.safetensors");
    // What was accepted must be usable: every tensor readable end to end, and written back.
    for (const auto& [name, t] : file.tensors) (void)t.contiguous();
    (void)kd::nn::serialize_safetensors(file.tensors, file.metadata);
  });
  return 0;
}
