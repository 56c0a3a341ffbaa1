// dtype.h: the element types a Tensor can hold.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kd {

enum class DType : uint8_t {
  f32,  // the main type: activations, weights, gradients
  i64,  // labels and indices
  u8,   // images, and boolean masks (0 or 1) from comparisons
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

inline std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "?";
}

// C++ type -> DType, used by the typed data accessors.
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

}  // namespace kd
