// step_rkd.cpp: RKD (Park et al. 2019) on 3 samples, one line of the equation at a time, in
// plain arrays you can print in a debugger; then the library's rkd_loss on the same numbers,
// which must agree.
//
//     dist(i, j)   = ||e_i - e_j||  (0 on the diagonal)
//     mu           = mean of the positive distances;  psi_D = dist / mu
//     psi_A(i,j,k) = < (e_j - e_i) / ||e_j - e_i||, (e_k - e_i) / ||e_k - e_i|| >   (0 where j or k = i)
//     L_D = mean over B^2 of smooth_l1(psi_D^s, psi_D^t),  L_A = mean over B^3 of smooth_l1(psi_A^s, psi_A^t)
//     L   = w_ce * CE(zs, y) + 25 L_D + 50 L_A
// The student's pooled features have 2 dimensions and the teacher's 3: relations compare samples
// within one network, so the widths need not agree.
//
// Build: ninja step_rkd      Step through (docs/methods/rkd.md shows a session):
//     gdb ./step_rkd
//     (gdb) break step_rkd.cpp:101      (the normalised distances computed)
//     (gdb) run
//     (gdb) print psi_d_s
#include <cmath>
#include <cstdio>

#include "distill/relation/rkd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 3;   // samples
constexpr int DS = 2;  // student feature width
constexpr int DT = 3;  // teacher feature width
constexpr int K = 3;   // classes

static void print_matrix(const char* name, const double m[B][B]) {
  std::printf("  %s\n", name);
  for (int i = 0; i < B; ++i) {
    std::printf("    [");
    for (int j = 0; j < B; ++j) std::printf("%s% .6f", j ? ", " : "", m[i][j]);
    std::printf("]\n");
  }
}

// smooth-L1 with beta = 1: 0.5 x^2 where |x| < 1, else |x| - 0.5
static double smooth_l1(double a, double b) {
  const double x = std::fabs(a - b);
  return x < 1.0 ? 0.5 * x * x : x - 0.5;
}

// dist(i, j) = ||e_i - e_j|| of B vectors of width D (row-major), 0 on the diagonal.
static void distances(const double* e, int D, double dist[B][B]) {
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      double s = 0;
      for (int k = 0; k < D; ++k) s += (e[i * D + k] - e[j * D + k]) * (e[i * D + k] - e[j * D + k]);
      dist[i][j] = i == j ? 0.0 : std::sqrt(std::fmax(s, 1e-12));  // RKD clamps the square at 1e-12
    }
}

// psi_A(i, j, k) for B vectors of width D.
static void angles(const double* e, int D, double psi[B][B][B]) {
  double unit[B][B][4];  // unit[i][j] = (e_j - e_i) / ||e_j - e_i||, the zero vector for j = i
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      double n = 0;
      for (int k = 0; k < D; ++k) n += (e[j * D + k] - e[i * D + k]) * (e[j * D + k] - e[i * D + k]);
      n = std::fmax(std::sqrt(n), 1e-12);
      for (int k = 0; k < D; ++k) unit[i][j][k] = (e[j * D + k] - e[i * D + k]) / n;
    }
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j)
      for (int k = 0; k < B; ++k) {
        double dot = 0;
        for (int c = 0; c < D; ++c) dot += unit[i][j][c] * unit[i][k][c];
        psi[i][j][k] = dot;
      }
}

int main() {
  const double w_ce = 1.0, w_d = 25.0, w_a = 50.0;  // mdistiller's CFG.RKD
  const double es[B][DS] = {{0.5, 1.0}, {1.5, 0.2}, {-0.3, 0.8}};                 // student pooled features
  const double et[B][DT] = {{1.0, 0.0, 2.0}, {2.0, 1.0, 0.5}, {0.0, 1.5, 1.0}};   // teacher pooled features
  const double zs[B][K] = {{2.0, 0.5, -1.0}, {0.1, 1.2, 0.3}, {-0.5, 0.0, 1.5}};  // student logits
  const int y[B] = {0, 1, 2};                                                      // labels

  // 1. pairwise distances of each network
  double dist_s[B][B], dist_t[B][B];
  distances(&es[0][0], DS, dist_s);
  distances(&et[0][0], DT, dist_t);
  std::printf("1. dist(i, j) = ||e_i - e_j||\n");
  print_matrix("dist_s", dist_s);
  print_matrix("dist_t", dist_t);

  // 2. divide by the mean of the positive (off-diagonal) distances
  double mu_s = 0, mu_t = 0;
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      mu_s += dist_s[i][j] / (B * (B - 1));
      mu_t += dist_t[i][j] / (B * (B - 1));
    }
  double psi_d_s[B][B], psi_d_t[B][B];
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      psi_d_s[i][j] = dist_s[i][j] / mu_s;
      psi_d_t[i][j] = dist_t[i][j] / mu_t;
    }
  std::printf("2. psi_D = dist / mu, mu_s = %.6f, mu_t = %.6f\n", mu_s, mu_t);
  print_matrix("psi_d_s", psi_d_s);
  print_matrix("psi_d_t", psi_d_t);

  // 3. L_D = mean over the B^2 pairs of smooth_l1
  double L_D = 0;
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) L_D += smooth_l1(psi_d_s[i][j], psi_d_t[i][j]) / (B * B);
  std::printf("3. L_D = %.6f\n", L_D);

  // 4. angles: psi_A(i, j, k) = <unit(e_j - e_i), unit(e_k - e_i)>
  double psi_a_s[B][B][B], psi_a_t[B][B][B];
  angles(&es[0][0], DS, psi_a_s);
  angles(&et[0][0], DT, psi_a_t);
  std::printf("4. psi_A at the vertex i = 0 (rows j, columns k)\n");
  print_matrix("psi_a_s[0]", psi_a_s[0]);
  print_matrix("psi_a_t[0]", psi_a_t[0]);

  // 5. L_A = mean over the B^3 triplets of smooth_l1
  double L_A = 0;
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j)
      for (int k = 0; k < B; ++k) L_A += smooth_l1(psi_a_s[i][j][k], psi_a_t[i][j][k]) / (B * B * B);
  std::printf("5. L_A = %.6f\n", L_A);

  // 6. CE: -log softmax(zs)[y], averaged
  const double ce = step::mean_cross_entropy(zs, y);  // (1/B) sum_b [logsumexp(z_b) - z_b,y_b]
  std::printf("6. ce = %.6f\n", ce);

  // 7. the total
  const double loss = w_ce * ce + w_d * L_D + w_a * L_A;
  std::printf("7. loss = %g ce + %g L_D + %g L_A = %.6f   (parts: ce %.6f, distance %.6f, angle %.6f)\n", w_ce, w_d,
              w_a, loss, w_ce * ce, w_d * L_D, w_a * L_A);

  // 8. the library on the same numbers (float32), and its gradient w.r.t. the student features
  using namespace kd;
  std::vector<float> es_f, et_f, zs_f;
  for (int b = 0; b < B; ++b) {
    for (int k = 0; k < DS; ++k) es_f.push_back((float)es[b][k]);
    for (int k = 0; k < DT; ++k) et_f.push_back((float)et[b][k]);
    for (int k = 0; k < K; ++k) zs_f.push_back((float)zs[b][k]);
  }
  Tensor tes = from_vector(es_f, {B, DS}).requires_grad_();
  Tensor tet = from_vector(et_f, {B, DT});
  Tensor tzs = from_vector(zs_f, {B, K});
  Tensor ty = from_vector(std::vector<int64_t>{y[0], y[1], y[2]}, {B});
  // rkd_loss is RKD's own terms; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  const distill::RkdOptions opt;
  distill::LossBreakdown lib = distill::add_cross_entropy(distill::rkd_loss(tzs, ty, tes, tet, opt), tzs, ty, opt.ce_weight);
  lib.total.backward();
  std::printf("8. library w_ce * CE + rkd_loss = %.6f (distance %.6f, angle %.6f), d loss / d e_s =\n%s\n", lib.total.item(),
              lib.parts[1].second.item(), lib.parts[2].second.item(), to_string(tes.grad()).c_str());
  double max_diff = std::fabs(lib.total.item() - loss);
  max_diff = std::fmax(max_diff, std::fabs(lib.parts[1].second.item() - w_d * L_D));
  max_diff = std::fmax(max_diff, std::fabs(lib.parts[2].second.item() - w_a * L_A));
  std::printf("   max |library - by hand| = %.2e %s\n", max_diff, max_diff < 1e-4 ? "(agree)" : "(DISAGREE)");
  return max_diff < 1e-4 ? 0 : 1;
}
