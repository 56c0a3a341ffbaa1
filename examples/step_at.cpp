// step_at.cpp: AT, attention transfer (Zagoruyko & Komodakis ICLR 2017), on 2 samples, 3
// classes and two stages, one line of the equation at a time, in plain arrays you can print in a
// debugger; then the library's at_loss on the same numbers, which must agree.
//
//     a(F)   = normalize(mean_c F_c^p reshaped to (B, H*W))     per sample, L2, eps 1e-12
//     L_at^l = mean over (B, H*W) of (a(Fs^l) - a(Ft^l))^2        for each stage l
//     L      = w_ce * CE(zs, y) + beta * sum_l L_at^l               beta = 1000, p = 2
// Stage f1: student 2 channels, teacher 3 channels, both 4x4. Stage f2: the student's map is 2x2
// and the teacher's 4x4, so the teacher's is first average-pooled to 2x2 (mdistiller pools the
// larger map to the smaller one's height).
//
// Build: ninja step_at      Step through (docs/methods/at.md):
//     gdb ./step_at
//     (gdb) break step_at.cpp:83      (the attention maps of both stages computed)
//     (gdb) run
//     (gdb) print a_s1
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/at.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;  // samples
constexpr int K = 3;  // classes
// stage f1: student (2, 4, 4), teacher (3, 4, 4); stage f2: student (2, 2, 2), teacher (2, 4, 4)
constexpr int C1s = 2, C1t = 3, N1 = 16;  // N = H * W
constexpr int C2s = 2, C2t = 2, N2 = 4;

static void print_row(const char* name, int b, const double* v, int n) {
  std::printf("  %s[%d] = [", name, b);
  for (int i = 0; i < n; ++i) std::printf("%s% .4f", i ? ", " : "", v[i]);
  std::printf("]\n");
}

// a(F) of one sample: mean over the C channels of F^p at each of the n positions, then / L2 norm
static void attention(const double* f, int C, int n, double p, double* a) {
  double norm = 0;
  for (int i = 0; i < n; ++i) {
    a[i] = 0;
    for (int c = 0; c < C; ++c) a[i] += std::pow(f[c * n + i], p) / C;
    norm += a[i] * a[i];
  }
  norm = std::fmax(std::sqrt(norm), 1e-12);
  for (int i = 0; i < n; ++i) a[i] /= norm;
}

int main() {
  const double p = 2.0, beta = 1000.0, w_ce = 1.0;  // mdistiller's AT defaults
  double f1s[B][C1s * N1], f1t[B][C1t * N1], f2s[B][C2s * N2], f2t[B][C2t * N1];
  for (int b = 0; b < B; ++b) {
    for (int i = 0; i < C1s * N1; ++i) f1s[b][i] = 0.1 * ((3 * b + 7 * i) % 9);
    for (int i = 0; i < C1t * N1; ++i) f1t[b][i] = 0.1 * ((5 * b + 3 * i) % 11);
    for (int i = 0; i < C2s * N2; ++i) f2s[b][i] = 0.2 * ((b + 5 * i) % 7);
    for (int i = 0; i < C2t * N1; ++i) f2t[b][i] = 0.1 * ((2 * b + 7 * i) % 13);
  }
  const double zs[B][K] = {{1.0, -0.5, 0.3}, {0.2, 0.8, -1.0}};
  const int y[B] = {0, 1};

  // 1. stage f2's teacher map is larger (4x4 vs 2x2): average-pool it over 2x2 blocks
  double f2t_pooled[B][C2t * N2];
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C2t; ++c)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          const double* m = &f2t[b][c * N1];  // the 4x4 map of channel c
          double s = 0;
          for (int di = 0; di < 2; ++di)
            for (int dj = 0; dj < 2; ++dj) s += m[(2 * i + di) * 4 + (2 * j + dj)];
          f2t_pooled[b][c * N2 + i * 2 + j] = s / 4;
        }
  std::printf("1. stage f2: the teacher's 4x4 map pooled to the student's 2x2\n");
  print_row("f2t_pooled (channel 0)", 0, f2t_pooled[0], N2);

  // 2. the attention maps a(F) of each stage
  double a_s1[B][N1], a_t1[B][N1], a_s2[B][N2], a_t2[B][N2];
  for (int b = 0; b < B; ++b) {
    attention(f1s[b], C1s, N1, p, a_s1[b]);
    attention(f1t[b], C1t, N1, p, a_t1[b]);
    attention(f2s[b], C2s, N2, p, a_s2[b]);
    attention(f2t_pooled[b], C2t, N2, p, a_t2[b]);
  }
  std::printf("2. a(F) = normalize(mean_c F^%g)\n", p);
  for (int b = 0; b < B; ++b) print_row("a_s1", b, a_s1[b], N1);
  for (int b = 0; b < B; ++b) print_row("a_t1", b, a_t1[b], N1);
  for (int b = 0; b < B; ++b) print_row("a_s2", b, a_s2[b], N2);
  for (int b = 0; b < B; ++b) print_row("a_t2", b, a_t2[b], N2);

  // 3. L_at per stage: the mean squared difference over B * H * W
  double L1 = 0, L2 = 0;
  for (int b = 0; b < B; ++b) {
    for (int i = 0; i < N1; ++i) L1 += (a_s1[b][i] - a_t1[b][i]) * (a_s1[b][i] - a_t1[b][i]) / (B * N1);
    for (int i = 0; i < N2; ++i) L2 += (a_s2[b][i] - a_t2[b][i]) * (a_s2[b][i] - a_t2[b][i]) / (B * N2);
  }
  std::printf("3. L_at^f1 = %.8f, L_at^f2 = %.8f\n", L1, L2);

  // 4. CE and the total
  const double ce = step::mean_cross_entropy(zs, y);  // (1/B) sum_b [logsumexp(z_b) - z_b,y_b]
  const double loss = w_ce * ce + beta * (L1 + L2);
  std::printf("4. ce = %.6f; loss = %g ce + %g (L_at^f1 + L_at^f2) = %.6f\n", ce, w_ce, beta, loss);

  // 5. the library on the same numbers
  using namespace kd;
  auto tensor = [](const double* v, int n, const Shape& shape) {
    std::vector<float> f;
    for (int i = 0; i < n; ++i) f.push_back((float)v[i]);
    return from_vector(f, shape);
  };
  std::vector<float> zs_f;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) zs_f.push_back((float)zs[b][k]);
  distill::AtOptions opt;
  opt.layers = opt.teacher_layers = {"f1", "f2"};
  opt.p = p;
  opt.feat_weight = beta;
  opt.ce_weight = w_ce;
  Tensor tzs = from_vector(zs_f, {B, K}), ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // at_loss is AT's own terms; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(
      distill::at_loss(
          tzs, ty, {tensor(&f1s[0][0], B * C1s * N1, {B, C1s, 4, 4}), tensor(&f2s[0][0], B * C2s * N2, {B, C2s, 2, 2})},
          {tensor(&f1t[0][0], B * C1t * N1, {B, C1t, 4, 4}), tensor(&f2t[0][0], B * C2t * N1, {B, C2t, 4, 4})}, opt),
      tzs, ty, opt.ce_weight);
  std::printf("5. library w_ce * CE + at_loss = %.6f (ce %.6f, at_f1 %.6f, at_f2 %.6f)\n", lib.total.item(),
              lib.parts[0].second.item(), lib.parts[1].second.item(), lib.parts[2].second.item());
  const double diff = std::fabs(lib.total.item() - loss) / std::fmax(1.0, std::fabs(loss));
  std::printf("   |library - by hand| / max(1, |loss|) = %.2e %s\n", diff, diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-5 ? 0 : 1;
}
