// step_util.h: the few helpers the step programs share. The by-hand ones are plain C++ on double
// arrays (no library), so that each step program still shows every equation of its method by
// hand: print a row, a softmax with temperature, the mean cross-entropy the distillation loop
// adds, and the flattening of a sample-major array into the layout the library reads. The last
// one loads hand-chosen weights into the library's ConvReg (FitNets' regressor, WKD-F's
// projector) for the comparison with the library.
#pragma once
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/common.h"
#include "engine/autograd.h"

namespace step {

// "  name           [ 0.123456,  0.654321]"
inline void print_row(const char* name, const double* v, int n) {
  std::printf("  %-14s [", name);
  for (int i = 0; i < n; ++i) std::printf("%s% .6f", i ? ", " : "", v[i]);
  std::printf("]\n");
}

// p = softmax(z / T) over n values, the max subtracted first (the same value, no overflow).
inline void softmax(const double* z, int n, double T, double* p) {
  double m = z[0] / T;
  for (int k = 1; k < n; ++k) m = std::fmax(m, z[k] / T);
  double s = 0;
  for (int k = 0; k < n; ++k) s += p[k] = std::exp(z[k] / T - m);
  for (int k = 0; k < n; ++k) p[k] /= s;
}

// ps = softmax(zs / T), pt = softmax(zt / T) row by row, printed as step 1 of an output method.
template <int B, int K>
void softened(const double (&zs)[B][K], const double (&zt)[B][K], double T, double (&ps)[B][K], double (&pt)[B][K]) {
  for (int b = 0; b < B; ++b) {
    softmax(zs[b], K, T, ps[b]);
    softmax(zt[b], K, T, pt[b]);
  }
  std::printf("1. ps = softmax(zs / T), pt = softmax(zt / T), T = %g\n", T);
  for (int b = 0; b < B; ++b) {
    char name[16];
    std::snprintf(name, sizeof name, "ps[%d]", b);
    print_row(name, ps[b], K);
  }
  for (int b = 0; b < B; ++b) {
    char name[16];
    std::snprintf(name, sizeof name, "pt[%d]", b);
    print_row(name, pt[b], K);
  }
}

// CE = (1/B) sum_b [log sum_k exp(z_bk) - z_b,y_b], with the row's max m taken out of the log-sum.
template <int B, int K>
double mean_cross_entropy(const double (&z)[B][K], const int (&y)[B]) {
  double ce = 0;
  for (int b = 0; b < B; ++b) {
    double m = z[b][0], s = 0;
    for (int k = 1; k < K; ++k) m = std::fmax(m, z[b][k]);
    for (int k = 0; k < K; ++k) s += std::exp(z[b][k] - m);
    ce += (m + std::log(s) - z[b][y[b]]) / B;
  }
  return ce;
}

// An array as floats in row-major order: (A, C) or (A, C, N), as the library's tensors hold them.
template <int A, int C>
std::vector<float> flat(const double (&a)[A][C]) {
  std::vector<float> out;
  for (int i = 0; i < A; ++i)
    for (int j = 0; j < C; ++j) out.push_back((float)a[i][j]);
  return out;
}
template <int A, int C, int N>
std::vector<float> flat(const double (&a)[A][C][N]) {
  std::vector<float> out;
  for (int i = 0; i < A; ++i)
    for (int j = 0; j < C; ++j)
      for (int k = 0; k < N; ++k) out.push_back((float)a[i][j][k]);
  return out;
}

// The example feature maps of the feature-method step programs: a student map fs (B, Cs, N) and a
// teacher map ft (B, Ct, N) of N positions, filled with small fixed numbers in [0, 1.2].
template <int B, int Cs, int Ct, int N>
void example_maps(double (&fs)[B][Cs][N], double (&ft)[B][Ct][N]) {
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < Cs; ++c)
      for (int i = 0; i < N; ++i) fs[b][c][i] = 0.1 * ((3 * b + 5 * c + 7 * i) % 11);
    for (int c = 0; c < Ct; ++c)
      for (int i = 0; i < N; ++i) ft[b][c][i] = 0.1 * ((2 * b + 3 * c + 5 * i) % 13);
  }
}

// A 1x1-conv ConvReg (Ct <- Cs) set to weights w (Ct, Cs), bias b (Ct) and BatchNorm gamma, beta (Ct).
inline void load_conv_reg(kd::distill::ConvReg& reg, const std::vector<float>& w, const std::vector<float>& b,
                          const std::vector<float>& gamma, const std::vector<float>& beta, int64_t Ct, int64_t Cs) {
  kd::NoGradGuard ng;
  auto& c = dynamic_cast<kd::nn::Conv2d&>(*reg.conv);
  c.weight.copy_(kd::from_vector(w, {Ct, Cs, 1, 1}));
  c.bias.copy_(kd::from_vector(b, {Ct}));
  reg.bn->weight.copy_(kd::from_vector(gamma, {Ct}));
  reg.bn->bias.copy_(kd::from_vector(beta, {Ct}));
}

}  // namespace step
