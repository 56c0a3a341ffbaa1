// catkd.h: CAT-KD, class attention transfer based knowledge distillation.
//
// Paper: Z. Guo, H. Yan, H. Li, X. Lin, "Class Attention Transfer Based Knowledge Distillation",
//        CVPR 2023 (arXiv 2304.12777). Official code: GzyAftermath/CAT-KD (built on mdistiller),
//        mdistiller/distillers/CAT_KD.py (CAT_loss, _Normalize), tools/train.py (the conversion of
//        the teacher), the "_test" models in mdistiller/models/cifar/*.py, CFG.CAT_KD in
//        mdistiller/engine/cfg.py, configs/cifar100/CAT_KD/*.yaml.
//
// A classifier that global-average-pools a feature map F (B, C, H, W) and applies a linear layer
// W (K, C) can apply W first, at every position, as a bias-free 1x1 convolution: that gives one
// map per class, the class activation maps (CAMs), and their spatial mean is the logits:
//     CAM[b, k, h, w] = sum_c W[k, c] F[b, c, h, w]                   (B, K, H, W)
//     mean_(h, w) CAM[b, k] = W pooled_b = the logits without the bias
// CAT-KD transfers the teacher's CAMs, pooled to r x r cells, to the student:
//     P_r(CAM)  = adaptive average pool to (r, r)                      (B, K, r, r)
//     N(M)      = M / max(||M||_2 over the r x r cells of each map, 1e-12)   (optional)
//     L_cat     = mean over (B, K, r, r) of (N(P_r(CAM_s)) - N(P_r(CAM_t)))^2
//     L         = w_ce * CE(zs, y) + beta * L_cat          (no logit KL term)
//                 (w_ce * CE added by distill_loss, distiller.h)
// For resnet32x4 -> resnet8x4: beta = 15, r = 2, no normalisation; shufflenet students: beta =
// 600, r = 4, normalised (configs/cifar100/CAT_KD/*.yaml; recipes/cifar100/catkd_*.json).
//
// Official-code semantics reproduced:
//   - CAMs are the classifier applied as a bias-free 1x1 conv ("conv_test") to the map the
//     classifier pools (ModelOutput::pooled_map: f3 of a CIFAR ResNet, after its ReLU; the
//     ReLU(BN(f3)) of a WRN; the last 1x1 conv's output of MobileNetV2 and ShuffleNetV2);
//   - the teacher's FC becomes that conv: fc.weight.view(K, C, 1, 1), its bias dropped
//     (tools/train.py); the teacher runs under no_grad;
//   - the student is the "_test" variant: its classifier is a bias-free 1x1 conv and its logits
//     are the spatial mean of its CAMs. That is our student's FC with the bias removed (a 1x1
//     conv then a global mean equals the global mean then the FC), so no helper module is needed:
//     the factory zeroes and freezes the student's classifier bias (student_bias=true keeps it);
//     the CAMs are W_s applied to the student's map, with W_s the live classifier weight, which
//     both CE and L_cat train, as conv_test is in the official code;
//   - CAT_loss: F.adaptive_avg_pool2d(CAM, (r, r)) of each side, F.normalize(., dim=(2, 3)) when
//     IF_NORMALIZE, F.mse_loss (mean); loss_CAT = CAT_loss_weight * CAT_loss, loss_CE =
//     CE_WEIGHT * CE(logits_student, y);
//   - IF_BINARIZE (binarize=true): the teacher's CAMs become 1 where CAM > mean_(h,w) |CAM| and
//     0 elsewhere, before the pooling.
// Not reproduced: IF_OnlyTransferPartialCAMs (transferring the CAMs of the top/bottom n classes
// only, an ablation of the paper). CFG.CAT_KD's defaults (CAT_loss_weight 400, IF_NORMALIZE
// True) are overridden by every published config; the defaults here are resnet32x4 ->
// resnet8x4's.
//
// Where the CAMs come from: ModelOutput::cam when it is given (kdlab loss --student-feat
// cam=FILE.npy --teacher-feat cam=FILE.npy), else class_activation_maps(pooled_map, W) with the
// classifier weights taken from DistillerContext::student_model / teacher_model.
//
// Parameters (--set): the option table CatKdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method catkd`).
// Loss parts: "cat" = beta * L_cat (after distill_loss's "ce" = w_ce * CE).
// No helper modules (the student's own classifier is the CAM generator).
#pragma once
#include "distill/distiller.h"
#include "distill/feature/common.h"

namespace kd::distill {

struct CatKdOptions {
  double beta = 15.0;         // CAT_loss_weight
  int64_t r = 2;              // CAM_RESOLUTION
  bool normalize = false;     // IF_NORMALIZE
  double ce_weight = 1.0;     // CE_WEIGHT
  bool binarize = false;      // IF_BINARIZE
  bool student_bias = false;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("beta", o.beta, "the weight of L_cat");
    f("r", o.r, "the CAMs are average-pooled to r x r");
    f("normalize", o.normalize, "scale each pooled CAM to unit L2 norm");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y) (0: the paper's CAT alone)");
    f("binarize", o.binarize, "binarise the teacher's CAMs (1 above their mean |cam|)");
    f("student_bias", o.student_bias, "keep the student's classifier bias (the official student has none)");
  }
};

// An FC weight (K, C) as the weight of the equivalent bias-free 1x1 convolution (K, C, 1, 1).
Tensor fc_to_conv1x1(const Tensor& fc_weight);

// CAM = the 1x1 conv fc_to_conv1x1(fc_weight) of `map`: map (B, C, H, W), fc_weight (K, C) ->
// (B, K, H, W). Its mean over (H, W) is the logits of that classifier without its bias.
Tensor class_activation_maps(const Tensor& map, const Tensor& fc_weight);

// IF_BINARIZE: 1 where cam > mean over (H, W) of |cam| (per map), else 0. (B, K, H, W).
Tensor binarize_cams(const Tensor& cam);

// N(M): each map of M (B, K, H, W) scaled to unit L2 norm over its H x W cells (eps 1e-12), as
// F.normalize(M, dim=(2, 3)).
Tensor normalize_cams(const Tensor& maps);

// N(P_r(cam)): pooled to (r, r), then, if `normalize`, each map scaled to unit L2 norm over its
// r x r cells. (B, K, H, W) -> (B, K, r, r).
Tensor transferred_cams(const Tensor& cam, int64_t r, bool normalize);

// zs (B, K) student logits, labels (B), cam_s (B, K, Hs, Ws) and cam_t (B, K, Ht, Wt) (detached
// here). Intermediates shown: cam_s, cam_t, (cam_t_binary), P_cam_s, P_cam_t, (N_cam_s, N_cam_t),
// L_cat. The method's terms only (add_cross_entropy adds the CE for the whole L).
LossBreakdown catkd_loss(const Tensor& zs, const Tensor& labels, const Tensor& cam_s, const Tensor& cam_t,
                         const CatKdOptions& opt, const ExplainFn& explain = {});

// A network's classifier: the 2-D parameter (K, C) the logits come from and its bias (undefined
// when it has none), the layer the model declares (nn::Classifier::classifier_head()). Errors,
// naming `side`, when its weight is not (K, C).
struct ClassifierParams {
  std::string weight_name, bias_name;
  Tensor weight, bias;
};
ClassifierParams find_classifier(nn::Classifier& model, int64_t K, int64_t C, const std::string& side);

class CatKdDistiller : public Distiller {
 public:
  // w_s: the student's classifier weight (K, C), the live parameter (L_cat trains it); w_t: the
  // teacher's (detached here). Either may be undefined when the CAMs come as ModelOutput::cam.
  CatKdDistiller(const CatKdOptions& opt, Tensor w_s, Tensor w_t);
  std::string name() const override { return "catkd"; }
  std::string type_name() const override { return "CatKd"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const CatKdOptions& options() const { return opt_; }

  // The CAMs of one side: out.cam if given, else class_activation_maps(out.pooled_map, w).
  Tensor cams_of(const nn::ModelOutput& out, const Tensor& w, const std::string& side) const;

 private:
  CatKdOptions opt_;
  Tensor w_s_, w_t_;
};

// Reads the parameters. With ctx.student_model / teacher_model: finds both classifiers and, unless
// student_bias=true, zeroes the student's classifier bias and freezes it (the official student).
// Without them: the CAMs must come as the `cam` taps of ctx.student_sample / teacher_sample.
std::shared_ptr<Distiller> make_catkd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
