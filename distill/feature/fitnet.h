// fitnet.h: FitNets, hints for thin deep nets.
//
// Paper: A. Romero, N. Ballas, S. E. Kahou, A. Chassang, C. Gatta, Y. Bengio, "FitNets: Hints for
//        Thin Deep Nets", ICLR 2015 (arXiv 1412.6550). Reference code: mdistiller
//        (megvii-research/mdistiller), mdistiller/distillers/FitNet.py and _common.py (ConvReg).
//
// A "hint" is the output of a teacher's hidden layer (hint layer, u_h); the student's "guided"
// layer v_g is trained to predict it through a small trainable regressor r (needed because the
// student's map is thinner, and may be of another size):
//     L_hint = mean over (B, C, H, W) of (r(v_g) - u_h)^2                  (mean squared error)
// Single-stage form (mdistiller / RepDistiller, where the published CIFAR numbers come from):
//     L = w_ce * CE(zs, y) + w_feat * L_hint                 (w_ce = 1, w_feat = 100, layer f2)
// Two-stage form (the paper): stage 1, epochs 1..N, trains the student's layers up to the guided
// layer and the regressor on the hint alone; stage 2 trains the whole student with KD:
//     epoch <= N:  L = w_feat * L_hint                          (this distiller, without CE)
//     epoch >  N:  L = kd_ce_weight * CE(zs, y) + kd_weight * T^2 * (1/B) sum_b KL(pt_b || ps_b)
// In stage 1 only the layers below the guided layer receive gradients (the rest of the student
// is untouched: the optimizer skips parameters without a gradient, weight decay included).
// The two stages are a training regime of their own, FitNetTwoStage in fitnet_run.cpp: the epoch
// loop with this distiller's hint loss for N epochs, then with the KD distiller (output/kd.h).
// The distiller itself is the hint stage's loss, so with stages=2 it cannot go into a fusion.
//
// Official-code semantics reproduced (FitNet.py, ConvReg):
//   - hint layer 2 for both networks (cfg FITNET.HINT_LAYER = 2): feats[2] = f2, after the
//     stage's ReLU; the teacher feature is a constant (torch.no_grad);
//   - the regressor: conv 3x3 stride 2 if the student map is twice the teacher's, transposed conv
//     4x4 stride 2 if half, else a valid conv of kernel 1 + Hs - Ht; then BatchNorm2d and ReLU
//     (ConvReg with use_relu = True), trained with the student (get_learnable_parameters);
//   - F.mse_loss with the default 'mean' reduction; CE_WEIGHT 1, FEAT_WEIGHT 100.
// The paper's stage-2 KD anneals its weight from 4 to 1; here stage 2 is plain KD (distill/output/
// kd.h) with the mdistiller KD defaults, each weight a parameter.
//
// Parameters (--set): the option table FitNetOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method fitnet`).
// The w * CE(zs, y) term is added by distill_loss (distiller.h) with fitnet_ce_weight: w_ce, or
// none (the hint stage of the two-stage form). Loss part (after distill_loss's "ce"): "hint" =
// w_feat * L_hint; the two-stage regime adds "kd" (and logs the inactive one as 0).
// Helper: the regressor "conv_reg" (ConvReg), trained and checkpointed with the student.
#pragma once
#include "distill/distiller.h"
#include "distill/feature/common.h"
#include "distill/output/kd.h"

namespace kd::distill {

struct FitNetOptions {
  std::string hint_layer = "f2";
  std::string teacher_layer = "f2";
  double ce_weight = 1.0;
  double feat_weight = 100.0;
  int64_t stages = 1;
  int64_t hint_epochs = 0;
  KdOptions kd{4.0, 0.1, 0.9};  // stage 2: T, kd_ce_weight, kd_weight
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("hint_layer", o.hint_layer, "the student's guided layer (a tap: f0..fN, pre1..preN, pooled)");
    f("teacher_layer", o.teacher_layer, "the teacher's hint layer; when not given: hint_layer");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y) (stages=1)");
    f("feat_weight", o.feat_weight, "w_feat, the weight of L_hint");
    f("stages", o.stages, "1: CE + hint (mdistiller); 2: hint_epochs of hint alone, then KD (the paper)");
    f("hint_epochs", o.hint_epochs, "stages=2: N, the epochs of the hint stage", o.stages == 2);
    f("T", o.kd.T, "stages=2: the temperature of stage 2's KD", o.stages == 2);
    f("kd_ce_weight", o.kd.ce_weight, "stages=2: the weight of CE(zs, y) in stage 2", o.stages == 2);
    f("kd_weight", o.kd.kd_weight, "stages=2: the weight of stage 2's L_kd", o.stages == 2);
  }
};

// The stage of `epoch` (counted from 1): 1 = hint training, 2 = KD; always 1 for single stage.
int64_t fitnet_stage(const FitNetOptions& opt, int64_t epoch);
// The weight of CE(zs, y): ce_weight (single stage); none for the two-stage form, whose distiller
// is the hint stage (no CE at all, so that the layers above the guided one get no gradient).
std::optional<double> fitnet_ce_weight(const FitNetOptions& opt);
// The options of stage 2 (KD) of the two-stage form: T, kd_ce_weight, kd_weight.
Params fitnet_stage2_kd_params(const FitNetOptions& opt);

// fs (B, Cs, Hs, Ws) the student's guided map, ft (B, Ct, Ht, Wt) the teacher's hint map
// (detached here), regressor mapping fs onto ft's shape. Intermediates shown: regressed,
// hint_target, L_hint. The method's term only (add_cross_entropy adds the CE, weight
// fitnet_ce_weight).
LossBreakdown fitnet_loss(const Tensor& fs, const Tensor& ft, ConvReg& regressor, const FitNetOptions& opt,
                          const ExplainFn& explain = {});

class FitNetDistiller : public Distiller {
 public:
  // s_shape, t_shape: (B, C, H, W) of the student's and teacher's taps; the regressor's weights
  // are drawn from `seed`.
  FitNetDistiller(const FitNetOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed);
  std::string name() const override { return "fitnet"; }
  std::string type_name() const override { return "FitNet"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return fitnet_ce_weight(opt_); }
  std::string regime_of_its_own() const override {
    return opt_.stages == 2 ? "fitnet stages=2 (hint training, then KD)" : "";
  }
  Params params() const override;
  const FitNetOptions& options() const { return opt_; }
  ConvReg& regressor() { return *conv_reg_; }

 private:
  FitNetOptions opt_;
  std::shared_ptr<ConvReg> conv_reg_;
};

// Reads the parameters; sizes the regressor from ctx.student_sample / ctx.teacher_sample.
std::shared_ptr<Distiller> make_fitnet_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
