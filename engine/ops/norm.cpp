// Normalisation layers and dropout: batch_norm, layer_norm, dropout.
//
// batch_norm and layer_norm share one idea. The forward standardises x with a mean and a
// biased variance taken over some dims, xhat = (x - mean) / sqrt(var + eps), then applies the
// optional affine y = xhat * weight + bias. With statistics taken from x itself over N elements,
// the backward of the standardisation is the classic
//     dxhat = g * weight
//     dx    = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      (means over the same N)
//     dweight = sum(g * xhat), dbias = sum(g)                                   (over the other dims)
// Forward kernels are scalar loops over a contiguous copy of x, statistics accumulated in double.
#include <cmath>

#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/ops.h"

namespace kd {

namespace {

void check_param(const Tensor& p, const Shape& want, const char* op, const char* what) {
  if (!p.defined()) return;
  KD_CHECK(p.dtype() == DType::f32, "{}: {} must be float32, got {}", op, what, dtype_name(p.dtype()));
  KD_CHECK(p.shape() == want, "{}: {} has shape {} but the input needs {}", op, what, shape_str(p.shape()),
           shape_str(want));
}

}  // namespace

// ------------------------------------------------------------------ batch_norm

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  KD_CHECK(x.defined() && x.dtype() == DType::f32, "batch_norm needs a float32 input");
  KD_CHECK(x.dim() >= 2, "batch_norm: input must be (B, C) or (B, C, ...), got shape {}", shape_str(x.shape()));
  const int64_t B = x.size(0), C = x.size(1);
  const int64_t S = x.numel() / std::max<int64_t>(B * C, 1);  // spatial elements per (b, c)
  const int64_t N = B * S;                                    // elements per channel
  check_param(weight, {C}, "batch_norm", "weight");
  check_param(bias, {C}, "batch_norm", "bias");
  check_param(running_mean, {C}, "batch_norm", "running_mean");
  check_param(running_var, {C}, "batch_norm", "running_var");
  KD_CHECK(running_mean.defined() == running_var.defined(),
           "batch_norm: give both running_mean and running_var, or neither");
  KD_CHECK(training || running_mean.defined(),
           "batch_norm in eval mode (training = false) needs running_mean and running_var");
  KD_CHECK(!training || N > 1,
           "batch_norm: training needs more than 1 value per channel, got input shape {}; use a larger batch "
           "or eval mode", shape_str(x.shape()));
  KD_CHECK(eps >= 0, "batch_norm: eps must be >= 0, got {}", eps);

  // statistics per channel: (C)
  std::vector<double> mu(C), invstd(C);
  Tensor xc = x.detach().contiguous();  // (B, C, S) in memory
  const float* xp = xc.data<float>();
  if (training) {
    std::vector<double> var_biased(C);
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < S; ++i) s += xp[(b * C + c) * S + i];
      const double m = s / (double)N;
      double ss = 0;  // two-pass variance: sum (x - mean)^2
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < S; ++i) {
          double d = xp[(b * C + c) * S + i] - m;
          ss += d * d;
        }
      mu[c] = m;
      var_biased[c] = ss / (double)N;
      invstd[c] = 1.0 / std::sqrt(var_biased[c] + eps);
    }
    if (running_mean.defined()) {
      // r = (1 - momentum) r + momentum * stat, with the unbiased variance for running_var (as PyTorch)
      NoGradGuard no_grad;
      std::vector<float> rm = to_float_vector(running_mean), rv = to_float_vector(running_var);
      for (int64_t c = 0; c < C; ++c) {
        const double var_unbiased = var_biased[c] * (double)N / (double)(N - 1);
        rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mu[c]);
        rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var_unbiased);
      }
      Tensor rm_handle = running_mean, rv_handle = running_var;  // handles share the caller's storage
      rm_handle.copy_(from_vector(rm, {C}));
      rv_handle.copy_(from_vector(rv, {C}));
    }
  } else {
    std::vector<float> rm = to_float_vector(running_mean), rv = to_float_vector(running_var);
    for (int64_t c = 0; c < C; ++c) {
      mu[c] = rm[c];
      invstd[c] = 1.0 / std::sqrt((double)rv[c] + eps);
    }
  }

  // y = xhat * weight + bias, xhat = (x - mean) * invstd
  std::vector<float> w = weight.defined() ? to_float_vector(weight) : std::vector<float>(C, 1.f);
  std::vector<float> bb = bias.defined() ? to_float_vector(bias) : std::vector<float>(C, 0.f);
  Tensor xhat = empty(x.shape());  // (B, C, ...)
  Tensor out = empty(x.shape());   // (B, C, ...)
  float* hp = xhat.data<float>();
  float* op = out.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t k = (b * C + c) * S + i;
        const float h = (float)((xp[k] - mu[c]) * invstd[c]);
        hp[k] = h;
        op[k] = h * w[c] + bb[c];
      }

  // invstd shaped (1, C, 1, ...) to broadcast against x
  Shape stat_shape(x.dim(), 1);
  stat_shape[1] = C;
  std::vector<float> invstd_f(invstd.begin(), invstd.end());
  Tensor invstd_t = from_vector(invstd_f, stat_shape);
  std::vector<int64_t> red_dims{0};  // every dim but the channel dim
  for (int64_t d = 2; d < x.dim(); ++d) red_dims.push_back(d);

  return record(out, "batch_norm", {x, weight, bias}, {xhat, invstd_t, weight},
                [training, red_dims, stat_shape](const Node& n, const Tensor& g) {
                  const Tensor &xhat = n.saved[0], &invstd = n.saved[1], &w = n.saved[2];
                  Tensor gx, gw, gb;
                  if (n.inputs[0].requires_grad()) {
                    Tensor dxhat = w.defined() ? mul(g, w.reshape(stat_shape)) : g;  // (B, C, ...)
                    if (training) {
                      // the batch statistics depend on x:
                      // dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means per channel
                      Tensor m1 = mean(dxhat, red_dims, true);
                      Tensor m2 = mean(mul(dxhat, xhat), red_dims, true);
                      gx = mul(invstd, sub(sub(dxhat, m1), mul(xhat, m2)));
                    } else {
                      gx = mul(dxhat, invstd);  // running statistics are constants: dx = dxhat * invstd
                    }
                  }
                  if (n.inputs[1].defined() && n.inputs[1].requires_grad()) gw = sum(mul(g, xhat), red_dims);  // (C)
                  if (n.inputs[2].defined() && n.inputs[2].requires_grad()) gb = sum(g, red_dims);            // (C)
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

// ------------------------------------------------------------------ layer_norm

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  KD_CHECK(x.defined() && x.dtype() == DType::f32, "layer_norm needs a float32 input");
  const int64_t k = (int64_t)normalized_shape.size();
  KD_CHECK(k >= 1, "layer_norm: normalized_shape is empty; give the trailing dims to normalise, e.g. {{C}}");
  bool match = x.dim() >= k;
  for (int64_t d = 0; match && d < k; ++d) match = x.shape()[x.dim() - k + d] == normalized_shape[d];
  KD_CHECK(match, "layer_norm: normalized_shape {} does not match the trailing dims of the input shape {}",
           shape_str(normalized_shape), shape_str(x.shape()));
  check_param(weight, normalized_shape, "layer_norm", "weight");
  check_param(bias, normalized_shape, "layer_norm", "bias");
  KD_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got {}", eps);

  const int64_t R = shape_numel(normalized_shape);  // elements normalised together
  const int64_t M = R ? x.numel() / R : 0;           // number of rows
  Tensor xc = x.detach().contiguous();                // (M, R) in memory
  const float* xp = xc.data<float>();
  std::vector<float> w = weight.defined() ? to_float_vector(weight) : std::vector<float>(R, 1.f);
  std::vector<float> bb = bias.defined() ? to_float_vector(bias) : std::vector<float>(R, 0.f);

  Shape stat_shape(x.shape().begin(), x.shape().end() - k);  // leading dims, then k ones
  stat_shape.insert(stat_shape.end(), k, 1);
  Tensor invstd_t = empty(stat_shape);  // (..., 1, ..., 1)
  Tensor xhat = empty(x.shape());
  Tensor out = empty(x.shape());
  float* is = invstd_t.data<float>();
  float* hp = xhat.data<float>();
  float* op = out.data<float>();
  for (int64_t m = 0; m < M; ++m) {
    const float* row = xp + m * R;
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += row[r];
    const double mu = s / (double)R;
    double ss = 0;
    for (int64_t r = 0; r < R; ++r) ss += (row[r] - mu) * (row[r] - mu);
    const double inv = 1.0 / std::sqrt(ss / (double)R + eps);  // biased variance
    is[m] = (float)inv;
    for (int64_t r = 0; r < R; ++r) {
      const float h = (float)((row[r] - mu) * inv);
      hp[m * R + r] = h;
      op[m * R + r] = h * w[r] + bb[r];
    }
  }

  std::vector<int64_t> norm_dims, lead_dims;  // the normalised (trailing) dims and the others
  for (int64_t d = 0; d < x.dim(); ++d) (d >= x.dim() - k ? norm_dims : lead_dims).push_back(d);

  return record(out, "layer_norm", {x, weight, bias}, {xhat, invstd_t, weight},
                [norm_dims, lead_dims](const Node& n, const Tensor& g) {
                  const Tensor &xhat = n.saved[0], &invstd = n.saved[1], &w = n.saved[2];
                  Tensor gx, gw, gb;
                  if (n.inputs[0].requires_grad()) {
                    Tensor dxhat = w.defined() ? mul(g, w) : g;  // (..., normalized_shape)
                    // dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means per row
                    Tensor m1 = mean(dxhat, norm_dims, true);
                    Tensor m2 = mean(mul(dxhat, xhat), norm_dims, true);
                    gx = mul(invstd, sub(sub(dxhat, m1), mul(xhat, m2)));
                  }
                  // dweight = sum over rows of g * xhat, dbias = sum over rows of g
                  auto over_rows = [&](const Tensor& t) {
                    return lead_dims.empty() ? t : sum(t, lead_dims);  // (normalized_shape)
                  };
                  if (n.inputs[1].defined() && n.inputs[1].requires_grad()) gw = over_rows(mul(g, xhat));
                  if (n.inputs[2].defined() && n.inputs[2].requires_grad()) gb = over_rows(g);
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

// ------------------------------------------------------------------ dropout

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  KD_CHECK(x.defined() && x.dtype() == DType::f32, "dropout needs a float32 input");
  KD_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;  // identity
  // mask[i] = 0 with probability p, else 1 / (1 - p); p == 1 drops everything
  const float scale = p < 1.0 ? (float)(1.0 / (1.0 - p)) : 0.f;
  Tensor mask = empty(x.shape());  // (same as x)
  float* mp = mask.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) mp[i] = gen.uniform_double() >= p ? scale : 0.f;
  Tensor out = empty(x.shape());
  {
    NoGradGuard no_grad;
    out.copy_(x);  // any layout -> contiguous
  }
  float* op = out.data<float>();
  for (int64_t i = 0; i < n; ++i) op[i] *= mp[i];
  return record(out, "dropout", {x}, {mask}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{mul(g, n.saved[0])};  // d(x * mask)/dx = mask
  });
}

}  // namespace kd
