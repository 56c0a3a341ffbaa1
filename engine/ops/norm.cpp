// Normalisation layers and dropout: batch_norm, layer_norm, dropout.
//
// batch_norm and layer_norm share one idea. The forward standardises x with a mean and a
// biased variance taken over some dims, xhat = (x - mean) / sqrt(var + eps), then applies the
// optional affine y = xhat * weight + bias. With statistics taken from x itself over N elements,
// the backward of the standardisation is the classic
//     dxhat = g * weight
//     dx    = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      (means over the same N)
//     dweight = sum(g * xhat), dbias = sum(g)                                   (over the other dims)
// layer_norm's kernels are scalar loops over a contiguous copy of x, statistics accumulated in
// double, and its backward is written with other ops; batch_norm, the hot one in CNN training,
// has fused kernels for both directions (below), checked against the same formulas.
#include <cmath>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/backend/onednn.h"
#include "engine/generator.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/ops.h"
#include "engine/parallel.h"

namespace kd {

namespace {

void check_param(const Tensor& p, const Shape& want, const char* op, const char* what) {
  if (!p.defined()) return;
  KD_CHECK(p.dtype() == DType::f32, "{}: {} must be float32, got {}", op, what, dtype_name(p.dtype()));
  KD_CHECK(p.shape() == want, "{}: {} has shape {} but the input needs {}", op, what, shape_str(p.shape()),
           shape_str(want));
}

}  // namespace

// ------------------------------------------------------------------ batch_norm, the CPU path
//
// x is seen as (B, C, S): B*C planes of S contiguous values, channel c = plane % C. Per-channel
// sums come from the row kernels of kernels/cpu_kernels.h (SIMD, sums in double), one channel per
// thread; the normalisation is one fused pass per plane,
//     y = x * scale + shift,   scale = invstd * weight,   shift = bias - mean * scale
// (PyTorch's formulation). The backward saves x itself (not xhat: no extra tensor) with the
// mean and invstd, and is one pass of channel sums plus one fused pass per plane:
//     sum_g = sum(g),  sum_gxhat = invstd * sum(g * (x - mean))        per channel, over N = B*S
//     dx = k * (g - sum_g / N - xhat * sum_gxhat / N),   k = weight * invstd      (training)
//        = a*g + b*x + c  with  a = k,  b = -k * invstd * sum_gxhat / N,  c = -k * sum_g / N - b * mean
//     dx = k * g                                                                   (eval)
//     dweight = sum_gxhat,  dbias = sum_g

namespace {

// Per-plane grain: how many (b, c) planes a thread takes at least, for planes of S values.
int64_t plane_grain(int64_t S) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(S, 1)); }

// Per-channel sum(g) and sum(g * (x - mean)) over the B planes of each channel.
void channel_grad_sums(const float* g, const float* x, const float* mean, int64_t B, int64_t C, int64_t S,
                       std::vector<double>& sum_g, std::vector<double>& sum_gx) {
  const kernels::CpuKernels& cpu = kernels::cpu();
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0, sx = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t off = (b * C + c) * S;
        s += cpu.sum(g + off, S);
        sx += cpu.dot_centered(g + off, x + off, mean[c], S);
      }
      sum_g[c] = s;
      sum_gx[c] = sx;
    }
  });
}

Tensor batch_norm_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                      const Tensor& running_var, bool training, double momentum, double eps) {
  const int64_t B = x.size(0), C = x.size(1);
  const int64_t S = x.numel() / std::max<int64_t>(B * C, 1);  // spatial elements per (b, c)
  const int64_t N = B * S;                                    // elements per channel
  const kernels::CpuKernels& cpu = kernels::cpu();
  if (kernels::verbose())
    kernels::log_path("batch_norm", x.shape(), fmt::format("cpu, {} kernels, {} planes of {}{}", cpu.name, B * C, S,
                                                           training ? ", batch statistics" : ", running statistics"));
  Tensor xc = x.detach().contiguous();  // (B, C, S) in memory
  const float* xp = xc.data<float>();

  // the statistics that normalise: (C) each
  Tensor mean_t = empty({C}), invstd_t = empty({C});
  float* mp = mean_t.data<float>();
  float* ip = invstd_t.data<float>();
  if (training) {
    std::vector<double> mean_d(C), var_biased(C);
    parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b) s += cpu.sum(xp + (b * C + c) * S, S);
        const double m = s / (double)N;
        const float mf = (float)m;
        double ss = 0;  // two-pass variance: sum (x - mean)^2, taken about the float mean mf
        for (int64_t b = 0; b < B; ++b) ss += cpu.sum_sq_dev(xp + (b * C + c) * S, mf, S);
        // sum (x - mf)^2 = sum (x - m)^2 + N (m - mf)^2, as sum (x - m) = 0: remove the shift exactly
        var_biased[c] = std::max(0.0, ss / (double)N - (m - mf) * (m - mf));
        mean_d[c] = m;
        mp[c] = mf;
        ip[c] = (float)(1.0 / std::sqrt(var_biased[c] + eps));
      }
    });
    if (running_mean.defined()) {
      // r = (1 - momentum) r + momentum * stat, with the unbiased variance for running_var (as PyTorch)
      NoGradGuard no_grad;
      std::vector<float> rm = to_float_vector(running_mean), rv = to_float_vector(running_var);
      for (int64_t c = 0; c < C; ++c) {
        const double var_unbiased = var_biased[c] * (double)N / (double)(N - 1);
        rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mean_d[c]);
        rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var_unbiased);
      }
      Tensor rm_handle = running_mean, rv_handle = running_var;  // handles share the caller's storage
      rm_handle.copy_(from_vector(rm, {C}));
      rv_handle.copy_(from_vector(rv, {C}));
    }
  } else {
    std::vector<float> rm = to_float_vector(running_mean), rv = to_float_vector(running_var);
    for (int64_t c = 0; c < C; ++c) {
      mp[c] = rm[c];
      ip[c] = (float)(1.0 / std::sqrt((double)rv[c] + eps));
    }
  }

  // y = x * scale + shift per channel
  std::vector<float> w = weight.defined() ? to_float_vector(weight) : std::vector<float>(C, 1.f);
  std::vector<float> bb = bias.defined() ? to_float_vector(bias) : std::vector<float>(C, 0.f);
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = ip[c] * w[c];
    shift[c] = bb[c] - mp[c] * scale[c];
  }
  Tensor out = empty(x.shape());  // (B, C, ...)
  float* op = out.data<float>();
  parallel_for(B * C, plane_grain(S), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) cpu.scale_shift(xp + r * S, scale[r % C], shift[r % C], op + r * S, S);
  });

  return record(out, "batch_norm", {x, weight, bias}, {xc, mean_t, invstd_t, weight},
                [training, B, C, S](const Node& n, const Tensor& g_in) {
                  const Tensor &xs = n.saved[0], &mean = n.saved[1], &invstd = n.saved[2], &w = n.saved[3];
                  const bool need_x = n.inputs[0].requires_grad();
                  const bool need_w = n.inputs[1].defined() && n.inputs[1].requires_grad();
                  const bool need_b = n.inputs[2].defined() && n.inputs[2].requires_grad();
                  const kernels::CpuKernels& cpu = kernels::cpu();
                  Tensor g = g_in.contiguous();  // (B, C, S) in memory
                  const float* gp = g.data<float>();
                  const float* xp = xs.data<float>();
                  const float* mp = mean.data<float>();
                  const float* ip = invstd.data<float>();
                  const double N = (double)(B * S);
                  std::vector<float> wv = w.defined() ? to_float_vector(w) : std::vector<float>(C, 1.f);

                  std::vector<double> sum_g(C), sum_gx(C);  // sum(g), sum(g * (x - mean)) per channel
                  if (need_w || need_b || (need_x && training)) channel_grad_sums(gp, xp, mp, B, C, S, sum_g, sum_gx);
                  Tensor gx, gw, gb;
                  if (need_x) {
                    std::vector<float> a(C), bx(C), c0(C);  // dx = a*g + bx*x + c0 per channel
                    for (int64_t c = 0; c < C; ++c) {
                      const double k = (double)wv[c] * ip[c];
                      const double sum_gxhat = ip[c] * sum_gx[c];
                      const double b = training ? -k * ip[c] * sum_gxhat / N : 0.0;
                      a[c] = (float)k;
                      bx[c] = (float)b;
                      c0[c] = training ? (float)(-k * sum_g[c] / N - b * mp[c]) : 0.f;
                    }
                    gx = empty(xs.shape());
                    float* dp = gx.data<float>();
                    parallel_for(B * C, plane_grain(S), [&](int64_t r0, int64_t r1) {
                      for (int64_t r = r0; r < r1; ++r) {
                        const int64_t c = r % C;
                        cpu.affine2(gp + r * S, xp + r * S, a[c], bx[c], c0[c], dp + r * S, S);
                      }
                    });
                  }
                  if (need_w) {  // dweight = sum(g * xhat) per channel: (C)
                    gw = empty({C});
                    for (int64_t c = 0; c < C; ++c) gw.data<float>()[c] = (float)(ip[c] * sum_gx[c]);
                  }
                  if (need_b) {  // dbias = sum(g) per channel: (C)
                    gb = empty({C});
                    for (int64_t c = 0; c < C; ++c) gb.data<float>()[c] = (float)sum_g[c];
                  }
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

}  // namespace

// ------------------------------------------------------------------ batch_norm

static Tensor batch_norm_untraced(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
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
  // which implementation runs this shape: engine/backend/backend.h
  if (backend::choose_batch_norm_path(x.shape(), training) == backend::NormPath::onednn)
    return onednn::batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps);

  return batch_norm_cpu(x, weight, bias, running_mean, running_var, training, momentum, eps);
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  Tensor out = batch_norm_untraced(x, weight, bias, running_mean, running_var, training, momentum, eps);
  if (active_trace()) trace_op("batch_norm", {x, weight, bias, running_mean, running_var}, {{"training", {training ? 1.0 : 0.0}}, {"eps", {eps}}}, out);  // for exporters (engine/trace.h)
  return out;
}

// ------------------------------------------------------------------ layer_norm

static Tensor layer_norm_untraced(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
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
  // One row at a time, rows split over the threads; each step one row kernel (SIMD, cpu_kernels.h).
  const kernels::CpuKernels& cpu = kernels::cpu();
  parallel_for(M, plane_grain(R), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* row = xp + m * R;
      float* h = hp + m * R;
      float* o = op + m * R;
      const double mu = cpu.sum(row, R) / (double)R;                      // mean
      const double var = cpu.sum_sq_dev(row, (float)mu, R) / (double)R;  // biased variance
      const double inv = 1.0 / std::sqrt(var + eps);
      is[m] = (float)inv;
      cpu.add_scalar(row, -(float)mu, h, R);  // x - mean
      cpu.mul_scalar(h, (float)inv, h, R);    // xhat = (x - mean) / sqrt(var + eps)
      cpu.mul(h, w.data(), o, R);             // xhat * weight
      cpu.add(o, bb.data(), o, R);            // + bias
    }
  });

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

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  Tensor out = layer_norm_untraced(x, normalized_shape, weight, bias, eps);
  if (active_trace()) trace_op("layer_norm", {x, weight, bias}, {{"dims", {(double)normalized_shape.size()}}, {"eps", {eps}}}, out);  // for exporters (engine/trace.h)
  return out;
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
