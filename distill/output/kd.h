// kd.h: KD, knowledge distillation by softened class probabilities.
//
// Paper: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
//        NIPS Deep Learning Workshop 2015 (arXiv 1503.02531).
//
// Equation (B samples, K classes, temperature T):
//     ps = softmax(zs / T),  pt = softmax(zt / T)                    (B, K)
//     L_kd = T^2 * (1/B) * sum_b KL(pt_b || ps_b)
//          = T^2 * (1/B) * sum_b sum_k pt_bk (log pt_bk - log ps_bk)
//     L = w_ce * CE(zs, y) + w_kd * L_kd          (w_ce * CE added by distill_loss, distiller.h)
// The T^2 keeps the gradient's size independent of T: dL_kd/dzs = T (ps - pt) / B.
//
// Official-code semantics reproduced (mdistiller, mdistiller/distillers/KD.py, kd_loss):
//   log_softmax for the student, F.kl_div(reduction="none").sum(1).mean() * T^2, i.e. the true
//   batch-mean KL (NOT PyTorch's default 'mean', which also divides by K); the teacher runs
//   without gradient. CIFAR-100 defaults (mdistiller cfg.py): T = 4, CE_WEIGHT 0.1, KD_WEIGHT 0.9.
//
// Parameters (--set): the option table KdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method kd`).
// Loss parts: "kd" = w_kd * L_kd (after distill_loss's "ce" = w_ce * CE).
#pragma once
#include "distill/distiller.h"
#include "distill/output/common.h"

namespace kd::distill {

struct KdOptions {
  double T = 4.0;
  double ce_weight = 0.1;
  double kd_weight = 0.9;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("T", o.T, "temperature of both softmaxes");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("kd_weight", o.kd_weight, "w_kd, the weight of L_kd");
  }
};

// zs (B, K) student logits, zt (B, K) teacher logits (detached here), labels (B) int64. The
// method's terms only: w_kd * L_kd (add_cross_entropy adds the CE for the whole L).
LossBreakdown kd_loss(const Tensor& zs, const Tensor& zt, const Tensor& labels, const KdOptions& opt,
                      const ExplainFn& explain = {});

class KdDistiller : public Distiller {
 public:
  explicit KdDistiller(const KdOptions& opt) : opt_(opt) {}
  std::string name() const override { return "kd"; }
  std::string type_name() const override { return "KD"; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const KdOptions& options() const { return opt_; }

 private:
  KdOptions opt_;
};

// Registry factory: reads T, ce_weight, kd_weight; rejects unknown keys.
std::shared_ptr<Distiller> make_kd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
