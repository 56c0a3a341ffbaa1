// sp.h: SP, similarity-preserving knowledge distillation.
//
// Paper: F. Tung, G. Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019
//        (arXiv 1907.09682). Reference code: mdistiller (megvii-research/mdistiller),
//        mdistiller/distillers/SP.py (similarity_loss, sp_loss); RepDistiller
//        (HobbitLong/RepDistiller), distiller_zoo/SP.py (Similarity), the same computation.
//
// Samples that the teacher finds similar (similar activations) should be similar for the student
// too. With Q = a stage's map flattened to (B, C*H*W) for each network:
//     G = Q Q^T  (B, B),   G~ = G with each row L2-normalised          (paper eq. 1-2)
//     L_SP = ||G~_s - G~_t||_F^2 / B^2                                    (paper eq. 3-4)
//     L    = w_ce * CE(zs, y) + w_sp * L_SP                   (w_ce = 1, w_sp = 3000, the last stage)
//            (w_ce * CE added by distill_loss, distiller.h)
// An instance of the relation mechanism (relation.h): psi=gram with d=frobenius, reduction mean
// (the B^2 entries). The Gram matrix compares samples of one network, so the student's and the
// teacher's maps may differ in channels and size.
//
// Official-code semantics reproduced (similarity_loss; CFG.SP):
//   - feats[-1] of both networks (the last stage's output after its ReLU): the tap f3 for the
//     ResNets, WRNs and ShuffleNets, f4 for VGG and MobileNetV2 (set layer=); the teacher runs
//     under torch.no_grad;
//   - G = torch.mm(f, f.t()); torch.nn.functional.normalize(G) (dim 1, eps 1e-12);
//     (G_t - G_s)^2 summed and divided by bsz * bsz;
//   - LOSS.CE_WEIGHT 1, LOSS.FEAT_WEIGHT 3000 (RepDistiller: -b 3000).
// The paper's γ = 3000 multiplies the same B^2-normalised sum (its eq. 4), so paper and code agree.
//
// Parameters (--set): the option table SpOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method sp`).
// Loss parts (after distill_loss's "ce"): "sp" = w_sp * L_SP. No helper modules.
#pragma once
#include "distill/distiller.h"
#include "distill/relation/relation.h"

namespace kd::distill {

struct SpOptions {
  std::string layer = "f3";
  std::string teacher_layer = "f3";
  double ce_weight = 1.0;
  double feat_weight = 3000.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("layer", o.layer, "the student's tap (f0..fN, pre1..preN)");
    f("teacher_layer", o.teacher_layer, "the teacher's tap; when not given: layer");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("feat_weight", o.feat_weight, "gamma, the weight of L_sp");
  }
};

RelationOptions sp_relation();  // psi=gram, d=frobenius, reduction mean

// zs (B, K), labels (B), fs (B, Cs, Hs, Ws) / ft (B, Ct, Ht, Wt) (or any (B, ...)); ft detached.
// Intermediates shown: sp.{gram_t, psi_t, gram_s, psi_s, L}. The method's terms only (add_cross_entropy adds the CE).
LossBreakdown sp_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs, const Tensor& ft, const SpOptions& opt,
                      const ExplainFn& explain = {});

class SpDistiller : public Distiller {
 public:
  explicit SpDistiller(const SpOptions& opt) : opt_(opt) {}
  std::string name() const override { return "sp"; }
  std::string type_name() const override { return "SP"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const SpOptions& options() const { return opt_; }

 private:
  SpOptions opt_;
};

std::shared_ptr<Distiller> make_sp_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
