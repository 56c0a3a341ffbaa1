// safetensors.h: reading and writing .safetensors files (Hugging Face's tensor format).
//
// The format (https://github.com/huggingface/safetensors):
//
//   [8 bytes]  N, the header length, unsigned 64-bit little-endian
//   [N bytes]  a JSON object, UTF-8, possibly padded at the end with spaces:
//                { "__metadata__": {"key": "value", ...},          (optional, strings only)
//                  "conv1.weight": {"dtype": "F32", "shape": [16, 3, 3, 3],
//                                   "data_offsets": [begin, end]}, ... }
//   [rest]     the data buffer; each tensor's bytes are buffer[begin, end), little-endian,
//              C order. The tensors' regions must tile the buffer exactly: no holes, no overlaps.
//
// Reading accepts F32, F16, BF16 and F64 (all become float32), I64, I32, I16 and I8 (all become
// int64), U8, and BOOL (becomes uint8 0 / 1). Writing stores kdlab's own dtypes (F32, I64, U8) of
// tensors of any layout. Every malformed file is rejected before any tensor is allocated, with a
// kd::Error naming the file and the fault.
#pragma once
#include <map>
#include <string>

#include "nn/module.h"

namespace kd::nn {

struct SafetensorsFile {
  NamedTensors tensors;                         // in the order of their data in the file
  std::map<std::string, std::string> metadata;  // the "__metadata__" entries (may be empty)
};

// The largest header accepted (the Python library's limit too).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

SafetensorsFile load_safetensors(const std::string& path);
// Parse a whole file held in memory; `source` names it in error messages.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source);

// Writes keys in the given order, data in the same order, the header padded with spaces to a
// multiple of 8 bytes (as the Python library does). The write is atomic: the bytes go to
// `path.tmp`, which is then renamed over `path`; on failure `path` is untouched and the
// temporary file removed.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// name -> tensor (an error if a name appears twice).
std::map<std::string, Tensor> to_map(const NamedTensors& tensors);


}  // namespace kd::nn
