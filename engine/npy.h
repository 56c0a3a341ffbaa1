// npy.h: NumPy .npy files, so tensors travel to and from NumPy / PyTorch.
//
// Reads format versions 1.0, 2.0 and 3.0, little-endian, C order (Fortran order is rejected),
// dtypes <f4, <f8, <i8, <i4, |u1 and |b1; float64 becomes float32 and int32 becomes int64.
// Writes version 1.0 (2.0 when the header needs it) in the tensor's own dtype, atomically
// (temporary file, then rename). Malformed files raise kd::Error naming the file and the fault.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace kd {

Tensor load_npy(const std::string& path);
void save_npy(const std::string& path, const Tensor& t);
// Parse from memory; `source` names the data in error messages.
Tensor parse_npy(const std::string& bytes, const std::string& source);
std::string serialize_npy(const Tensor& t);

}  // namespace kd
