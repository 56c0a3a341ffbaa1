// The scalar reference table: one plain loop per kernel, sums in double. Every SIMD kernel is
// tested against these on the same inputs (tests/test_simd.cpp).
#include <cmath>

#include "engine/kernels/cpu_kernels.h"

namespace kd::kernels {

namespace {

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
void sub(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
}
void mul(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}
void add_scalar(const float* a, float s, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + s;
}
void mul_scalar(const float* a, float s, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * s;
}
void rsub_scalar(float s, const float* a, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = s - a[i];
}
void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
void relu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] > 0 ? x[i] : 0.f;
}
void relu_backward(const float* y, const float* g, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = y[i] > 0 ? g[i] : 0.f;
}

double sum(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}
double sum_sq_dev(const float* x, float mean, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = (double)x[i] - mean;
    s += d * d;
  }
  return s;
}
double dot_centered(const float* g, const float* x, float mean, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += (double)g[i] * ((double)x[i] - mean);
  return s;
}

void scale_shift(const float* x, float scale, float shift, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale + shift;
}
void affine2(const float* g, const float* x, float a, float b, float c, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a * g[i] + b * x[i] + c;
}

// softmax = exp(x - max) / sum exp(x - max); a row of -inf keeps max 0 (then 0/0, as PyTorch)
float row_max(const float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  return (std::isinf(mx) && mx < 0) ? 0.f : mx;
}
void softmax_row(const float* x, float* out, int64_t n) {
  const float mx = row_max(x, n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp((double)x[i] - mx);
  for (int64_t i = 0; i < n; ++i) out[i] = (float)(std::exp((double)x[i] - mx) / s);
}
// log_softmax = x - max - log(sum exp(x - max))
void log_softmax_row(const float* x, float* out, int64_t n) {
  const float mx = row_max(x, n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp((double)x[i] - mx);
  const double lse = std::log(s);
  for (int64_t i = 0; i < n; ++i) out[i] = (float)((double)x[i] - mx - lse);
}

// GELU in double with libm's erfc: Phi(x) = erfc(-x / sqrt 2) / 2 stays accurate in the far
// negative tail, where 1 + erf(x / sqrt 2) would cancel to 0.
double normal_cdf(double x) { return 0.5 * std::erfc(-x * 0.7071067811865476); }
void gelu(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = (float)((double)x[i] * normal_cdf(x[i]));
}
void gelu_backward(const float* x, const float* g, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], pdf = std::exp(-0.5 * v * v) * 0.3989422804014327;  // 1 / sqrt(2 pi)
    out[i] = (float)((double)g[i] * (normal_cdf(v) + v * pdf));
  }
}

}  // namespace

const CpuKernels& scalar_kernels() {
  static const CpuKernels table{Isa::scalar, "scalar", add, sub, mul, add_scalar, mul_scalar, rsub_scalar, axpy, relu,
                                relu_backward, sum, sum_sq_dev, dot_centered, scale_shift, affine2, softmax_row,
                                log_softmax_row, gelu, gelu_backward, kernels::im2col, kernels::col2im};
  return table;
}

}  // namespace kd::kernels
