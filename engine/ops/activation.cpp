// Activations over a dim: softmax, log_softmax, normalize.
//
// A reduction along one dim of a contiguous tensor sees it as (outer, D, inner): element
// (o, d, i) sits at (o * D + d) * inner + i. The kernels walk that layout directly, so any dim
// works without permuting. Both softmaxes subtract the row maximum before exp (stable for any
// logits), and accumulate sums in double. Over the last dim (inner = 1: class logits) the rows
// go through the SIMD row kernels of kernels/cpu_kernels.h, the loops here being their reference.
#include <cmath>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/ops.h"
#include "engine/parallel.h"

namespace kd {

namespace {

// x seen as (outer, D, inner) around `dim`
struct DimLayout {
  int64_t outer = 1, D = 1, inner = 1;
};

DimLayout dim_layout(const Shape& shape, int64_t dim) {
  DimLayout l;
  for (int64_t d = 0; d < (int64_t)shape.size(); ++d) {
    if (d < dim) l.outer *= shape[d];
    else if (d == dim) l.D = shape[d];
    else l.inner *= shape[d];
  }
  return l;
}

void check_f32(const Tensor& x, const char* op) {
  KD_CHECK(x.defined(), "{}: undefined input tensor", op);
  KD_CHECK(x.dtype() == DType::f32, "{} needs float32 input, got {}; convert with .to(kd::DType::f32)", op,
           dtype_name(x.dtype()));
}

// out = softmax(x) or log_softmax(x) along dim, for contiguous output of x's shape
Tensor softmax_kernel(const Tensor& x, int64_t dim, bool log_space) {
  Tensor xc = x.detach().contiguous();
  Tensor out = empty(x.shape());
  const DimLayout l = dim_layout(x.shape(), dim);
  const float* xp = xc.data<float>();
  float* op = out.data<float>();
  if (l.inner == 1 && l.D > 0) {  // softmax over the last dim: contiguous rows, the SIMD row kernels
    const kernels::CpuKernels& cpu = kernels::cpu();
    if (kernels::verbose())
      kernels::log_path(log_space ? "log_softmax" : "softmax", x.shape(),
                        fmt::format("{} rows of {}, {} row kernel", l.outer, l.D, cpu.name));
    parallel_for(l.outer, std::max<int64_t>(1, (int64_t(1) << 13) / l.D), [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        if (log_space) cpu.log_softmax_row(xp + o * l.D, op + o * l.D, l.D);
        else cpu.softmax_row(xp + o * l.D, op + o * l.D, l.D);
      }
    });
    return out;
  }
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.D * l.inner + i;  // element (o, 0, i); step l.inner along dim
      float mx = -INFINITY;
      for (int64_t d = 0; d < l.D; ++d) mx = std::max(mx, xp[base + d * l.inner]);
      if (std::isinf(mx) && mx < 0) mx = 0;  // a row of -inf: keep exp(-inf - 0) = 0 (then 0/0 as PyTorch)
      double s = 0;  // sum exp(x - max)
      for (int64_t d = 0; d < l.D; ++d) s += std::exp((double)xp[base + d * l.inner] - mx);
      if (log_space) {
        const double lse = std::log(s);  // log_softmax = x - max - log(sum exp(x - max))
        for (int64_t d = 0; d < l.D; ++d) op[base + d * l.inner] = (float)((double)xp[base + d * l.inner] - mx - lse);
      } else {
        for (int64_t d = 0; d < l.D; ++d)
          op[base + d * l.inner] = (float)(std::exp((double)xp[base + d * l.inner] - mx) / s);
      }
    }
  return out;
}

}  // namespace

// ------------------------------------------------------------------ softmax / log_softmax

static Tensor softmax_untraced(const Tensor& x, int64_t dim) {
  check_f32(x, "softmax");
  dim = wrap_dim(dim, x.dim());
  Tensor out = softmax_kernel(x, dim, /*log_space=*/false);
  return record(out, "softmax", {x}, {out}, [dim](const Node& n, const Tensor& g) {
    const Tensor& s = n.saved[0];
    // d softmax: dx = g * s - s * sum(g * s) along dim
    Tensor gs = mul(g, s);
    return std::vector<Tensor>{sub(gs, mul(s, sum(gs, {dim}, /*keepdim=*/true)))};
  });
}

Tensor softmax(const Tensor& x, int64_t dim) {
  Tensor out = softmax_untraced(x, dim);
  if (active_trace()) trace_op("softmax", {x}, {{"dim", {(double)wrap_dim(dim, x.dim())}}}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  check_f32(x, "log_softmax");
  dim = wrap_dim(dim, x.dim());
  Tensor out = softmax_kernel(x, dim, /*log_space=*/true);
  return record(out, "log_softmax", {x}, {out}, [dim](const Node& n, const Tensor& g) {
    const Tensor& out = n.saved[0];
    // d log_softmax: dx = g - softmax * sum(g) along dim, softmax = exp(out)
    return std::vector<Tensor>{sub(g, mul(exp(out), sum(g, {dim}, /*keepdim=*/true)))};
  });
}

// ------------------------------------------------------------------ normalize

namespace {

// n = ||x||_p along dim, kept as a size-1 dim: (..., 1, ...)
Tensor pnorm_kernel(const Tensor& x, int64_t dim, double p) {
  Tensor xc = x.detach().contiguous();
  Shape keep = x.shape();
  if (x.dim() > 0) keep[dim] = 1;
  Tensor n = empty(keep);
  const DimLayout l = dim_layout(x.shape(), dim);
  const float* xp = xc.data<float>();
  float* np_ = n.data<float>();
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.D * l.inner + i;
      double s = 0;
      for (int64_t d = 0; d < l.D; ++d) {
        const double a = std::fabs((double)xp[base + d * l.inner]);
        s += p == 2.0 ? a * a : (p == 1.0 ? a : std::pow(a, p));
      }
      np_[o * l.inner + i] = (float)(p == 2.0 ? std::sqrt(s) : (p == 1.0 ? s : std::pow(s, 1.0 / p)));
    }
  return n;
}

// d||x||_p / dx = sign(x) |x|^(p-1) / n^(p-1), set to 0 where n < eps (the clamp to eps is then
// active and the denominator is the constant eps) and where n == 0
Tensor pnorm_derivative(const Tensor& x, const Tensor& n, int64_t dim, double p, double eps) {
  Tensor xc = x.detach().contiguous();
  Tensor out = empty(x.shape());
  const DimLayout l = dim_layout(x.shape(), dim);
  const float* xp = xc.data<float>();
  const float* np_ = n.contiguous().data<float>();
  float* op = out.data<float>();
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.D * l.inner + i;
      const double nv = np_[o * l.inner + i];
      const bool active = nv >= eps && nv > 0;
      for (int64_t d = 0; d < l.D; ++d) {
        const double v = xp[base + d * l.inner];
        const double sign = (v > 0) - (v < 0);
        op[base + d * l.inner] = active ? (float)(sign * std::pow(std::fabs(v) / nv, p - 1.0)) : 0.f;
      }
    }
  return out;
}

}  // namespace

Tensor normalize(const Tensor& x, double p, int64_t dim, double eps) {
  check_f32(x, "normalize");
  KD_CHECK(p > 0 && std::isfinite(p), "normalize: p must be a positive finite number, got {}", p);
  KD_CHECK(eps >= 0, "normalize: eps must be >= 0, got {}", eps);
  dim = wrap_dim(dim, x.dim());
  Tensor n = pnorm_kernel(x, dim, p);  // (..., 1, ...)
  Tensor denom = empty(n.shape());     // d = max(n, eps)
  {
    const float* np_ = n.data<float>();
    float* dp = denom.data<float>();
    for (int64_t k = 0; k < n.numel(); ++k) dp[k] = std::max(np_[k], (float)eps);
  }
  Tensor out;
  {
    NoGradGuard no_grad;
    out = div(x.detach(), denom);  // y = x / d
  }
  return record(out, "normalize", {x}, {x, n, denom}, [dim, p, eps](const Node& nd, const Tensor& g) {
    const Tensor &x = nd.saved[0], &n = nd.saved[1], &d = nd.saved[2];
    // y = x / d, d = max(||x||_p, eps):
    // dx = g / d - sum(g * x) / d^2 * dd/dx, with dd/dx = d||x||_p/dx where the norm is >= eps, else 0
    Tensor dd_dx = pnorm_derivative(x, n, dim, p, eps);
    Tensor gx_sum = sum(mul(g, x), {dim}, /*keepdim=*/true);
    return std::vector<Tensor>{sub(div(g, d), mul(dd_dx, div(gx_sum, mul(d, d))))};
  });
}

}  // namespace kd
