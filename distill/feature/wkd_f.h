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
//     L       = w_ce * CE(zs, y) + w(e) * (gamma * L_mean + L_cov)   (w_ce * CE added by distill_loss)
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
// Full covariance (cov=full, an option the official code does not have): the channels of a
// cell are one C-dimensional Gaussian with covariance Sigma = X X^T / (N - 1) + eps I (X the
// centred (C, N) map of N positions), and the covariance term becomes the Bures distance
//     L_cov = sum_{b,cells} [ tr Sigma_s + tr Sigma_t - 2 tr (Sigma_t^1/2 Sigma_s Sigma_t^1/2)^1/2 ] / (g^2 B),
// which equals the diagonal sum of (sigma_s - sigma_t)^2 when both covariances are diagonal. The
// matrix square roots come from a symmetric eigen-decomposition by Jacobi rotations written here
// (in double precision); the gradient of tr M^1/2 is M^-1/2 / 2. It costs O(C^3) per sample
// and cell.
// Not offered: the "bottleneck" projector of WKD's ImageNet configs. A grid cell of a single
// position has no unbiased variance (PyTorch gives NaN); that is rejected with an error.
//
// Parameters (--set): the option table WkdFOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method wkd_f`).
// Loss parts (after distill_loss's "ce" = w_ce * CE): "mean" = w(e) * gamma * L_mean, "cov" =
// w(e) * L_cov.
// Helper: the projector "conv_reg" (ConvReg), trained and checkpointed with the student.
#pragma once
#include <array>

#include "distill/distiller.h"
#include "distill/feature/common.h"

namespace kd::distill {

struct WkdFOptions {
  std::string hint_layer = "f3";
  std::string teacher_layer = "f3";
  double weight = 0.08;       // WKD_FEAT_WEIGHT
  double gamma = 4.0;         // MEAN_COV_RATIO
  int64_t decay_epoch = 150;  // COSINE_DECAY_EPOCH
  int64_t grid = 1;           // SPATIAL_GRID
  double eps = 1e-5;
  double ce_weight = 1.0;
  std::string cov = "diag";
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("hint_layer", o.hint_layer, "the student's tap, projected onto the teacher's (f0..fN, pre1..preN)");
    f("teacher_layer", o.teacher_layer, "the teacher's tap; when not given: hint_layer");
    f("weight", o.weight, "w, the weight of both terms until decay_epoch, then cosine to 0");
    f("gamma", o.gamma, "the weight of the mean term against the covariance term");
    f("decay_epoch", o.decay_epoch, "the epoch after which the weight decays");
    f("grid", o.grid, "g: Gaussians per cell of a g x g grid (1: over the whole map)");
    f("eps", o.eps, "added to the variances");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("cov", o.cov, "diag: per-channel Gaussians (official); full: the Bures term of full covariances");
  }
};

// w(e): `weight` to decay_epoch, then cosine to 0 at total_epochs (WKD.forward_train).
double wkd_f_weight(double weight, int64_t epoch, int64_t decay_epoch, int64_t total_epochs);

// Per-channel Gaussian statistics of f (B, C, H, W) over a g x g grid of cells:
// mean (B, C, g, g) and std = sqrt(unbiased var + eps) (B, C, g, g).
struct ChannelGaussians {
  Tensor mean, std;
};
ChannelGaussians channel_gaussians(const Tensor& f, int64_t grid, double eps);

// The cells of the g x g grid over an H x W map, PyTorch's adaptive-pooling boundaries:
// {h0, h1, w0, w1} with rows h0..h1-1 and columns w0..w1-1. Errors for cells of one position.
std::vector<std::array<int64_t, 4>> grid_cells(int64_t H, int64_t W, int64_t grid);

// The symmetric eigen-decomposition A = V diag(w) V^T of an n x n matrix (row-major, read as
// (A + A^T) / 2) by cyclic Jacobi rotations in double precision: w ascending, V's columns the
// eigenvectors (row-major n x n).
void symmetric_eigen(const std::vector<double>& A, int64_t n, std::vector<double>& w, std::vector<double>& V);

// tr(M_b^1/2) for each symmetric positive semi-definite M (B, n, n) -> (B), differentiable:
// d tr(M^1/2) / dM = M^-1/2 / 2 (eigenvalues floored at 1e-20 there).
Tensor trace_sqrtm(const Tensor& M);
// M^1/2 of each symmetric PSD M (B, n, n), not differentiable (for the teacher's side).
Tensor sqrtm_constant(const Tensor& M);

// Full-covariance Gaussian of each cell-free map f (B, C, H, W): mean (B, C) and
// Sigma = X X^T / (N - 1) + eps I (B, C, C), X the centred (B, C, H*W) map.
struct FullGaussians {
  Tensor mean, cov;
};
FullGaussians full_gaussians(const Tensor& f, double eps);
// The Bures term per sample: tr Ss + tr St - 2 tr (St^1/2 Ss St^1/2)^1/2, Ss (B, C, C)
// differentiable, St (B, C, C) a constant -> (B).
Tensor bures_term(const Tensor& cov_s, const Tensor& cov_t);

// zs (B, K), fs (B, Cs, Hs, Ws) the student's map (projected here), ft (B, Ct, Ht, Wt) the
// teacher's (detached here), labels (B). Intermediates shown: projected, mu_s, sigma_s, mu_t,
// sigma_t, L_mean, L_cov, weight_e. The method's terms only (add_cross_entropy adds the CE).
LossBreakdown wkd_f_loss(const Tensor& zs, const Tensor& fs, const Tensor& ft, const Tensor& labels, ConvReg& projector,
                         const WkdFOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain = {});

class WkdFDistiller : public Distiller {
 public:
  WkdFDistiller(const WkdFOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed);
  std::string name() const override { return "wkd_f"; }
  std::string type_name() const override { return "WKD-F"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const WkdFOptions& options() const { return opt_; }
  ConvReg& projector() { return *conv_reg_; }

 private:
  WkdFOptions opt_;
  std::shared_ptr<ConvReg> conv_reg_;
};

std::shared_ptr<Distiller> make_wkd_f_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
