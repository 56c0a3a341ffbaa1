// wkd_f.h: WKD-F, Wasserstein distillation of features (diagonal Gaussians).
//
// Paper: J. Lv, H. Yang, P. Li, "Wasserstein Distance Rivals Kullback-Leibler Divergence for
//        Knowledge Distillation", NeurIPS 2024 (arXiv 2412.08139). Official code: JiamingLv/WKD,
//        mdistiller/distillers/WKD.py (wkd_feature_loss, adaptive_avg_std_pool2d, WKD.forward_train)
//        and _common.py (ConvReg); configs/cifar100/wkd_f/*.yaml.
//
// Each network's feature map is modelled, per channel c, by a Gaussian over the spatial
// positions; with diagonal covariances the 2-Wasserstein distance between two Gaussians is
//     W2^2 = ||mu_s - mu_t||^2 + ||sigma_s - sigma_t||^2.
// The student's map first goes through a projector r onto the teacher's shape (1x1 conv + BN +
// ReLU when the sizes agree: mdistiller's ConvReg, see common.h). Per channel:
//     mu_c    = mean over (H, W) of F_c
//     sigma_c = sqrt(unbiased variance over (H, W) of F_c + eps)                  eps = 1e-5
//     L_mean  = sum_{b,c} (mu_s - mu_t)^2 / B,   L_cov = sum_{b,c} (sigma_s - sigma_t)^2 / B
//     L       = w_ce * CE(zs, y) + w(e) * (gamma * L_mean + L_cov)
//     w(e)    = w for e <= E_d, then 0.5 * w * (1 + cos(pi (e - E_d) / (E - E_d)))   (epoch e from 1)
// With a spatial grid g > 1 the map is cut into g x g cells (PyTorch's adaptive-pooling cells:
// rows floor(i H / g) .. ceil((i + 1) H / g), which may overlap), mu and sigma are taken per cell
// and both sums are divided by g^2 * B instead of B.
//
// Official-code semantics reproduced (WKD.py):
//   - feats[HINT_LAYER] with HINT_LAYER = -1: the last stage output (f3, after its ReLU) for the
//     CIFAR ResNets; the teacher feature is a constant (torch.no_grad);
//   - projector "conv1x1" = ConvReg(use_relu = True, use_bn = True), trained with the student;
//   - torch.var (unbiased) and sqrt(var + eps); F.mse_loss(reduction='sum') / B (/ g^2 B);
//   - MEAN_COV_RATIO gamma multiplies the mean term only; WKD_FEAT_WEIGHT w is cosine-decayed
//     after COSINE_DECAY_EPOCH with kwargs['epoch'] counted from 1; CE_WEIGHT 1;
//   - resnet32x4 -> resnet8x4: w = 0.08, gamma = 4, grid 1, E_d = 150 of 240;
//     wrn_40_2 -> ShuffleV1: w = 0.3, gamma = 3, grid 4.
// Not offered: the "bottleneck" projector of WKD's ImageNet configs, and the full-covariance
// Gaussian W2 (Bures term), which the official code does not have either. A grid cell of a
// single position has no unbiased variance (PyTorch gives NaN); that is rejected with an error.
//
// Parameters (--set): hint_layer (f3; the tap of both networks), teacher_layer (= hint_layer),
// weight (0.08), gamma (4), decay_epoch (150), grid (1), eps (1e-5), ce_weight (1).
// Loss parts: "ce" = w_ce * CE, "mean" = w(e) * gamma * L_mean, "cov" = w(e) * L_cov.
// Helper: the projector "conv_reg" (ConvReg), trained and checkpointed with the student.
#pragma once
#include "distill/distiller.h"
#include "distill/feature/common.h"

namespace kd::distill {

struct WkdFOptions {
  std::string hint_layer = "f3";
  std::string teacher_layer = "f3";
  double weight = 0.08;      // WKD_FEAT_WEIGHT
  double gamma = 4.0;        // MEAN_COV_RATIO
  int64_t decay_epoch = 150;  // COSINE_DECAY_EPOCH
  int64_t grid = 1;          // SPATIAL_GRID
  double eps = 1e-5;
  double ce_weight = 1.0;
};

// w(e): `weight` to decay_epoch, then cosine to 0 at total_epochs (WKD.forward_train).
double wkd_f_weight(double weight, int64_t epoch, int64_t decay_epoch, int64_t total_epochs);

// Per-channel Gaussian statistics of f (B, C, H, W) over a g x g grid of cells:
// mean (B, C, g, g) and std = sqrt(unbiased var + eps) (B, C, g, g).
struct ChannelGaussians {
  Tensor mean, std;
};
ChannelGaussians channel_gaussians(const Tensor& f, int64_t grid, double eps);

// zs (B, K), fs (B, Cs, Hs, Ws) the student's map (projected here), ft (B, Ct, Ht, Wt) the
// teacher's (detached here), labels (B). Intermediates shown: projected, mu_s, sigma_s, mu_t,
// sigma_t, L_mean, L_cov, weight_e, ce, loss.
LossBreakdown wkd_f_loss(const Tensor& zs, const Tensor& fs, const Tensor& ft, const Tensor& labels, ConvReg& projector,
                         const WkdFOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain = {});

class WkdFDistiller : public Distiller {
 public:
  WkdFDistiller(const WkdFOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed);
  std::string name() const override { return "wkd_f"; }
  std::string type_name() const override { return "WKD-F"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  Params params() const override;
  const WkdFOptions& options() const { return opt_; }
  ConvReg& projector() { return *conv_reg_; }

 private:
  WkdFOptions opt_;
  std::shared_ptr<ConvReg> conv_reg_;
};

std::shared_ptr<Distiller> make_wkd_f_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
