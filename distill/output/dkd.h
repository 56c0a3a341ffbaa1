// dkd.h: DKD, decoupled knowledge distillation.
//
// Paper: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge Distillation",
//        CVPR 2022 (arXiv 2203.08679). Official code: megvii-research/mdistiller,
//        mdistiller/distillers/DKD.py.
//
// Equation (p at temperature T, y the label, B samples):
//     binary split     b = [p_y, 1 - p_y]                       for student (bs) and teacher (bt)
//     TCKD             = T^2 / B * sum_b KL(bt_b || bs_b)         target-class KD
//     non-target       p_hat = softmax(z / T - 1000 * onehot(y))  (the target class masked out)
//     NCKD             = T^2 / B * sum_b KL(p_hat_t_b || p_hat_s_b)  non-target-class KD
//     L = w_ce * CE(zs, y) + min(epoch / W, 1) * (alpha * TCKD + beta * NCKD)
//         (w_ce * CE added by distill_loss, distiller.h)
// Classical KD is the special case KL(pt || ps) = TCKD + (1 - pt_y) * NCKD (per sample, before
// the T^2): DKD frees the weight of NCKD from the teacher's confidence (1 - pt_y).
//
// Official-code semantics reproduced (DKD.py, dkd_loss and DKD.forward_train):
//   - gt_mask / other_mask from the label; the masking for p_hat subtracts 1000 * gt_mask AFTER
//     dividing the logits by T (so the mask is 1000 at any T);
//   - KL with reduction sum, times T^2, divided by the batch size (true batch mean);
//   - the warm-up factor min(epoch / W, 1) multiplies both DKD terms but not CE, with epoch
//     counted from 1 (mdistiller's trainer starts at epoch 1);
//   - defaults (cfg.py): CE_WEIGHT 1, ALPHA 1, BETA 8, T 4, WARMUP 20 (of 240 epochs); the
//     published tables use BETA 2 for resnet56->resnet20 and resnet110->resnet32, 6 for
//     vgg13->vgg8 and the WRN pairs.
// Where we differ, numerically only: the official code takes torch.log of [p_y, sum of the other
// p], which underflows to log 0 when the student is very sure; here log bs is computed in log
// space (log_softmax for the target, logsumexp over the non-target logits minus logsumexp over
// all for the rest), the same value wherever the official one is finite. W = 0 means no warm-up.
// K = 2 is rejected: the non-target distribution then has one class and NCKD is always 0.
//
// Parameters (--set): the option table DkdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method dkd`).
// Loss parts: "tckd" = warm * alpha * TCKD, "nckd" = warm * beta * NCKD (after distill_loss's "ce").
#pragma once
#include "distill/distiller.h"
#include "distill/output/common.h"

namespace kd::distill {

struct DkdOptions {
  double alpha = 1.0;
  double beta = 8.0;
  double T = 4.0;
  int64_t warmup = 20;
  double ce_weight = 1.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("alpha", o.alpha, "weight of TCKD (target class)");
    f("beta", o.beta, "weight of NCKD (non-target classes); 2 for resnet56->resnet20, 6 for vgg13->vgg8 and WRN pairs");
    f("T", o.T, "temperature");
    f("warmup", o.warmup, "W: the DKD terms ramp up as min(epoch / W, 1); 0 = no warm-up");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
  }
};

// min(epoch / W, 1), epoch counted from 1; 1 when W = 0.
double dkd_warmup_factor(int64_t epoch, int64_t warmup);

// zs, zt (B, K) with K >= 3, labels (B) int64. Intermediates shown, in order: log_ps, log_pt,
// gt_mask, log_bs, bt, tckd_b, TCKD, log_p_hat_s, p_hat_t, nckd_b, NCKD, warmup_factor. The
// method's terms only (add_cross_entropy adds the CE for the whole L).
LossBreakdown dkd_loss(const Tensor& zs, const Tensor& zt, const Tensor& labels, const DkdOptions& opt, int64_t epoch,
                       const ExplainFn& explain = {});

class DkdDistiller : public Distiller {
 public:
  explicit DkdDistiller(const DkdOptions& opt) : opt_(opt) {}
  std::string name() const override { return "dkd"; }
  std::string type_name() const override { return "DKD"; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const DkdOptions& options() const { return opt_; }

 private:
  DkdOptions opt_;
};

std::shared_ptr<Distiller> make_dkd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
