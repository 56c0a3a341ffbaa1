// step_kd.cpp: KD (Hinton, Vinyals, Dean 2015) on 2 samples and 4 classes, one line of the
// equation at a time, in plain arrays you can print in a debugger; then the library's kd_loss
// on the same numbers, which must agree.
//
//     ps = softmax(zs / T),  pt = softmax(zt / T)
//     L_kd = T^2 * (1/B) * sum_b KL(pt_b || ps_b)
//     L = w_ce * CE(zs, y) + w_kd * L_kd
//     dL/dzs = w_kd * T * (ps - pt) / B + w_ce * (softmax(zs) - onehot(y)) / B
//
// Build: ninja step_kd      Step through (docs/methods/kd.md shows a session):
//     gdb ./step_kd
//     (gdb) break step_kd.cpp:57       (ps and pt computed)
//     (gdb) run
//     (gdb) print ps
#include <cmath>
#include <cstdio>

#include "distill/output/kd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;  // samples
constexpr int K = 4;  // classes

int main() {
  const double T = 4.0, w_ce = 0.1, w_kd = 0.9;  // mdistiller's CIFAR defaults
  const double zs[B][K] = {{2.0, 1.0, 0.1, -1.0}, {0.5, 2.5, -0.3, 0.0}};  // student logits
  const double zt[B][K] = {{3.0, 0.5, 0.2, -2.0}, {0.1, 4.0, 1.0, -1.0}};  // teacher logits
  const int y[B] = {0, 1};                                                 // labels

  // 1. softened distributions
  double ps[B][K], pt[B][K];
  step::softened(zs, zt, T, ps, pt);  // 1. ps = softmax(zs / T), pt = softmax(zt / T)

  // 2. KL(pt_b || ps_b) = sum_k pt log(pt / ps), per sample
  double kl_b[B];
  for (int b = 0; b < B; ++b) {
    kl_b[b] = 0;
    for (int k = 0; k < K; ++k) kl_b[b] += pt[b][k] * (std::log(pt[b][k]) - std::log(ps[b][k]));
  }
  std::printf("2. KL(pt || ps) per sample\n");
  step::print_row("kl_b", kl_b, B);

  // 3. L_kd = T^2 * mean_b KL_b (the true batch mean, as mdistiller)
  const double L_kd = T * T * (kl_b[0] + kl_b[1]) / B;
  std::printf("3. L_kd = T^2 * mean(kl_b) = %.6f\n", L_kd);

  // 4. CE at temperature 1: -log softmax(zs)[y], averaged
  double p1[B][K], ce = 0;
  for (int b = 0; b < B; ++b) {
    step::softmax(zs[b], K, 1.0, p1[b]);
    ce += -std::log(p1[b][y[b]]) / B;
  }
  std::printf("4. ce = %.6f\n", ce);

  // 5. the total
  const double loss = w_ce * ce + w_kd * L_kd;
  std::printf("5. loss = %g * ce + %g * L_kd = %.6f   (parts: ce %.6f, kd %.6f)\n", w_ce, w_kd, loss, w_ce * ce,
              w_kd * L_kd);

  // 6. the gradient, in closed form
  double grad[B][K];
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k)
      grad[b][k] = w_kd * T * (ps[b][k] - pt[b][k]) / B + w_ce * (p1[b][k] - (k == y[b] ? 1.0 : 0.0)) / B;
  std::printf("6. dloss/dzs = w_kd T (ps - pt) / B + w_ce (softmax(zs) - onehot(y)) / B\n");
  for (int b = 0; b < B; ++b) step::print_row(b ? "grad[1]" : "grad[0]", grad[b], K);

  // 7. the library on the same numbers
  using namespace kd;
  const std::vector<float> zs_f = step::flat(zs), zt_f = step::flat(zt);
  Tensor tzs = from_vector(zs_f, {B, K}).requires_grad_();
  Tensor tzt = from_vector(zt_f, {B, K});
  Tensor ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  distill::KdOptions opt{T, w_ce, w_kd};
  // kd_loss is KD's own term, w_kd * L_kd; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(distill::kd_loss(tzs, tzt, ty, opt), tzs, ty, opt.ce_weight);
  lib.total.backward();
  std::printf("7. library w_ce * CE + kd_loss = %.6f, d/dzs =\n%s\n", lib.total.item(), to_string(tzs.grad()).c_str());
  double max_diff = std::fabs(lib.total.item() - loss);
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) max_diff = std::fmax(max_diff, std::fabs(tzs.grad().at({b, k}) - grad[b][k]));
  std::printf("   max |library - by hand| = %.2e %s\n", max_diff, max_diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return max_diff < 1e-5 ? 0 : 1;
}
