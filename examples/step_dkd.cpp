// step_dkd.cpp: DKD (Zhao et al. CVPR 2022) on 2 samples and 5 classes, one line of the equation
// at a time, in plain arrays you can print in a debugger; then the library's dkd_loss on the same
// numbers, which must agree.
//
//     p = softmax(z / T);  b = [p_y, 1 - p_y]                   binary: target vs the rest
//     TCKD = T^2 / B * sum_b KL(bt_b || bs_b)
//     p_hat_k = p_k / (1 - p_y) for k != y                      distribution among non-targets
//     NCKD = T^2 / B * sum_b KL(p_hat_t_b || p_hat_s_b)
//     L = w_ce * CE + min(epoch / W, 1) * (alpha * TCKD + beta * NCKD)
// and the identity behind the paper: KL(pt || ps) = TCKD_b + (1 - pt_y) * NCKD_b per sample.
// (mdistiller gets p_hat by softmax(z / T - 1000 * onehot(y)): the same numbers to float
// precision; the library follows mdistiller.)
//
// Build: ninja step_dkd      Step through:
//     gdb ./step_dkd
//     (gdb) break step_dkd.cpp:81      (after the binary split)
//     (gdb) run
//     (gdb) print bs
//     (gdb) print bt[1]
#include <cmath>
#include <cstdio>

#include "distill/output/dkd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;  // samples
constexpr int K = 5;  // classes

// KL(p || q) over n entries, with 0 log 0 = 0.
static double kl(const double* p, const double* q, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i)
    if (p[i] > 0) s += p[i] * (std::log(p[i]) - std::log(q[i]));
  return s;
}

int main() {
  const double T = 4.0, alpha = 1.0, beta = 8.0, w_ce = 1.0;  // mdistiller's defaults
  const int W = 20, epoch = 10;                              // halfway through the warm-up
  const double zs[B][K] = {{2.0, 1.0, 0.1, -1.0, 0.3}, {0.5, 2.5, -0.3, 0.0, 1.2}};
  const double zt[B][K] = {{3.0, 0.5, 0.2, -2.0, 1.5}, {0.1, 4.0, 1.0, -1.0, 0.0}};
  const int y[B] = {0, 1};

  // 1. p at temperature T
  double ps[B][K], pt[B][K];
  step::softened(zs, zt, T, ps, pt);  // 1. ps = softmax(zs / T), pt = softmax(zt / T)

  // 2. the binary split b = [p_y, 1 - p_y]
  double bs[B][2], bt[B][2];
  for (int b = 0; b < B; ++b) {
    bs[b][0] = ps[b][y[b]];
    bs[b][1] = 1.0 - ps[b][y[b]];
    bt[b][0] = pt[b][y[b]];
    bt[b][1] = 1.0 - pt[b][y[b]];
  }
  std::printf("2. bs, bt = [p_y, 1 - p_y]\n");
  for (int b = 0; b < B; ++b) step::print_row(b ? "bs[1]" : "bs[0]", bs[b], 2);
  for (int b = 0; b < B; ++b) step::print_row(b ? "bt[1]" : "bt[0]", bt[b], 2);

  // 3. TCKD
  double tckd_b[B], TCKD = 0;
  for (int b = 0; b < B; ++b) {
    tckd_b[b] = kl(bt[b], bs[b], 2);
    TCKD += T * T * tckd_b[b] / B;
  }
  std::printf("3. TCKD = T^2 / B * sum_b KL(bt || bs) = %.6f\n", TCKD);
  step::print_row("tckd_b", tckd_b, B);

  // 4. the non-target distributions p_hat (the target class removed, renormalised)
  double p_hat_s[B][K], p_hat_t[B][K];
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      p_hat_s[b][k] = k == y[b] ? 0.0 : ps[b][k] / (1.0 - ps[b][y[b]]);
      p_hat_t[b][k] = k == y[b] ? 0.0 : pt[b][k] / (1.0 - pt[b][y[b]]);
    }
  std::printf("4. p_hat = p / (1 - p_y) off the target\n");
  for (int b = 0; b < B; ++b) step::print_row(b ? "p_hat_s[1]" : "p_hat_s[0]", p_hat_s[b], K);
  for (int b = 0; b < B; ++b) step::print_row(b ? "p_hat_t[1]" : "p_hat_t[0]", p_hat_t[b], K);

  // 5. NCKD
  double nckd_b[B], NCKD = 0;
  for (int b = 0; b < B; ++b) {
    nckd_b[b] = kl(p_hat_t[b], p_hat_s[b], K);
    NCKD += T * T * nckd_b[b] / B;
  }
  std::printf("5. NCKD = T^2 / B * sum_b KL(p_hat_t || p_hat_s) = %.6f\n", NCKD);
  step::print_row("nckd_b", nckd_b, B);

  // 6. the identity: classical KD = TCKD + (1 - pt_y) NCKD, per sample
  std::printf("6. KL(pt || ps) = tckd_b + (1 - pt_y) nckd_b\n");
  for (int b = 0; b < B; ++b)
    std::printf("  sample %d: %.6f = %.6f + %.6f * %.6f\n", b, kl(pt[b], ps[b], K), tckd_b[b], 1.0 - pt[b][y[b]],
                nckd_b[b]);

  // 7. warm-up, CE and the total
  const double warm = std::fmin((double)epoch / W, 1.0);
  double ce = 0, p1[K];
  for (int b = 0; b < B; ++b) {
    step::softmax(zs[b], K, 1.0, p1);
    ce += -std::log(p1[y[b]]) / B;
  }
  const double loss = w_ce * ce + warm * (alpha * TCKD + beta * NCKD);
  std::printf("7. warm-up min(%d / %d, 1) = %g; ce = %.6f\n   loss = %g ce + %g (%g TCKD + %g NCKD) = %.6f\n", epoch, W,
              warm, ce, w_ce, warm, alpha, beta, loss);

  // 8. the library on the same numbers
  using namespace kd;
  const std::vector<float> zs_f = step::flat(zs), zt_f = step::flat(zt);
  distill::DkdOptions opt{alpha, beta, T, W, w_ce};
  Tensor tzs = from_vector(zs_f, {B, K}), ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // dkd_loss is DKD's own terms; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(
      distill::dkd_loss(tzs, from_vector(zt_f, {B, K}), ty, opt, epoch), tzs, ty, opt.ce_weight);
  std::printf("8. library w_ce * CE + dkd_loss = %.6f (ce %.6f, tckd %.6f, nckd %.6f)\n", lib.total.item(), lib.parts[0].second.item(),
              lib.parts[1].second.item(), lib.parts[2].second.item());
  const double diff = std::fabs(lib.total.item() - loss);
  std::printf("   |library - by hand| = %.2e %s\n", diff, diff < 1e-4 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-4 ? 0 : 1;
}
