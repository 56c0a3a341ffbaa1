// at.h: AT, attention transfer.
//
// Paper: S. Zagoruyko, N. Komodakis, "Paying More Attention to Attention: Improving the
//        Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017
//        (arXiv 1612.03928). Reference code: mdistiller (megvii-research/mdistiller),
//        mdistiller/distillers/AT.py (after szagoruyko/attention-transfer).
//
// A spatial attention map summarises where a network "looks": the mean over channels of the
// p-th power of the activations, flattened and L2-normalised per sample. The student's maps are
// pulled towards the teacher's at several stages:
//     a(F)   = normalize(mean_c F_c^p  reshaped to (B, H*W))      normalize: x / max(||x||_2, 1e-12)
//     L_at^l = mean over (B, H*W) of (a(Fs^l) - a(Ft^l))^2         for each stage l
//     L      = w_ce * CE(zs, y) + beta * sum_l L_at^l               (beta = 1000, p = 2, l = f1, f2, f3)
//              (w_ce * CE added by distill_loss, distiller.h)
// When the two maps of a stage differ in size, the larger one is adaptive-average-pooled to the
// smaller one's height (square output, as mdistiller does) before taking a().
//
// Official-code semantics reproduced (AT.py, single_stage_at_loss and at_loss):
//   - feats[1:] of both networks, i.e. f1, f2, f3 after each stage's ReLU; the teacher's maps
//     are constants (torch.no_grad);
//   - F.normalize(feat.pow(p).mean(1).reshape(B, -1)) (dim 1, eps 1e-12), then
//     (a_s - a_t).pow(2).mean() per stage, summed over the stages;
//   - pooling compares heights only: s_H > t_H pools the student to (t_H, t_H), s_H < t_H the
//     teacher to (s_H, s_H);
//   - cfg AT.P = 2, CE_WEIGHT 1, FEAT_WEIGHT 1000.
// The paper writes the term as beta/2 * sum_l || a_s - a_t ||_p with the same beta = 1000 and the
// authors' code takes the mean, so it weighs the sum of means by 500: set feat_weight=500 for that.
// The attention map does not change when a feature map is scaled by c > 0 (the normalisation
// removes c^p), so AT is invariant to the scale of each network's activations.
//
// Parameters (--set): the option table AtOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method at`).
// Loss parts (after distill_loss's "ce"): one "at_<tap>" = beta * L_at^l per stage (named by the
// student's tap), which add up to the total. No helper modules.
#pragma once
#include "distill/distiller.h"
#include "distill/feature/common.h"

namespace kd::distill {

struct AtOptions {
  std::vector<std::string> layers{"f1", "f2", "f3"};
  std::vector<std::string> teacher_layers{"f1", "f2", "f3"};
  double p = 2.0;
  double ce_weight = 1.0;
  double feat_weight = 1000.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("layers", o.layers, "the student's taps, one stage each");
    f("teacher_layers", o.teacher_layers, "the teacher's taps, one per student tap; when not given: layers");
    f("p", o.p, "the power of the activations in the attention map");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("feat_weight", o.feat_weight, "beta, the weight of every stage's L_at (500 for the paper's beta/2)");
  }
};

// a(F): f (B, C, H, W) -> (B, H*W), normalize(mean_c f^p) per sample.
Tensor attention_map(const Tensor& f, double p);

// L_at of one stage: fs (B, Cs, Hs, Ws), ft (B, Ct, Ht, Wt) (detached here), the larger map
// pooled first. `prefix` names the intermediates shown ("f1." -> "f1.a_s", "f1.a_t", "f1.L_at").
Tensor at_stage_loss(const Tensor& fs, const Tensor& ft, double p, const ExplainFn& explain = {},
                     const std::string& prefix = "");

// zs (B, K), labels (B), fs[l] / ft[l] the maps of stage l. Part names come from opt.layers.
// Intermediates shown per stage (<tap>.a_s, <tap>.a_t, <tap>.L_at). The method's terms only
// (add_cross_entropy adds the CE for the whole L).
LossBreakdown at_loss(const Tensor& zs, const Tensor& labels, const std::vector<Tensor>& fs,
                      const std::vector<Tensor>& ft, const AtOptions& opt, const ExplainFn& explain = {});

class AtDistiller : public Distiller {
 public:
  explicit AtDistiller(const AtOptions& opt) : opt_(opt) {}
  std::string name() const override { return "at"; }
  std::string type_name() const override { return "AT"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const AtOptions& options() const { return opt_; }

 private:
  AtOptions opt_;
};

std::shared_ptr<Distiller> make_at_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
