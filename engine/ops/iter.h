// iter.h (internal): walking tensors of any layout.
//
// for_each_offset visits every index of `shape` in C order and hands the callback the linear
// output index and, for each of N operands, the element offset given that operand's strides.
// Broadcasting is a stride of 0. This one loop is what makes every elementwise kernel work on
// views, transposes and broadcasts without copying.
#pragma once
#include <array>
#include <vector>

#include "engine/parallel.h"
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

// Elementwise work seen as rows, for kernels that run along one contiguous row at a time
// (kernels/cpu_kernels.h). Dims of size 1 are dropped and neighbouring dims merged wherever every
// operand steps through them as through one dim (stride[d] == stride[d+1] * size[d+1]), so a
// contiguous tensor is one long row and (B, C, H, W) + (1, C, 1, 1) is B*C rows of H*W where the
// second operand is one value per row. The innermost merged dim is the row; row_stride says how
// each operand walks it: 1 contiguous, 0 broadcast (one value for the row), else strided.
template <size_t N>
struct RowPlan {
  Shape outer;                         // sizes of the outer (merged) dims, rows in C order
  std::array<Shape, N> outer_strides;  // per operand, per outer dim
  int64_t row = 1;                     // length of each row
  std::array<int64_t, N> row_stride{};

  int64_t rows() const { return shape_numel(outer); }
  // Element offsets of the first element of row r, per operand.
  std::array<int64_t, N> offsets(int64_t r) const {
    std::array<int64_t, N> off{};
    for (int64_t d = (int64_t)outer.size() - 1; d >= 0; --d) {
      const int64_t i = r % outer[d];
      r /= outer[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * outer_strides[k][d];
    }
    return off;
  }
};

template <size_t N>
RowPlan<N> plan_rows(const Shape& shape, const std::array<Shape, N>& strides) {
  // merged dims, innermost first: (size, stride per operand)
  std::vector<std::pair<int64_t, std::array<int64_t, N>>> dims;
  for (int64_t d = (int64_t)shape.size() - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    std::array<int64_t, N> st{};
    for (size_t k = 0; k < N; ++k) st[k] = strides[k][d];
    bool merge = !dims.empty();
    for (size_t k = 0; merge && k < N; ++k) merge = st[k] == dims.back().second[k] * dims.back().first;
    if (merge) dims.back().first *= shape[d];
    else dims.push_back({shape[d], st});
  }
  RowPlan<N> p;
  if (dims.empty()) {  // a single element: one row of 1
    p.row_stride.fill(1);
    return p;
  }
  p.row = dims[0].first;
  p.row_stride = dims[0].second;
  for (size_t i = dims.size() - 1; i >= 1; --i) {
    p.outer.push_back(dims[i].first);
    for (size_t k = 0; k < N; ++k) p.outer_strides[k].push_back(dims[i].second[k]);
  }
  return p;
}

// Calls fn(out_offset, in_offsets, n) for every row of the plan, or for pieces of it: the rows
// are split over threads when there are at least `grain` elements per thread, and one long row
// is split into pieces. out_offset is the element offset in a contiguous output of the plan's
// shape; in_offsets are each operand's element offsets of the piece's first element.
template <size_t N, typename F>
void run_rows(const RowPlan<N>& p, int64_t grain, F&& fn) {
  const int64_t rows = p.rows(), row = p.row;
  if (rows == 1) {
    parallel_for(row, grain, [&](int64_t lo, int64_t hi) {
      std::array<int64_t, N> off{};
      for (size_t k = 0; k < N; ++k) off[k] = lo * p.row_stride[k];
      fn(lo, off, hi - lo);
    });
    return;
  }
  parallel_for(rows, std::max<int64_t>(1, grain / std::max<int64_t>(row, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(r * row, p.offsets(r), row);
  });
}

// Elements per thread below which an elementwise op stays on one thread (128 KiB of floats).
constexpr int64_t kElementwiseGrain = int64_t(1) << 15;

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
