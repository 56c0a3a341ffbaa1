// step_fitnet.cpp: FitNets (Romero et al. ICLR 2015), mdistiller's single-stage form, on 2
// samples and 3 classes, one line of the equation at a time, in plain arrays you can print in a
// debugger; then the library's fitnet_loss on the same numbers, which must agree.
//
//     conv  = W_r fs + b_r                              the regressor's 1x1 conv (equal map sizes)
//     bn    = gamma (conv - mu_c) / sqrt(var_c + eps) + beta_c    BatchNorm in training mode:
//             mu_c, var_c over (B, H, W) per channel, var biased, eps = 1e-5
//     r(fs) = ReLU(bn)                                  (B, Ct, H, W)
//     L_hint = mean over (B, Ct, H, W) of (r(fs) - ft)^2
//     L = w_ce * CE(zs, y) + w_feat * L_hint            w_ce = 1, w_feat = 100
// The student's guided map has 2 channels, the teacher's hint 3, both 2x2, so the regressor is a
// 1x1 conv (mdistiller's ConvReg rule for equal sizes).
//
// Build: ninja step_fitnet      Step through (docs/methods/fitnet.md):
//     gdb ./step_fitnet
//     (gdb) break step_fitnet.cpp:73     (the regressed map computed)
//     (gdb) run
//     (gdb) print reg
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/fitnet.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;           // samples
constexpr int K = 3;           // classes
constexpr int Cs = 2, Ct = 3;  // the guided map's and the hint's channels
constexpr int N = 4;           // positions: 2x2 maps

int main() {
  const double w_ce = 1.0, w_feat = 100.0, eps = 1e-5;  // mdistiller's FITNET defaults
  double fs[B][Cs][N], ft[B][Ct][N];
  step::example_maps(fs, ft);  // small fixed numbers (step_util.h)
  const double W_r[Ct][Cs] = {{0.5, -0.3}, {0.2, 0.7}, {-0.4, 0.6}};  // the regressor's 1x1 conv
  const double b_r[Ct] = {0.1, -0.05, 0.2};
  const double gamma[Ct] = {1.0, 1.2, 0.8}, beta_bn[Ct] = {0.3, 0.1, 0.2};  // BN's affine parameters
  const double zs[B][K] = {{1.0, -0.5, 0.3}, {0.2, 0.8, -1.0}};
  const int y[B] = {2, 1};

  // 1. the 1x1 conv: conv[b][o][i] = sum_c W_r[o][c] fs[b][c][i] + b_r[o]
  double conv[B][Ct][N];
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < Ct; ++o)
      for (int i = 0; i < N; ++i) {
        conv[b][o][i] = b_r[o];
        for (int c = 0; c < Cs; ++c) conv[b][o][i] += W_r[o][c] * fs[b][c][i];
      }
  std::printf("1. conv = W_r fs + b_r: sample 0, channel 0 = [%.4f, %.4f, %.4f, %.4f]\n", conv[0][0][0], conv[0][0][1],
              conv[0][0][2], conv[0][0][3]);

  // 2. BatchNorm (training mode): statistics of each channel over the batch and the positions
  double mu[Ct], var[Ct];
  for (int o = 0; o < Ct; ++o) {
    mu[o] = var[o] = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) mu[o] += conv[b][o][i] / (B * N);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < N; ++i) var[o] += (conv[b][o][i] - mu[o]) * (conv[b][o][i] - mu[o]) / (B * N);  // biased
  }
  std::printf("2. BN batch statistics: mu = [%.4f, %.4f, %.4f], var = [%.4f, %.4f, %.4f]\n", mu[0], mu[1], mu[2], var[0],
              var[1], var[2]);

  // 3. normalise, scale and shift, then ReLU: the regressed map r(fs)
  double reg[B][Ct][N];
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < Ct; ++o)
      for (int i = 0; i < N; ++i) {
        const double bn = gamma[o] * (conv[b][o][i] - mu[o]) / std::sqrt(var[o] + eps) + beta_bn[o];
        reg[b][o][i] = std::fmax(bn, 0.0);
      }
  std::printf("3. r(fs) = ReLU(BN(conv)): sample 0, channel 0 = [%.4f, %.4f, %.4f, %.4f]\n", reg[0][0][0], reg[0][0][1],
              reg[0][0][2], reg[0][0][3]);

  // 4. the hint loss: the mean squared difference to the teacher's map
  double L_hint = 0;
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < Ct; ++o)
      for (int i = 0; i < N; ++i) L_hint += (reg[b][o][i] - ft[b][o][i]) * (reg[b][o][i] - ft[b][o][i]) / (B * Ct * N);
  std::printf("4. L_hint = %.8f\n", L_hint);

  // 5. CE and the total
  const double ce = step::mean_cross_entropy(zs, y);  // (1/B) sum_b [logsumexp(z_b) - z_b,y_b]
  const double loss = w_ce * ce + w_feat * L_hint;
  std::printf("5. ce = %.6f; loss = %g ce + %g L_hint = %.6f\n", ce, w_ce, w_feat, loss);

  // 6. the library on the same numbers: a ConvReg with these weights
  using namespace kd;
  const std::vector<float> fs_f = step::flat(fs), ft_f = step::flat(ft), zs_f = step::flat(zs), w_f = step::flat(W_r);
  const std::vector<float> b_f(b_r, b_r + Ct), g_f(gamma, gamma + Ct), be_f(beta_bn, beta_bn + Ct);
  Generator gen(0);
  distill::ConvReg regressor({B, Cs, 2, 2}, {B, Ct, 2, 2}, gen);  // kind() == "conv1x1"
  step::load_conv_reg(regressor, w_f, b_f, g_f, be_f, Ct, Cs);
  distill::FitNetOptions opt;  // hint f2, w_ce 1, w_feat 100, one stage
  Tensor tzs = from_vector(zs_f, {B, K}), ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // fitnet_loss is FitNets' own term; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(
      distill::fitnet_loss(from_vector(fs_f, {B, Cs, 2, 2}), from_vector(ft_f, {B, Ct, 2, 2}), regressor, opt),
      tzs, ty, opt.ce_weight);
  std::printf("6. library w_ce * CE + fitnet_loss (%s regressor) = %.6f (ce %.6f, hint %.6f)\n", regressor.kind().c_str(),
              lib.total.item(), lib.parts[0].second.item(), lib.parts[1].second.item());
  const double diff = std::fabs(lib.total.item() - loss) / std::fmax(1.0, std::fabs(loss));
  std::printf("   |library - by hand| / max(1, |loss|) = %.2e %s\n", diff, diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-5 ? 0 : 1;
}
