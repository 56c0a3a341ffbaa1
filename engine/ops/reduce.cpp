// Reductions over dims with keepdim: sum, mean, var, logsumexp, norm, max/min, argmax/argmin.
//
// One layout trick serves them all: move the reduced dims to the end (permute), make the
// tensor contiguous, and every output element reduces one contiguous row of length R.
// Sums accumulate in double.
#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd {

namespace {

struct ReducePlan {
  std::vector<bool> reduced;  // per input dim
  Shape out_shape;            // with keepdim
  Shape out_shape_keep;       // reduced dims kept as 1 (for broadcasting back in backward)
  Tensor rows;                // contiguous (M, R): M outputs, R elements each
  int64_t R = 1;
};

ReducePlan plan_reduce(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  KD_CHECK(a.dtype() == DType::f32, "{} needs float32 input, got {}", op, dtype_name(a.dtype()));
  ReducePlan p;
  const int64_t nd = a.dim();
  p.reduced.assign(nd, dims.empty());
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, nd);
    if (nd == 0) continue;
    KD_CHECK(!p.reduced[w], "{}: dim {} is listed twice", op, d);
    p.reduced[w] = true;
  }
  Shape perm, kept_shape;
  for (int64_t d = 0; d < nd; ++d)
    if (!p.reduced[d]) { perm.push_back(d); kept_shape.push_back(a.shape()[d]); }
  for (int64_t d = 0; d < nd; ++d)
    if (p.reduced[d]) { perm.push_back(d); p.R *= a.shape()[d]; }
  for (int64_t d = 0; d < nd; ++d) {
    p.out_shape_keep.push_back(p.reduced[d] ? 1 : a.shape()[d]);
    if (!p.reduced[d] || keepdim) p.out_shape.push_back(p.reduced[d] ? 1 : a.shape()[d]);
  }
  NoGradGuard no_grad;
  p.rows = a.detach().permute(perm).contiguous();
  return p;
}

// out[m] = f(row m) for each of the M rows of length R
template <typename F>
Tensor reduce_rows(const ReducePlan& p, F f) {
  Tensor out = empty(p.out_shape);
  float* o = out.data<float>();
  const float* x = p.rows.data<float>();
  const int64_t M = out.numel();
  for (int64_t m = 0; m < M; ++m) o[m] = f(x + m * p.R, p.R);
  return out;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "sum");
  Tensor out = reduce_rows(p, [](const float* x, int64_t R) {
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += x[r];
    return (float)s;
  });
  return record(out, "sum", {a}, {}, [in_shape = a.shape(), keep = p.out_shape_keep](const Node&, const Tensor& g) {
    // every input element contributed with weight 1: broadcast g back
    return std::vector<Tensor>{g.reshape(keep).expand(in_shape)};
  });
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "mean");
  const int64_t R = p.R;
  Tensor out = reduce_rows(p, [](const float* x, int64_t R) {
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += x[r];
    return (float)(s / (double)R);
  });
  return record(out, "mean", {a}, {}, [in_shape = a.shape(), keep = p.out_shape_keep, R](const Node&, const Tensor& g) {
    return std::vector<Tensor>{div(g.reshape(keep), (double)R).expand(in_shape)};
  });
}

}  // namespace kd
