// Elementwise ops: forward and backward side by side.
//
// The forward of every op here is one pass of detail::for_each_offset over the broadcast
// output shape (a scalar reference kernel; issue 4 adds SIMD paths for contiguous inputs).
// The backward is written with other ops and sum_to(), which undoes broadcasting.
#include <algorithm>
#include <cmath>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

using detail::broadcast_strides;
using detail::for_each_offset;

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KD_CHECK(da == db || da == 1 || db == 1,
             "shapes {} and {} cannot be broadcast together (dim {} is {} vs {}; sizes must match or be 1)",
             shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  // sum the leading dims that `shape` lacks, then the dims where shape has 1
  const int64_t lead = g.dim() - (int64_t)shape.size();
  KD_CHECK(lead >= 0, "sum_to: cannot reduce shape {} to {}", shape_str(g.shape()), shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < lead; ++d) dims.push_back(d);
  for (int64_t d = 0; d < (int64_t)shape.size(); ++d)
    if (shape[d] == 1 && g.shape()[lead + d] != 1) dims.push_back(lead + d);
  Tensor r = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  return r.reshape(shape);
}

static void check_f32(const Tensor& t, const char* op) {
  KD_CHECK(t.defined(), "{}: undefined input tensor", op);
  KD_CHECK(t.dtype() == DType::f32, "{} needs float32 input, got {}; convert with .to(kd::DType::f32)", op,
           dtype_name(t.dtype()));
}

// ------------------------------------------------------------------ the two elementwise drivers
//
// Both walk the output as rows (detail::plan_rows): a contiguous tensor is one row, a
// per-channel broadcast is one row per (b, c) plane with one value of the other operand. A row
// runs through the op's SIMD row kernel (kernels/cpu_kernels.h) when the op has one and the
// operands' layout fits it, else through the op's scalar lambda f, the reference. Big outputs
// are split over threads (detail::run_rows). elementwise_path() is the decision, in one place.

namespace {

// The row kernels of a unary op: out = k(x, s), e.g. relu or x * s. fn == nullptr: none.
struct UnaryKernel {
  void (*fn)(const float* x, float s, float* out, int64_t n) = nullptr;
  float s = 0.f;
};

// The row kernels of a binary op a (op) b: both operands rows (vv), b one value per row (vs),
// a one value per row (sv). A null member: no kernel for that layout.
struct BinaryKernels {
  void (*vv)(const float* a, const float* b, float* out, int64_t n) = nullptr;
  void (*vs)(const float* a, float b, float* out, int64_t n) = nullptr;
  void (*sv)(float a, const float* b, float* out, int64_t n) = nullptr;
};

enum class RowKernel { scalar, vv, vs, sv };

// Which row kernel runs, from the operands' row strides (1 contiguous, 0 broadcast): the SIMD
// kernel for that layout if the op has one, else the scalar loop (strided rows, ops without
// kernels, and rows where both operands are broadcast).
RowKernel elementwise_path(const BinaryKernels* k, int64_t stride_a, int64_t stride_b) {
  if (!k) return RowKernel::scalar;
  if (stride_a == 1 && stride_b == 1 && k->vv) return RowKernel::vv;
  if (stride_a == 1 && stride_b == 0 && k->vs) return RowKernel::vs;
  if (stride_a == 0 && stride_b == 1 && k->sv) return RowKernel::sv;
  return RowKernel::scalar;
}

const char* row_kernel_name(RowKernel k) {
  switch (k) {
    case RowKernel::vv: return "row + row";
    case RowKernel::vs: return "row + value";
    case RowKernel::sv: return "value + row";
    default: return "scalar loop";
  }
}

// Layouts. A result is contiguous, except when the operands are all channels-last: 4-D
// (B, C, H, W) tensors stored as (B, H, W, C), the activations of the oneDNN backend's inference
// convolutions (engine/backend/onednn.h). Then the op runs in memory order, on contiguous rows,
// and the result is channels-last too, as PyTorch does for channels_last tensors: a teacher's
// forward pass then never converts between layouts. dense_order(t) is {0, 2, 3, 1} for such a
// tensor (the order in which t's dims are laid out in memory) and empty for any other.
static Shape dense_order(const Tensor& t) {
  if (t.dim() != 4 || t.is_contiguous()) return {};
  const Shape order{0, 2, 3, 1};
  const Shape& st = t.strides();
  int64_t expected = 1;
  for (int64_t k = 3; k >= 0; --k) {
    const int64_t d = order[k];
    if (t.size(d) != 1 && st[d] != expected) return {};
    expected *= t.size(d);
  }
  return order;
}

static Shape inverse_order(const Shape& order) {
  Shape inv(order.size());
  for (size_t k = 0; k < order.size(); ++k) inv[order[k]] = (int64_t)k;
  return inv;
}

// out[i] = f(a[i]) for float32 a of any layout.
template <typename F>
static Tensor map_unary(const Tensor& a, const char* op, F f, UnaryKernel kernel = {}) {
  check_f32(a, op);
  if (const Shape order = dense_order(a); !order.empty())  // computed in memory order, same layout out
    return map_unary(a.detach().permute(order), op, f, kernel).permute(inverse_order(order));
  Tensor out = empty(a.shape());
  if (out.numel() == 0) return out;
  float* o = out.data<float>();
  const float* x = a.data<float>();
  const detail::RowPlan<1> plan = detail::plan_rows<1>(a.shape(), {a.strides()});
  const int64_t sx = plan.row_stride[0];
  const bool simd = kernel.fn && sx == 1;
  if (kernels::verbose())
    kernels::log_path(op, a.shape(), fmt::format("{} rows of {}, {}", plan.rows(), plan.row,
                                                 simd ? kernels::cpu().name : "scalar loop"));
  detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t oo, const std::array<int64_t, 1>& off, int64_t n) {
    const float* xr = x + off[0];
    float* orow = o + oo;
    if (simd) {
      kernel.fn(xr, kernel.s, orow, n);
    } else {
      for (int64_t j = 0; j < n; ++j) orow[j] = f(xr[j * sx]);
    }
  });
  return out;
}

// out[i] = f(a[i], b[i]) over the broadcast shape.
template <typename F>
static Tensor map_binary(const Tensor& a, const Tensor& b, const char* op, F f, const BinaryKernels* k = nullptr) {
  check_f32(a, op);
  check_f32(b, op);
  if (a.shape() == b.shape()) {  // both stored in the same non-standard dense order: keep it
    const Shape order = dense_order(a);
    if (!order.empty() && dense_order(b) == order)
      return map_binary(a.detach().permute(order), b.detach().permute(order), op, f, k).permute(inverse_order(order));
  }
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = empty(shape);
  if (out.numel() == 0) return out;
  float* o = out.data<float>();
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  const detail::RowPlan<2> plan = detail::plan_rows<2>(shape, {broadcast_strides(a, shape), broadcast_strides(b, shape)});
  const int64_t sa = plan.row_stride[0], sb = plan.row_stride[1];
  const RowKernel path = elementwise_path(k, sa, sb);
  if (kernels::verbose())
    kernels::log_path(op, shape, fmt::format("{} rows of {}, {} ({})", plan.rows(), plan.row, row_kernel_name(path),
                                             path == RowKernel::scalar ? "reference" : kernels::cpu().name));
  detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t oo, const std::array<int64_t, 2>& off, int64_t n) {
    const float* xr = x + off[0];
    const float* yr = y + off[1];
    float* orow = o + oo;
    switch (path) {
      case RowKernel::vv: k->vv(xr, yr, orow, n); break;
      case RowKernel::vs: k->vs(xr, *yr, orow, n); break;
      case RowKernel::sv: k->sv(*xr, yr, orow, n); break;
      case RowKernel::scalar:
        for (int64_t j = 0; j < n; ++j) orow[j] = f(xr[j * sa], yr[j * sb]);
        break;
    }
  });
  return out;
}

// The row kernels of the ops that have them. Each member calls the active table (kernels::cpu()).
const BinaryKernels kAddKernels{
    [](const float* a, const float* b, float* o, int64_t n) { kernels::cpu().add(a, b, o, n); },
    [](const float* a, float b, float* o, int64_t n) { kernels::cpu().add_scalar(a, b, o, n); },
    [](float a, const float* b, float* o, int64_t n) { kernels::cpu().add_scalar(b, a, o, n); }};
const BinaryKernels kSubKernels{
    [](const float* a, const float* b, float* o, int64_t n) { kernels::cpu().sub(a, b, o, n); },
    [](const float* a, float b, float* o, int64_t n) { kernels::cpu().add_scalar(a, -b, o, n); },  // a - b == a + (-b)
    [](float a, const float* b, float* o, int64_t n) { kernels::cpu().rsub_scalar(a, b, o, n); }};
const BinaryKernels kMulKernels{
    [](const float* a, const float* b, float* o, int64_t n) { kernels::cpu().mul(a, b, o, n); },
    [](const float* a, float b, float* o, int64_t n) { kernels::cpu().mul_scalar(a, b, o, n); },
    [](float a, const float* b, float* o, int64_t n) { kernels::cpu().mul_scalar(b, a, o, n); }};
const BinaryKernels kReluBackwardKernels{
    [](const float* y, const float* g, float* o, int64_t n) { kernels::cpu().relu_backward(y, g, o, n); }};

UnaryKernel add_scalar_kernel(float s) {
  return {[](const float* x, float c, float* o, int64_t n) { kernels::cpu().add_scalar(x, c, o, n); }, s};
}
UnaryKernel mul_scalar_kernel(float s) {
  return {[](const float* x, float c, float* o, int64_t n) { kernels::cpu().mul_scalar(x, c, o, n); }, s};
}
UnaryKernel rsub_scalar_kernel(float s) {
  return {[](const float* x, float c, float* o, int64_t n) { kernels::cpu().rsub_scalar(c, x, o, n); }, s};
}
const UnaryKernel kReluKernel{[](const float* x, float, float* o, int64_t n) { kernels::cpu().relu(x, o, n); }};
const UnaryKernel kGeluKernel{[](const float* x, float, float* o, int64_t n) { kernels::cpu().gelu(x, o, n); }};
const BinaryKernels kGeluBackwardKernels{
    [](const float* x, const float* g, float* o, int64_t n) { kernels::cpu().gelu_backward(x, g, o, n); }};

}  // namespace

// ------------------------------------------------------------------ binary arithmetic

static Tensor add_untraced(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "add", [](float x, float y) { return x + y; }, &kAddKernels);
  return record(out, "add", {a, b}, {}, [sa = a.shape(), sb = b.shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};  // d(a+b)/da = 1, /db = 1
  });
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = add_untraced(a, b);
  if (active_trace()) trace_op("add", {a, b}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "sub", [](float x, float y) { return x - y; }, &kSubKernels);
  return record(out, "sub", {a, b}, {}, [sa = a.shape(), sb = b.shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
  });
}

static Tensor mul_untraced(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "mul", [](float x, float y) { return x * y; }, &kMulKernels);
  return record(out, "mul", {a, b}, {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    return std::vector<Tensor>{sum_to(mul(g, b), a.shape()), sum_to(mul(g, a), b.shape())};  // d(ab) = b da + a db
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = mul_untraced(a, b);
  if (active_trace()) trace_op("mul", {a, b}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "div", [](float x, float y) { return x / y; });
  return record(out, "div", {a, b}, {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    // d(a/b)/da = 1/b ; d(a/b)/db = -a/b^2
    Tensor ga = n.inputs[0].requires_grad() ? sum_to(div(g, b), a.shape()) : Tensor();
    Tensor gb = n.inputs[1].requires_grad() ? sum_to(neg(div(mul(g, a), mul(b, b))), b.shape()) : Tensor();
    return std::vector<Tensor>{ga, gb};
  });
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "maximum", [](float x, float y) { return x >= y ? x : y; });
  return record(out, "maximum", {a, b}, {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    // the gradient goes to the larger input; ties split it half and half (as PyTorch)
    Tensor wa = map_binary(a, b, "maximum", [](float x, float y) { return x > y ? 1.f : (x == y ? 0.5f : 0.f); });
    return std::vector<Tensor>{sum_to(mul(g, wa), a.shape()), sum_to(mul(g, rsub(1.0, wa)), b.shape())};
  });
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "minimum", [](float x, float y) { return x <= y ? x : y; });
  return record(out, "minimum", {a, b}, {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    Tensor wa = map_binary(a, b, "minimum", [](float x, float y) { return x < y ? 1.f : (x == y ? 0.5f : 0.f); });
    return std::vector<Tensor>{sum_to(mul(g, wa), a.shape()), sum_to(mul(g, rsub(1.0, wa)), b.shape())};
  });
}

// ------------------------------------------------------------------ with a scalar

Tensor add(const Tensor& a, double s) {
  const float c = (float)s;
  Tensor out = map_unary(a, "add", [c](float x) { return x + c; }, add_scalar_kernel(c));
  return record(out, "add_scalar", {a}, {}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor sub(const Tensor& a, double s) { return add(a, -s); }

static Tensor mul_scalar_untraced(const Tensor& a, double s) {
  const float c = (float)s;
  Tensor out = map_unary(a, "mul", [c](float x) { return x * c; }, mul_scalar_kernel(c));
  return record(out, "mul_scalar", {a}, {}, [s](const Node&, const Tensor& g) { return std::vector<Tensor>{mul(g, s)}; });
}

Tensor mul(const Tensor& a, double s) {
  Tensor out = mul_scalar_untraced(a, s);
  if (active_trace()) trace_op("mul_scalar", {a}, {{"value", {s}}}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor div(const Tensor& a, double s) {
  const float c = (float)s;
  Tensor out = map_unary(a, "div", [c](float x) { return x / c; });
  return record(out, "div_scalar", {a}, {}, [s](const Node&, const Tensor& g) { return std::vector<Tensor>{div(g, s)}; });
}

Tensor rsub(double s, const Tensor& a) {
  const float c = (float)s;
  Tensor out = map_unary(a, "rsub", [c](float x) { return c - x; }, rsub_scalar_kernel(c));
  return record(out, "rsub", {a}, {}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
}

Tensor neg(const Tensor& a) {
  Tensor out = map_unary(a, "neg", [](float x) { return -x; }, mul_scalar_kernel(-1.f));  // -x == x * -1
  return record(out, "neg", {a}, {}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
}

// ------------------------------------------------------------------ unary math

Tensor pow(const Tensor& a, double e) {
  // x^2 and x^1 skip libm: float x*x rounds the exact square once, as (float)std::pow((double)x, 2)
  // does, so the values are bit-identical, and std::pow is ~20x slower (attention transfer's
  // energy maps and its backward x^1 spent a fifth of a distillation step in it).
  Tensor out = e == 2.0   ? map_unary(a, "pow", [](float x) { return x * x; })
               : e == 1.0 ? map_unary(a, "pow", [](float x) { return x; })
                          : map_unary(a, "pow", [e](float x) { return (float)std::pow((double)x, e); });
  return record(out, "pow", {a}, {a}, [e](const Node& n, const Tensor& g) {
    // d(x^e)/dx = e x^(e-1)
    return std::vector<Tensor>{mul(g, mul(pow(n.saved[0], e - 1.0), e))};
  });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = map_binary(a, b, "pow", [](float x, float y) { return (float)std::pow((double)x, (double)y); });
  return record(out, "pow", {a, b}, {a, b, out}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1], &out = n.saved[2];
    // d(a^b)/da = b a^(b-1) ; d(a^b)/db = a^b log a
    Tensor ga = n.inputs[0].requires_grad() ? sum_to(mul(g, mul(b, pow(a, sub(b, 1.0)))), a.shape()) : Tensor();
    Tensor gb = n.inputs[1].requires_grad() ? sum_to(mul(g, mul(out, log(a))), b.shape()) : Tensor();
    return std::vector<Tensor>{ga, gb};
  });
}

Tensor exp(const Tensor& a) {
  Tensor out = map_unary(a, "exp", [](float x) { return std::exp(x); });
  return record(out, "exp", {a}, {out}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{mul(g, n.saved[0])};  // d(e^x) = e^x
  });
}

Tensor log(const Tensor& a) {
  Tensor out = map_unary(a, "log", [](float x) { return std::log(x); });
  return record(out, "log", {a}, {a}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{div(g, n.saved[0])};  // d(log x) = 1/x
  });
}

Tensor sqrt(const Tensor& a) {
  Tensor out = map_unary(a, "sqrt", [](float x) { return std::sqrt(x); });
  return record(out, "sqrt", {a}, {out}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{div(g, mul(n.saved[0], 2.0))};  // d(sqrt x) = 1 / (2 sqrt x)
  });
}

Tensor rsqrt(const Tensor& a) {
  Tensor out = map_unary(a, "rsqrt", [](float x) { return 1.0f / std::sqrt(x); });
  return record(out, "rsqrt", {a}, {out}, [](const Node& n, const Tensor& g) {
    const Tensor& y = n.saved[0];  // d(x^-1/2) = -1/2 x^-3/2 = -y^3 / 2
    return std::vector<Tensor>{mul(g, mul(mul(y, mul(y, y)), -0.5))};
  });
}

Tensor abs(const Tensor& a) {
  Tensor out = map_unary(a, "abs", [](float x) { return std::fabs(x); });
  return record(out, "abs", {a}, {a}, [](const Node& n, const Tensor& g) {
    Tensor sign = map_unary(n.saved[0], "abs", [](float x) { return (float)((x > 0) - (x < 0)); });
    return std::vector<Tensor>{mul(g, sign)};
  });
}

Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi) {
  const float l = lo ? (float)*lo : -INFINITY, h = hi ? (float)*hi : INFINITY;
  KD_CHECK(!(lo && hi) || *lo <= *hi, "clamp: min {} is larger than max {}", *lo, *hi);
  Tensor out = map_unary(a, "clamp", [l, h](float x) { return x < l ? l : (x > h ? h : x); });
  return record(out, "clamp", {a}, {a}, [l, h](const Node& n, const Tensor& g) {
    // gradient passes where lo <= x <= hi (PyTorch includes the bounds)
    Tensor pass = map_unary(n.saved[0], "clamp", [l, h](float x) { return (x >= l && x <= h) ? 1.f : 0.f; });
    return std::vector<Tensor>{mul(g, pass)};
  });
}

static Tensor relu_untraced(const Tensor& a) {
  Tensor out = map_unary(a, "relu", [](float x) { return x > 0 ? x : 0.f; }, kReluKernel);
  return record(out, "relu", {a}, {out}, [](const Node& n, const Tensor& g) {
    // d relu: the gradient passes where the output y is positive, in one pass over y and g
    Tensor gx = map_binary(n.saved[0], g, "relu backward", [](float y, float gy) { return y > 0 ? gy : 0.f; },
                           &kReluBackwardKernels);
    return std::vector<Tensor>{gx};
  });
}

Tensor relu(const Tensor& a) {
  Tensor out = relu_untraced(a);
  if (active_trace()) trace_op("relu", {a}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

static Tensor relu6_untraced(const Tensor& a) {
  Tensor out = map_unary(a, "relu6", [](float x) { return x < 0 ? 0.f : (x > 6 ? 6.f : x); });
  return record(out, "relu6", {a}, {a}, [](const Node& n, const Tensor& g) {
    Tensor pass = map_unary(n.saved[0], "relu6", [](float x) { return (x > 0 && x < 6) ? 1.f : 0.f; });
    return std::vector<Tensor>{mul(g, pass)};
  });
}

Tensor relu6(const Tensor& a) {
  Tensor out = relu6_untraced(a);
  if (active_trace()) trace_op("relu6", {a}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor sigmoid(const Tensor& a) {
  Tensor out = map_unary(a, "sigmoid", [](float x) {
    // stable for large |x|
    return x >= 0 ? 1.f / (1.f + std::exp(-x)) : std::exp(x) / (1.f + std::exp(x));
  });
  return record(out, "sigmoid", {a}, {out}, [](const Node& n, const Tensor& g) {
    const Tensor& s = n.saved[0];  // d(sigma) = sigma (1 - sigma)
    return std::vector<Tensor>{mul(g, mul(s, rsub(1.0, s)))};
  });
}

Tensor tanh(const Tensor& a) {
  Tensor out = map_unary(a, "tanh", [](float x) { return std::tanh(x); });
  return record(out, "tanh", {a}, {out}, [](const Node& n, const Tensor& g) {
    const Tensor& t = n.saved[0];  // d(tanh) = 1 - tanh^2
    return std::vector<Tensor>{mul(g, rsub(1.0, mul(t, t)))};
  });
}

static Tensor gelu_untraced(const Tensor& a, bool tanh_approx) {
  constexpr double kAlpha = 0.7978845608028654;  // sqrt(2/pi)
  if (tanh_approx) {
    Tensor out = map_unary(a, "gelu", [](float xf) {
      double x = xf;
      return (float)(0.5 * x * (1.0 + std::tanh(kAlpha * (x + 0.044715 * x * x * x))));
    });
    return record(out, "gelu", {a}, {a}, [](const Node& n, const Tensor& g) {
      Tensor d = map_unary(n.saved[0], "gelu", [](float xf) {
        double x = xf, u = kAlpha * (x + 0.044715 * x * x * x), t = std::tanh(u);
        return (float)(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kAlpha * (1.0 + 3 * 0.044715 * x * x));
      });
      return std::vector<Tensor>{mul(g, d)};
    });
  }
  // The exact form x Phi(x), Phi the standard normal CDF (the row kernels: kernels/cpu_kernels.h).
  constexpr double kInvSqrt2 = 0.7071067811865476, kInvSqrt2Pi = 0.3989422804014327;
  auto cdf = [](double x) { return 0.5 * std::erfc(-x * kInvSqrt2); };
  Tensor out = map_unary(a, "gelu", [cdf](float x) { return (float)((double)x * cdf(x)); }, kGeluKernel);
  return record(out, "gelu", {a}, {a}, [cdf](const Node& n, const Tensor& g) {
    // d(x Phi(x))/dx = Phi(x) + x phi(x), times g in the same pass
    Tensor gx = map_binary(
        n.saved[0], g, "gelu backward",
        [cdf](float xf, float gf) {
          const double x = xf, pdf = std::exp(-0.5 * x * x) * kInvSqrt2Pi;
          return (float)((double)gf * (cdf(x) + x * pdf));
        },
        &kGeluBackwardKernels);
    return std::vector<Tensor>{gx};
  });
}

Tensor gelu(const Tensor& a, bool tanh_approx) {
  Tensor out = gelu_untraced(a, tanh_approx);
  if (active_trace()) trace_op("gelu", {a}, {{"tanh", {tanh_approx ? 1.0 : 0.0}}}, out);  // for exporters (engine/trace.h)
  return out;
}

// ------------------------------------------------------------------ selection

static void check_mask(const Tensor& m, const char* op) {
  KD_CHECK(m.defined() && m.dtype() == DType::u8,
           "{}: the condition/mask must be a uint8 tensor of 0/1 (as comparisons return), got {}", op,
           m.defined() ? std::string(dtype_name(m.dtype())) : "undefined");
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_mask(cond, "where");
  check_f32(a, "where");
  check_f32(b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  Tensor out = empty(shape);
  float* o = out.data<float>();
  const uint8_t* c = cond.data<uint8_t>();
  const float *x = a.data<float>(), *y = b.data<float>();
  for_each_offset<3>(shape, {broadcast_strides(cond, shape), broadcast_strides(a, shape), broadcast_strides(b, shape)},
                     [&](int64_t i, const std::array<int64_t, 3>& off) { o[i] = c[off[0]] ? x[off[1]] : y[off[2]]; });
  return record(out, "where", {a, b}, {cond}, [sa = a.shape(), sb = b.shape()](const Node& n, const Tensor& g) {
    Tensor zero = zeros({});
    const Tensor& c = n.saved[0];
    return std::vector<Tensor>{sum_to(where(c, g, zero), sa), sum_to(where(c, zero, g), sb)};
  });
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  check_mask(mask, "masked_fill");
  Shape bs = broadcast_shapes(a.shape(), mask.shape());
  KD_CHECK(bs == a.shape(), "masked_fill: mask of shape {} does not broadcast to the input shape {}",
           shape_str(mask.shape()), shape_str(a.shape()));
  // where(mask, value, a): the gradient flows to `a` where the mask is 0
  return where(mask, full({}, value), a);
}

// ------------------------------------------------------------------ comparisons (no gradient)

template <typename F>
static Tensor compare(const Tensor& a, const Tensor& b, F f) {
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = empty(shape, DType::u8);
  uint8_t* o = out.data<uint8_t>();
  const void *x = a.raw_data(), *y = b.raw_data();
  for_each_offset<2>(shape, {broadcast_strides(a, shape), broadcast_strides(b, shape)},
                     [&](int64_t i, const std::array<int64_t, 2>& off) {
                       o[i] = f(detail::load_as_double(a, x, off[0]), detail::load_as_double(b, y, off[1])) ? 1 : 0;
                     });
  return out;
}

Tensor eq(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x == y; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x != y; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x < y; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x <= y; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x > y; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(a, b, [](double x, double y) { return x >= y; }); }
Tensor eq(const Tensor& a, double s) { return eq(a, scalar_tensor(s, DType::f32)); }
Tensor lt(const Tensor& a, double s) { return lt(a, scalar_tensor(s, DType::f32)); }
Tensor gt(const Tensor& a, double s) { return gt(a, scalar_tensor(s, DType::f32)); }

}  // namespace kd
