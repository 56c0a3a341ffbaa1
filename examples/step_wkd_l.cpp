// step_wkd_l.cpp: WKD-L (Lv, Yang, Li NeurIPS 2024) on 2 samples and 5 classes, one line of the
// equation at a time, in plain arrays you can print in a debugger, with the official code's
// 10 Sinkhorn iterations written out; then the library's wkd_l_loss, which must agree.
//
//     D <- 1 - exp(-kappa D)                                   sharpen the category costs
//     L_target = -(1/B) sum_b pt_y log ps_y                    at T = 1, pt detached
//     qs, qt = softmax(z[not y] / tau)                         over the n = K - 1 other classes
//     M = relu(D[not y, not y]) + 1e-8;  Kmat = exp(-M / eps);  u = 1/n
//     10 x:  v = qt / (Kmat^T u + 1e-8);  u = qs / (Kmat v + 1e-8)
//     plan = diag(u) Kmat diag(v);  WD_b = sum plan * M
//     L = w_ce CE + L_target + gamma * mean_b WD_b
//
// Build: ninja step_wkd_l      Step through:
//     gdb ./step_wkd_l
//     (gdb) break step_wkd_l.cpp:108    (each Sinkhorn iteration)
//     (gdb) run
//     (gdb) print u[0]
//     (gdb) continue
#include <cmath>
#include <cstdio>

#include "distill/output/wkd_l.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;      // samples
constexpr int K = 5;      // classes: cat, dog, car, truck, ship
constexpr int N = K - 1;  // non-target classes per sample

int main() {
  const double tau = 4.0, gamma = 100.0, eps = 0.05, kappa = 1.0, w_ce = 1.0;
  const int iters = 10;
  // How far apart the classes are (as `kdlab wkd-cost` would build it from the teacher):
  // cat-dog and car-truck close, animals far from vehicles, the ship in between.
  const double D[K][K] = {{0.0, 0.2, 0.9, 0.9, 0.8},
                          {0.2, 0.0, 0.9, 0.9, 0.8},
                          {0.9, 0.9, 0.0, 0.15, 0.5},
                          {0.9, 0.9, 0.15, 0.0, 0.5},
                          {0.8, 0.8, 0.5, 0.5, 0.0}};
  const double zs[B][K] = {{2.0, 1.0, 0.1, -1.0, 0.3}, {0.5, 2.5, -0.3, 0.0, 1.2}};
  const double zt[B][K] = {{3.0, 2.0, 0.2, -2.0, 0.5}, {-1.0, 0.5, 4.0, 3.0, 1.0}};
  const int y[B] = {0, 2};

  // 1. sharpen the cost matrix
  double Ds[K][K];
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) Ds[i][j] = 1.0 - std::exp(-kappa * D[i][j]);
  std::printf("1. D_sharpened = 1 - exp(-kappa D), kappa = %g\n", kappa);
  for (int i = 0; i < K; ++i) step::print_row("", Ds[i], K);

  // 2. the target term at T = 1
  double L_target = 0, ce = 0;
  for (int b = 0; b < B; ++b) {
    double ps1[K], pt1[K];
    step::softmax(zs[b], K, 1.0, ps1);
    step::softmax(zt[b], K, 1.0, pt1);
    L_target += -pt1[y[b]] * std::log(ps1[y[b]]) / B;
    ce += -std::log(ps1[y[b]]) / B;
  }
  std::printf("2. L_target = -(1/B) sum_b pt_y log ps_y = %.6f   (ce = %.6f)\n", L_target, ce);

  double WD = 0;
  for (int b = 0; b < B; ++b) {
    std::printf("-- sample %d, label %d\n", b, y[b]);
    // 3. the non-target distributions at temperature tau
    int other[N];
    double zs_nt[N], zt_nt[N], qs[N], qt[N];
    for (int k = 0, j = 0; k < K; ++k)
      if (k != y[b]) {
        other[j] = k;
        zs_nt[j] = zs[b][k];
        zt_nt[j] = zt[b][k];
        ++j;
      }
    step::softmax(zs_nt, N, tau, qs);
    step::softmax(zt_nt, N, tau, qt);
    std::printf("3. qs, qt = softmax(z[not y] / tau), tau = %g\n", tau);
    step::print_row("qs", qs, N);
    step::print_row("qt", qt, N);

    // 4. the per-sample cost and the Gibbs kernel
    double M[N][N], Kmat[N][N];
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) {
        M[i][j] = std::fmax(Ds[other[i]][other[j]], 0.0) + 1e-8;
        Kmat[i][j] = std::exp(-M[i][j] / eps);
      }
    std::printf("4. M = relu(D[not y, not y]) + 1e-8, Kmat = exp(-M / eps), eps = %g\n", eps);
    for (int i = 0; i < N; ++i) step::print_row("M", M[i], N);

    // 5. Sinkhorn, the official order: v first, then u
    double u[N], v[N];
    for (int i = 0; i < N; ++i) u[i] = 1.0 / N;
    for (int it = 0; it < iters; ++it) {
      for (int j = 0; j < N; ++j) {  // v = qt / (Kmat^T u + 1e-8)
        double s = 0;
        for (int i = 0; i < N; ++i) s += Kmat[i][j] * u[i];
        v[j] = qt[j] / (s + 1e-8);
      }
      for (int i = 0; i < N; ++i) {  // u = qs / (Kmat v + 1e-8)
        double s = 0;
        for (int j = 0; j < N; ++j) s += Kmat[i][j] * v[j];
        u[i] = qs[i] / (s + 1e-8);
      }
    }
    std::printf("5. after %d Sinkhorn iterations\n", iters);
    step::print_row("u", u, N);
    step::print_row("v", v, N);

    // 6. the transport plan and its cost
    double plan[N][N], wd_b = 0, col[N] = {0};
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) {
        plan[i][j] = u[i] * Kmat[i][j] * v[j];
        wd_b += plan[i][j] * M[i][j];
        col[j] += plan[i][j];
      }
    std::printf("6. transport_plan = diag(u) Kmat diag(v); WD_b = sum plan * M = %.6f\n", wd_b);
    for (int i = 0; i < N; ++i) step::print_row("plan", plan[i], N);
    step::print_row("plan^T 1", col, N);
    std::printf("  (the column sums are not yet qt: 10 iterations do not converge)\n");
    WD += wd_b / B;
  }

  // 7. the total
  const double loss = w_ce * ce + L_target + gamma * WD;
  std::printf("7. loss = %g ce + L_target + %g * mean WD = %.6f   (WD = %.6f)\n", w_ce, gamma, loss, WD);

  // 8. the library on the same numbers
  using namespace kd;
  std::vector<float> zs_f, zt_f, D_f;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      zs_f.push_back((float)zs[b][k]);
      zt_f.push_back((float)zt[b][k]);
    }
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) D_f.push_back((float)D[i][j]);
  distill::WkdLOptions opt;
  opt.tau = tau;
  opt.gamma = gamma;
  opt.kappa = kappa;
  opt.ce_weight = w_ce;
  opt.sinkhorn.eps = eps;
  opt.sinkhorn.iters = iters;
  Tensor tzs = from_vector(zs_f, {B, K}), ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // wkd_l_loss is WKD-L's own terms; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(
      distill::wkd_l_loss(tzs, from_vector(zt_f, {B, K}), ty, from_vector(D_f, {K, K}), opt, 1, 240), tzs, ty,
      opt.ce_weight);
  std::printf("8. library w_ce * CE + wkd_l_loss = %.6f (ce %.6f, target %.6f, wd %.6f)\n", lib.total.item(),
              lib.parts[0].second.item(), lib.parts[1].second.item(), lib.parts[2].second.item());
  const double diff = std::fabs(lib.total.item() - loss);
  std::printf("   |library - by hand| = %.2e %s\n", diff, diff < 1e-4 * std::fmax(1.0, loss) ? "(agree)" : "(DISAGREE)");
  return diff < 1e-4 * std::fmax(1.0, loss) ? 0 : 1;
}
