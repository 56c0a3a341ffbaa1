// step_wkd_f.cpp: WKD-F (Lv, Yang, Li NeurIPS 2024), Wasserstein distillation of features with
// diagonal Gaussians, on 2 samples and 3 classes, one line of the equation at a time, in plain
// arrays you can print in a debugger; then the library's wkd_f_loss on the same numbers, which
// must agree.
//
//     r(fs)    = ReLU(BN(W_r fs + b_r))                  the projector (1x1 conv, BN in training mode)
//     mu_c     = mean over (H, W) of F_c
//     sigma_c  = sqrt(unbiased variance over (H, W) of F_c + 1e-5)
//     L_mean   = sum_{b,c} (mu_s - mu_t)^2 / B,   L_cov = sum_{b,c} (sigma_s - sigma_t)^2 / B
//     L        = w_ce * CE(zs, y) + w(e) * (gamma * L_mean + L_cov)
//     w(e)     = w for e <= E_d, then 0.5 w (1 + cos(pi (e - E_d) / (E - E_d)))
// w = 0.08, gamma = 4, E_d = 150 of E = 240 (resnet32x4 -> resnet8x4); here epoch 200, so the
// weight is decayed. The student's map has 2 channels, the teacher's 3, both 3x3.
//
// Build: ninja step_wkd_f      Step through (docs/methods/wkd_f.md):
//     gdb ./step_wkd_f
//     (gdb) break step_wkd_f.cpp:82      (the Gaussians of both maps computed)
//     (gdb) run
//     (gdb) print sigma_s
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/wkd_f.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;           // samples
constexpr int K = 3;           // classes
constexpr int Cs = 2, Ct = 3;  // the student's and the teacher's channels
constexpr int N = 9;           // positions: 3x3 maps

int main() {
  const double weight = 0.08, gamma_w = 4.0, w_ce = 1.0, eps = 1e-5, bn_eps = 1e-5;
  const int epoch = 200, decay_epoch = 150, total_epochs = 240;
  double fs[B][Cs][N], ft[B][Ct][N];
  step::example_maps(fs, ft);  // small fixed numbers (step_util.h)
  const double W_r[Ct][Cs] = {{0.5, -0.3}, {0.2, 0.7}, {-0.4, 0.6}};  // the projector's 1x1 conv
  const double b_r[Ct] = {0.1, -0.05, 0.2};
  const double gamma_bn[Ct] = {1.0, 1.2, 0.8}, beta_bn[Ct] = {0.3, 0.1, 0.2};
  const double zs[B][K] = {{1.0, -0.5, 0.3}, {0.2, 0.8, -1.0}};
  const int y[B] = {2, 1};

  // 1. the projector: 1x1 conv, BatchNorm with the batch's statistics, ReLU
  double proj[B][Ct][N];
  for (int o = 0; o < Ct; ++o) {
    double conv[B][N], mu = 0, var = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) {
        conv[b][i] = b_r[o];
        for (int c = 0; c < Cs; ++c) conv[b][i] += W_r[o][c] * fs[b][c][i];
        mu += conv[b][i] / (B * N);
      }
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) var += (conv[b][i] - mu) * (conv[b][i] - mu) / (B * N);  // biased, as BN
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i)
        proj[b][o][i] = std::fmax(gamma_bn[o] * (conv[b][i] - mu) / std::sqrt(var + bn_eps) + beta_bn[o], 0.0);
  }
  std::printf("1. r(fs) = ReLU(BN(conv)): sample 0, channel 0 = [");
  for (int i = 0; i < N; ++i) std::printf("%s%.4f", i ? ", " : "", proj[0][0][i]);
  std::printf("]\n");

  // 2. the Gaussian of every channel: mean and standard deviation over the positions
  double mu_s[B][Ct], sigma_s[B][Ct], mu_t[B][Ct], sigma_t[B][Ct];
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Ct; ++c) {
      double ms = 0, mt = 0, vs = 0, vt = 0;
      for (int i = 0; i < N; ++i) {
        ms += proj[b][c][i] / N;
        mt += ft[b][c][i] / N;
      }
      for (int i = 0; i < N; ++i) {
        vs += (proj[b][c][i] - ms) * (proj[b][c][i] - ms) / (N - 1);  // unbiased, as torch.var
        vt += (ft[b][c][i] - mt) * (ft[b][c][i] - mt) / (N - 1);
      }
      mu_s[b][c] = ms;
      mu_t[b][c] = mt;
      sigma_s[b][c] = std::sqrt(vs + eps);
      sigma_t[b][c] = std::sqrt(vt + eps);
    }
  std::printf("2. per channel, sample 0: mu_s = [%.4f, %.4f, %.4f], mu_t = [%.4f, %.4f, %.4f]\n", mu_s[0][0], mu_s[0][1],
              mu_s[0][2], mu_t[0][0], mu_t[0][1], mu_t[0][2]);
  std::printf("   sigma_s = [%.4f, %.4f, %.4f], sigma_t = [%.4f, %.4f, %.4f]\n", sigma_s[0][0], sigma_s[0][1],
              sigma_s[0][2], sigma_t[0][0], sigma_t[0][1], sigma_t[0][2]);

  // 3. W2^2 between diagonal Gaussians splits into a mean term and a standard-deviation term
  double L_mean = 0, L_cov = 0;
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Ct; ++c) {
      L_mean += (mu_s[b][c] - mu_t[b][c]) * (mu_s[b][c] - mu_t[b][c]) / B;
      L_cov += (sigma_s[b][c] - sigma_t[b][c]) * (sigma_s[b][c] - sigma_t[b][c]) / B;
    }
  std::printf("3. L_mean = %.8f, L_cov = %.8f\n", L_mean, L_cov);

  // 4. the weight of epoch e: cosine-decayed after E_d
  const double pi = std::acos(-1.0);
  const double w_e = epoch <= decay_epoch
                         ? weight
                         : 0.5 * weight * (1 + std::cos(pi * (epoch - decay_epoch) / (double)(total_epochs - decay_epoch)));
  std::printf("4. w(%d) = %.6f (w = %g, decay after epoch %d of %d)\n", epoch, w_e, weight, decay_epoch, total_epochs);

  // 5. CE and the total
  const double ce = step::mean_cross_entropy(zs, y);  // (1/B) sum_b [logsumexp(z_b) - z_b,y_b]
  const double loss = w_ce * ce + w_e * (gamma_w * L_mean + L_cov);
  std::printf("5. ce = %.6f; loss = ce + w(e) (%g L_mean + L_cov) = %.6f\n", ce, gamma_w, loss);

  // 6. the library on the same numbers: a ConvReg projector with these weights
  using namespace kd;
  const std::vector<float> fs_f = step::flat(fs), ft_f = step::flat(ft), zs_f = step::flat(zs), w_f = step::flat(W_r);
  const std::vector<float> b_f(b_r, b_r + Ct), g_f(gamma_bn, gamma_bn + Ct), be_f(beta_bn, beta_bn + Ct);
  Generator gen(0);
  distill::ConvReg projector({B, Cs, 3, 3}, {B, Ct, 3, 3}, gen);  // kind() == "conv1x1"
  step::load_conv_reg(projector, w_f, b_f, g_f, be_f, Ct, Cs);
  distill::WkdFOptions opt;  // w 0.08, gamma 4, decay after 150, grid 1, eps 1e-5
  Tensor tzs = from_vector(zs_f, {B, K}), ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // wkd_f_loss is WKD-F's own terms; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(
      distill::wkd_f_loss(tzs, from_vector(fs_f, {B, Cs, 3, 3}), from_vector(ft_f, {B, Ct, 3, 3}), ty, projector, opt,
                          epoch, total_epochs),
      tzs, ty, opt.ce_weight);
  std::printf("6. library w_ce * CE + wkd_f_loss = %.6f (ce %.6f, mean %.6f, cov %.6f)\n", lib.total.item(),
              lib.parts[0].second.item(), lib.parts[1].second.item(), lib.parts[2].second.item());
  const double diff = std::fabs(lib.total.item() - loss) / std::fmax(1.0, std::fabs(loss));
  std::printf("   |library - by hand| / max(1, |loss|) = %.2e %s\n", diff, diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-5 ? 0 : 1;
}
