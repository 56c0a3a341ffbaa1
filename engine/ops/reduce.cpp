// Reductions over dims with keepdim: sum, mean, var, logsumexp, norm, max/min, argmax/argmin.
//
// One layout trick serves them all: move the reduced dims to the end (permute), make the
// tensor contiguous, and every output element reduces one contiguous row of length R.
// Sums accumulate in double. sum and mean, the reductions of every backward pass, skip that
// copy when they can (reduce_kept_block) and add their rows with the SIMD row-sum kernel.
#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

namespace {

struct ReducePlan {
  std::vector<bool> reduced;  // per input dim
  Shape out_shape;            // with keepdim
  Shape out_shape_keep;       // reduced dims kept as 1 (for broadcasting back in backward)
  Tensor rows;                // contiguous (M, R): M outputs, R elements each
  int64_t R = 1;
};

// need_rows = false skips the permuted copy (sum and mean try reduce_kept_block first).
ReducePlan plan_reduce(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim, const char* op,
                       bool need_rows = true) {
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
  if (need_rows) {
    NoGradGuard no_grad;
    p.rows = a.detach().permute(perm).contiguous();
  }
  return p;
}

// The rows of a plan made with need_rows = false.
void materialize_rows(ReducePlan& p, const Tensor& a) {
  if (p.rows.defined()) return;
  Shape perm;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (!p.reduced[d]) perm.push_back(d);
  for (int64_t d = 0; d < a.dim(); ++d)
    if (p.reduced[d]) perm.push_back(d);
  NoGradGuard no_grad;
  p.rows = a.detach().permute(perm).contiguous();
}

// out[k] = scale * (sum of a over the reduced dims), without the permuted copy, when a is
// contiguous and its kept dims (of size > 1) are one block: a is then (A, K, R) with A and R
// the reduced dims before and after the block, e.g. a sum over {0, 2, 3} of (B, C, H, W).
// Rows of R go through the row-sum kernel (kernels/cpu_kernels.h), R = 1 sums columns; the
// kept index k is split over threads. Returns false (nothing written) for other layouts.
bool reduce_kept_block(const Tensor& a, const std::vector<bool>& reduced, double scale, float* out) {
  if (!a.is_contiguous()) return false;
  const Shape& shape = a.shape();
  const int64_t nd = a.dim();
  // the kept dims of size > 1, first to last, with no reduced dim of size > 1 between them
  int64_t first = -1, last = -1;
  for (int64_t d = 0; d < nd; ++d)
    if (!reduced[d] && shape[d] != 1) {
      if (first < 0) first = d;
      last = d;
    }
  for (int64_t d = first + 1; first >= 0 && d < last; ++d)
    if (reduced[d] && shape[d] != 1) return false;
  int64_t A = 1, K = 1, R = 1;  // a seen as (A, K, R)
  for (int64_t d = 0; d < nd; ++d) {
    if (first < 0 || d > last) R *= shape[d];
    else if (d < first) A *= shape[d];
    else K *= shape[d];
  }
  const float* x = a.data<float>();
  const kernels::CpuKernels& cpu = kernels::cpu();
  if (R > 1 || K == 1) {
    parallel_for(K, std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(A * R, 1)), [&](int64_t c0, int64_t c1) {
      for (int64_t k = c0; k < c1; ++k) {
        double s = 0;
        for (int64_t i = 0; i < A; ++i) s += cpu.sum(x + (i * K + k) * R, R);
        out[k] = (float)(s * scale);
      }
    });
  } else {  // R == 1: column sums of an (A, K) matrix
    parallel_for(K, std::max<int64_t>(16, detail::kElementwiseGrain / std::max<int64_t>(A, 1)), [&](int64_t c0, int64_t c1) {
      std::vector<double> acc(c1 - c0, 0.0);
      for (int64_t i = 0; i < A; ++i)
        for (int64_t k = c0; k < c1; ++k) acc[k - c0] += x[i * K + k];
      for (int64_t k = c0; k < c1; ++k) out[k] = (float)(acc[k - c0] * scale);
    });
  }
  return true;
}

// The reduced dims as a list (for reductions in backward passes).
std::vector<int64_t> reduced_dims(const ReducePlan& p) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < (int64_t)p.reduced.size(); ++d)
    if (p.reduced[d]) dims.push_back(d);
  return dims;
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

// out[i] = f(a[i], r[i]) where r has a's shape with the reduced dims kept as 1 (a per-row value
// such as the norm or the max), broadcast back over the row. Used by backward passes.
template <typename F>
Tensor map_with_row_value(const Tensor& a, const Tensor& r, F f) {
  Tensor out = empty(a.shape());
  float* o = out.data<float>();
  const float* x = a.data<float>();
  const float* v = r.data<float>();
  detail::for_each_offset<2>(a.shape(), {a.strides(), detail::broadcast_strides(r, a.shape())},
                             [&](int64_t i, const std::array<int64_t, 2>& off) { o[i] = f(x[off[0]], v[off[1]]); });
  return out;
}

// sum (scale 1) or mean (scale 1 / R) over the plan's dims: without a copy when the layout
// allows (reduce_kept_block), else over the permuted rows with the row-sum kernel.
Tensor sum_scaled(const Tensor& a, ReducePlan& p, double scale, const char* op) {
  Tensor out = empty(p.out_shape);
  const bool direct = reduce_kept_block(a, p.reduced, scale, out.data<float>());
  if (kernels::verbose())
    kernels::log_path(op, a.shape(), fmt::format("{} rows of {}, {} row sums", out.numel(), p.R,
                                                 direct ? "in place" : "permuted copy, then"));
  if (direct) return out;
  materialize_rows(p, a);
  const kernels::CpuKernels& cpu = kernels::cpu();
  float* o = out.data<float>();
  const float* x = p.rows.data<float>();
  const int64_t R = p.R;
  parallel_for(out.numel(), std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(R, 1)),
               [&](int64_t m0, int64_t m1) {
                 for (int64_t m = m0; m < m1; ++m) o[m] = (float)(cpu.sum(x + m * R, R) * scale);
               });
  return out;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "sum", /*need_rows=*/false);
  Tensor out = sum_scaled(a, p, 1.0, "sum");
  return record(out, "sum", {a}, {}, [in_shape = a.shape(), keep = p.out_shape_keep](const Node&, const Tensor& g) {
    // every input element contributed with weight 1: broadcast g back
    return std::vector<Tensor>{g.reshape(keep).expand(in_shape)};
  });
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "mean", /*need_rows=*/false);
  const int64_t R = p.R;
  Tensor out = sum_scaled(a, p, 1.0 / (double)R, "mean");
  return record(out, "mean", {a}, {}, [in_shape = a.shape(), keep = p.out_shape_keep, R](const Node&, const Tensor& g) {
    return std::vector<Tensor>{div(g.reshape(keep), (double)R).expand(in_shape)};
  });
}

Tensor var(const Tensor& a, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "var");
  const int64_t R = p.R;
  const double denom = (double)R - (unbiased ? 1.0 : 0.0);  // 0 gives nan/inf, as PyTorch
  // two passes per row: the mean, then the mean squared deviation
  Tensor row_mean = reduce_rows(p, [](const float* x, int64_t R) {
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += x[r];
    return (float)(s / (double)R);
  });
  const float* mu = row_mean.data<float>();
  Tensor out = empty(p.out_shape);
  {
    float* o = out.data<float>();
    const float* x = p.rows.data<float>();
    for (int64_t m = 0; m < out.numel(); ++m) {
      double s = 0;
      for (int64_t r = 0; r < R; ++r) {
        double d = (double)x[m * R + r] - mu[m];
        s += d * d;
      }
      o[m] = (float)(s / denom);
    }
  }
  Tensor mean_keep = row_mean.reshape(p.out_shape_keep);
  return record(out, "var", {a}, {a, mean_keep}, [keep = p.out_shape_keep, denom](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &mu = n.saved[1];
    // d var / d x_i = 2 (x_i - mean) / (N - correction)   (the mean's own dependence cancels)
    return std::vector<Tensor>{mul(g.reshape(keep), mul(sub(a, mu), 2.0 / denom))};
  });
}

Tensor logsumexp(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p = plan_reduce(a, dims, keepdim, "logsumexp");
  Tensor out = reduce_rows(p, [](const float* x, int64_t R) {
    // stable: m + log(sum exp(x - m)) with m the row max (an infinite max is replaced by 0, as
    // PyTorch, so a row of -inf gives -inf and a row containing +inf gives +inf)
    float m = -INFINITY;
    for (int64_t r = 0; r < R; ++r) m = std::max(m, x[r]);
    if (std::isinf(m)) m = 0.f;
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += std::exp((double)x[r] - m);
    return (float)(std::log(s) + m);
  });
  Tensor out_keep = out.reshape(p.out_shape_keep);
  return record(out, "logsumexp", {a}, {a, out_keep}, [keep = p.out_shape_keep](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &lse = n.saved[1];
    // d lse / d x_i = exp(x_i - lse) = softmax(x)_i
    return std::vector<Tensor>{mul(g.reshape(keep), exp(sub(a, lse)))};
  });
}

Tensor norm(const Tensor& a, double p, const std::vector<int64_t>& dims, bool keepdim) {
  KD_CHECK(p > 0, "norm: p must be positive (got {}); use p = 2 for the Euclidean norm", p);
  ReducePlan plan = plan_reduce(a, dims, keepdim, "norm");
  const bool inf = std::isinf(p);
  Tensor out = reduce_rows(plan, [p, inf](const float* x, int64_t R) {
    double s = 0;
    if (inf) {  // max |x|
      for (int64_t r = 0; r < R; ++r) s = std::max(s, (double)std::fabs(x[r]));
      return (float)s;
    }
    if (p == 2.0) {
      for (int64_t r = 0; r < R; ++r) s += (double)x[r] * x[r];
      return (float)std::sqrt(s);
    }
    for (int64_t r = 0; r < R; ++r) s += std::pow(std::fabs((double)x[r]), p);
    return (float)std::pow(s, 1.0 / p);
  });
  Tensor out_keep = out.reshape(plan.out_shape_keep);
  return record(out, "norm", {a}, {a, out_keep}, [keep = plan.out_shape_keep, rdims = reduced_dims(plan), p, inf](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &nrm = n.saved[1];
    Tensor d;  // d ||x||_p / d x_i
    if (inf) {
      // the gradient goes to the elements with |x_i| == max, split evenly among ties (as PyTorch)
      Tensor sign_at_max = map_with_row_value(a, nrm, [](float x, float m) {
        return std::fabs(x) == m ? (x > 0 ? 1.f : (x < 0 ? -1.f : 0.f)) : 0.f;
      });
      Tensor ties = sum(abs(sign_at_max), rdims, /*keepdim=*/true);  // (reduced dims kept as 1)
      d = div(sign_at_max, clamp(ties, 1.0, std::nullopt));
    } else {
      // sign(x_i) |x_i|^(p-1) / ||x||^(p-1); 0 where x_i = 0 or the norm is 0 (for p = 2: x / ||x||)
      d = map_with_row_value(a, nrm, [p](float x, float nv) {
        if (x == 0.f || nv == 0.f) return 0.f;
        double ax = std::fabs((double)x), sg = x > 0 ? 1.0 : -1.0;
        return (float)(sg * std::pow(ax / nv, p - 1.0));
      });
    }
    return std::vector<Tensor>{mul(g.reshape(keep), d)};
  });
}

// ------------------------------------------------------------------ max / min / argmax / argmin

namespace {

// Whether v replaces the current best: strictly better (so ties keep the first occurrence), and
// NaN wins over numbers (NaN propagates, as PyTorch).
template <bool IsMax>
bool beats(float v, float best) {
  if (std::isnan(best)) return false;
  if (std::isnan(v)) return true;
  return IsMax ? v > best : v < best;
}

// Best value and its index along one dim: (values f32, indices i64), both of the reduced shape.
template <bool IsMax>
ValuesIndices reduce_select(const Tensor& a, int64_t dim, bool keepdim, const char* op) {
  ReducePlan p = plan_reduce(a, {dim}, keepdim, op);
  KD_CHECK(p.R > 0, "{}: cannot reduce over dim {} of size 0 (shape {})", op, dim, shape_str(a.shape()));
  ValuesIndices r{empty(p.out_shape), empty(p.out_shape, DType::i64)};
  float* v = r.values.data<float>();
  int64_t* ix = r.indices.data<int64_t>();
  const float* x = p.rows.data<float>();
  const int64_t M = r.values.numel(), R = p.R;
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * R;
    int64_t best = 0;
    for (int64_t k = 1; k < R; ++k)
      if (beats<IsMax>(row[k], row[best])) best = k;
    v[m] = row[best];
    ix[m] = best;
  }
  return r;
}

template <bool IsMax>
ValuesIndices max_min_dim(const Tensor& a, int64_t dim, bool keepdim, const char* op) {
  ValuesIndices r = reduce_select<IsMax>(a, dim, keepdim, op);
  const int64_t d = wrap_dim(dim, a.dim());
  Shape keep = a.shape();
  if (a.dim() > 0) keep[d] = 1;
  Tensor idx_keep = r.indices.reshape(keep);
  r.values = record(r.values, op, {a}, {idx_keep}, [in_shape = a.shape(), keep, d](const Node& n, const Tensor& g) {
    // d max / d x_i = 1 at the selected index, 0 elsewhere: scatter g into zeros there
    const Tensor& idx = n.saved[0];
    if (in_shape.empty()) return std::vector<Tensor>{g.reshape(in_shape)};
    return std::vector<Tensor>{scatter(zeros(in_shape), d, idx, g.reshape(keep))};
  });
  return r;
}

template <bool IsMax>
Tensor max_min_all(const Tensor& a, const char* op) {
  KD_CHECK(a.numel() > 0, "{}() of an empty tensor (shape {}) is undefined; pass a non-empty tensor", op,
           shape_str(a.shape()));
  ReducePlan p = plan_reduce(a, {}, false, op);
  Tensor out = reduce_rows(p, [](const float* x, int64_t R) {
    float best = x[0];
    for (int64_t k = 1; k < R; ++k)
      if (beats<IsMax>(x[k], best)) best = x[k];
    return best;
  });
  return record(out, op, {a}, {a, out}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &best = n.saved[1];
    // the gradient is split evenly among all elements equal to the result (as PyTorch)
    Tensor is_best = map_with_row_value(a, best, [](float x, float b) {
      return (x == b || (std::isnan(x) && std::isnan(b))) ? 1.f : 0.f;
    });
    Tensor count = sum(is_best);  // () >= 1
    return std::vector<Tensor>{mul(is_best, div(g, count))};
  });
}

}  // namespace

ValuesIndices max(const Tensor& a, int64_t dim, bool keepdim) { return max_min_dim<true>(a, dim, keepdim, "max"); }
ValuesIndices min(const Tensor& a, int64_t dim, bool keepdim) { return max_min_dim<false>(a, dim, keepdim, "min"); }
Tensor max(const Tensor& a) { return max_min_all<true>(a, "max"); }
Tensor min(const Tensor& a) { return max_min_all<false>(a, "min"); }
// Indices only: not differentiable.
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) { return reduce_select<true>(a, dim, keepdim, "argmax").indices; }
Tensor argmin(const Tensor& a, int64_t dim, bool keepdim) { return reduce_select<false>(a, dim, keepdim, "argmin").indices; }

}  // namespace kd
