// Linear algebra: matmul (torch.matmul semantics), bmm, linear.
//
// One forward kernel serves them all: batched_mm multiplies the last two dims of
// a (..., n, k) and b (..., k, m) for every index of the broadcast batch dims, with one sgemm
// (kernels/gemm.h) per matrix. A transposed view is handed to BLAS with its transpose flag
// instead of being copied, so the products of the backward
//   C = A B   =>   dA = dC B^T ,   dB = A^T dC
// read their transposes for free.
#include <algorithm>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/backend/onednn.h"
#include "engine/kernels/gemm.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

namespace {

void check_f32(const Tensor& t, const char* op, const char* what) {
  KD_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
  KD_CHECK(t.dtype() == DType::f32, "{} needs float32 tensors, but {} is {}; convert with .to(kd::DType::f32)", op,
           what, dtype_name(t.dtype()));
}

// A matrix (the last two dims of a tensor) as BLAS reads it. BLAS takes a row-major matrix
// (element (i, j) at i * ld + j) or, with the transpose flag, a column-major one (at i + j * ld).
// Any other layout (an expanded or doubly strided view) is copied to contiguous first.
struct BlasOperand {
  Tensor t;      // the tensor whose data BLAS reads (the input, or a contiguous copy)
  bool trans;    // stored column-major
  int64_t ld;    // leading dimension
};

BlasOperand blas_operand(const Tensor& x) {
  const int64_t rows = x.size(-2), cols = x.size(-1);
  const int64_t rs = x.strides()[x.dim() - 2], cs = x.strides()[x.dim() - 1];
  // a dim of size 1 never steps, so its stride does not matter
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= std::max<int64_t>(1, cols)))
    return {x, false, rows == 1 ? std::max<int64_t>(1, cols) : rs};
  if ((rs == 1 || rows == 1) && (cols == 1 || cs >= std::max<int64_t>(1, rows)))
    return {x, true, cols == 1 ? std::max<int64_t>(1, rows) : cs};
  NoGradGuard no_grad;
  return {x.detach().contiguous(), false, std::max<int64_t>(1, cols)};
}

// Strides that walk the batch dims of t (all but its last two) over the broadcast batch shape.
Shape batch_strides(const Tensor& t, const Shape& batch) {
  const int64_t tb = t.dim() - 2, nb = (int64_t)batch.size();
  Shape st(nb, 0);
  for (int64_t d = 0; d < tb; ++d)
    if (t.shape()[d] != 1) st[nb - tb + d] = t.strides()[d];
  return st;
}

// out (..., n, m) = a (..., n, k) @ b (..., k, m), batch dims broadcast. No autograd.
Tensor batched_mm(const Tensor& a, const Tensor& b, const char* op) {
  const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  KD_CHECK(b.size(-2) == k,
           "{}: shapes {} and {} cannot be multiplied: the first has {} columns (its last dim) but the second has "
           "{} rows (its second-to-last dim)",
           op, shape_str(a.shape()), shape_str(b.shape()), k, b.size(-2));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(a_batch, b_batch);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: the batch dims of {} and {} do not broadcast: {}", op, shape_str(a.shape()),
                            shape_str(b.shape()), e.what()));
  }
  Shape out_shape = batch;
  out_shape.push_back(n);
  out_shape.push_back(m);
  Tensor out = empty(out_shape);  // (..., n, m)
  BlasOperand A = blas_operand(a), B = blas_operand(b);
  const float* pa = A.t.data<float>();
  const float* pb = B.t.data<float>();
  float* pc = out.data<float>();
  detail::for_each_offset<2>(batch, {batch_strides(A.t, batch), batch_strides(B.t, batch)},
                             [&](int64_t i, const std::array<int64_t, 2>& off) {
                               kernels::sgemm(A.trans, B.trans, n, m, k, 1.f, pa + off[0], A.ld, pb + off[1], B.ld,
                                              0.f, pc + i * n * m, std::max<int64_t>(1, m));
                             });
  return out;
}

// The differentiable product of two tensors with at least 2 dims each.
Tensor mm_nd(const Tensor& a, const Tensor& b, const char* op) {
  Tensor out = batched_mm(a, b, op);
  return record(out, op, {a, b}, {a, b}, [](const Node& node, const Tensor& g) {
    const Tensor &a = node.saved[0], &b = node.saved[1];
    // C = A B  =>  dA = dC B^T , dB = A^T dC ; sum_to folds the broadcast batch dims back
    Tensor ga = node.inputs[0].requires_grad() ? sum_to(mm_nd(g, b.transpose(-1, -2), "matmul"), a.shape()) : Tensor();
    Tensor gb = node.inputs[1].requires_grad() ? sum_to(mm_nd(a.transpose(-1, -2), g, "matmul"), b.shape()) : Tensor();
    return std::vector<Tensor>{ga, gb};
  });
}

}  // namespace

// ------------------------------------------------------------------ matmul

static Tensor matmul_untraced(const Tensor& a, const Tensor& b) {
  check_f32(a, "matmul", "the first operand");
  check_f32(b, "matmul", "the second operand");
  KD_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul needs tensors with at least 1 dim, got shapes {} and {}",
           shape_str(a.shape()), shape_str(b.shape()));
  const int64_t k_a = a.size(-1), k_b = b.dim() == 1 ? b.size(0) : b.size(-2);
  KD_CHECK(k_a == k_b,
           "matmul: shapes {} and {} cannot be multiplied: the first has {} columns (its last dim) but the second "
           "has {} rows ({})",
           shape_str(a.shape()), shape_str(b.shape()), k_a, k_b,
           b.dim() == 1 ? "its only dim" : "its second-to-last dim");
  // 1-D operands become matrices and lose that dim again afterwards, as in torch.matmul
  if (a.dim() == 1 && b.dim() == 1) return mm_nd(a.unsqueeze(0), b.unsqueeze(1), "matmul").reshape({});  // dot
  if (a.dim() == 1) return mm_nd(a.unsqueeze(0), b, "matmul").squeeze(-2);  // (k) @ (..., k, m) -> (..., m)
  if (b.dim() == 1) return mm_nd(a, b.unsqueeze(1), "matmul").squeeze(-1);  // (..., n, k) @ (k) -> (..., n)
  if (a.dim() >= 3 && b.dim() == 2) {
    // (..., n, k) @ (k, m): fold the batch into the rows, one large product instead of many small ones
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    const int64_t rows = shape_numel(out_shape);
    out_shape.push_back(b.size(1));
    return mm_nd(a.reshape({rows, k_a}), b, "matmul").reshape(out_shape);
  }
  return mm_nd(a, b, "matmul");
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  Trace* trace = active_trace();
  Tensor out;
  {
    TracePause pause;  // the ops it is made of are not recorded: it is one op of the trace
    out = matmul_untraced(a, b);
  }
  if (trace) trace_op("matmul", {a, b}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_f32(a, "bmm", "the first operand");
  check_f32(b, "bmm", "the second operand");
  KD_CHECK(a.dim() == 3 && b.dim() == 3, "bmm needs two 3-D tensors (B, n, k) and (B, k, m), got shapes {} and {}; "
           "use matmul for broadcasting", shape_str(a.shape()), shape_str(b.shape()));
  KD_CHECK(a.size(0) == b.size(0), "bmm: batch sizes differ: {} vs {} (shapes {} and {}); bmm does not broadcast, "
           "use matmul", a.size(0), b.size(0), shape_str(a.shape()), shape_str(b.shape()));
  return mm_nd(a, b, "bmm");
}

// ------------------------------------------------------------------ linear

static Tensor linear_untraced(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_f32(x, "linear", "the input");
  check_f32(weight, "linear", "the weight");
  KD_CHECK(weight.dim() == 2, "linear: the weight must be 2-D (out_features, in_features), got shape {}",
           shape_str(weight.shape()));
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  KD_CHECK(x.dim() >= 1 && x.size(-1) == in_f,
           "linear: the input of shape {} does not end in in_features = {} of the weight of shape {}",
           shape_str(x.shape()), in_f, shape_str(weight.shape()));
  if (bias.defined()) {
    check_f32(bias, "linear", "the bias");
    KD_CHECK(bias.dim() == 1 && bias.size(0) == out_f,
             "linear: the bias must have shape ({}) for a weight of shape {}, got {}",
             out_f, shape_str(weight.shape()), shape_str(bias.shape()));
  }
  // which implementation runs this shape: engine/backend/backend.h
  if (x.numel() > 0 && weight.numel() > 0 && backend::choose_linear_path(x.shape(), weight.shape()) == backend::LinearPath::onednn)
    return onednn::linear(x, weight, bias);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  const int64_t N = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));  // rows: every leading index
  Tensor y = empty(out_shape);  // (..., out)
  {
    NoGradGuard no_grad;
    Tensor x2 = x.detach().reshape({N, in_f});  // (N, in)
    float* py = y.data<float>();
    if (bias.defined()) {  // every row of y starts as the bias, then y += x W^T
      Tensor b = bias.detach().contiguous();
      const float* pb = b.data<float>();
      for (int64_t r = 0; r < N; ++r) std::copy(pb, pb + out_f, py + r * out_f);
    }
    BlasOperand X = blas_operand(x2), Wt = blas_operand(weight.detach().t());  // (N, in), (in, out)
    kernels::sgemm(X.trans, Wt.trans, N, out_f, in_f, 1.f, X.t.data<float>(), X.ld, Wt.t.data<float>(), Wt.ld,
                   bias.defined() ? 1.f : 0.f, py, std::max<int64_t>(1, out_f));
  }
  return record(y, "linear", {x, weight, bias}, {x, weight}, [N, in_f, out_f](const Node& node, const Tensor& g) {
    const Tensor &x = node.saved[0], &w = node.saved[1];
    // y = x W^T + b  =>  dx = dy W , dW = dy^T x , db = sum of dy over all rows
    Tensor g2 = g.reshape({N, out_f});  // (N, out)
    Tensor gx = node.inputs[0].requires_grad() ? matmul(g2, w).reshape(x.shape()) : Tensor();
    Tensor gw = node.inputs[1].requires_grad() ? matmul(g2.t(), x.reshape({N, in_f})) : Tensor();
    Tensor gb = node.inputs[2].defined() && node.inputs[2].requires_grad() ? sum(g2, {0}) : Tensor();
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  Tensor out = linear_untraced(x, weight, bias);
  if (active_trace()) trace_op("linear", {x, weight, bias}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

}  // namespace kd
