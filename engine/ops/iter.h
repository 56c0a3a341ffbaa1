// iter.h (internal): walking tensors of any layout.
//
// for_each_offset visits every index of `shape` in C order and hands the callback the linear
// output index and, for each of N operands, the element offset given that operand's strides.
// Broadcasting is a stride of 0. This one loop is what makes every elementwise kernel work on
// views, transposes and broadcasts without copying.
#pragma once
#include <array>
#include <vector>

#include "engine/tensor.h"

namespace kd::detail {

template <size_t N, typename F>
void for_each_offset(const Shape& shape, const std::array<Shape, N>& strides, F&& fn) {
  const int64_t nd = (int64_t)shape.size();
  const int64_t total = shape_numel(shape);
  if (total == 0) return;
  const int64_t inner = nd ? shape[nd - 1] : 1;
  std::array<int64_t, N> inner_stride{};
  for (size_t k = 0; k < N; ++k) inner_stride[k] = nd ? strides[k][nd - 1] : 0;
  std::vector<int64_t> idx(nd, 0);
  std::array<int64_t, N> base{};
  std::array<int64_t, N> off{};
  for (int64_t i = 0; i < total; i += inner) {
    for (int64_t j = 0; j < inner; ++j) {
      for (size_t k = 0; k < N; ++k) off[k] = base[k] + j * inner_stride[k];
      fn(i + j, off);
    }
    // advance the outer index (all dims but the last), odometer style
    for (int64_t d = nd - 2; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) base[k] += strides[k][d];
      if (idx[d] < shape[d]) break;
      for (size_t k = 0; k < N; ++k) base[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

// Strides that make `t` broadcast to `shape` (0 where t has size 1 or lacks the dim).
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  const int64_t nd = (int64_t)shape.size(), td = t.dim();
  Shape st(nd, 0);
  for (int64_t d = 0; d < td; ++d) {
    int64_t od = nd - td + d;
    st[od] = (t.shape()[d] == 1 && shape[od] != 1) ? 0 : t.strides()[d];
  }
  return st;
}

// Read element at storage offset (relative to raw_data) of any dtype as double.
inline double load_as_double(const Tensor& t, const void* base, int64_t off) {
  switch (t.dtype()) {
    case DType::f32: return static_cast<const float*>(base)[off];
    case DType::i64: return (double)static_cast<const int64_t*>(base)[off];
    case DType::u8: return static_cast<const uint8_t*>(base)[off];
  }
  return 0;
}
inline void store_from_double(DType dt, void* base, int64_t off, double v) {
  switch (dt) {
    case DType::f32: static_cast<float*>(base)[off] = (float)v; break;
    case DType::i64: static_cast<int64_t*>(base)[off] = (int64_t)v; break;
    case DType::u8: static_cast<uint8_t*>(base)[off] = (uint8_t)v; break;
  }
}

}  // namespace kd::detail
