// pkt.h: PKT, probabilistic knowledge transfer.
//
// Paper: N. Passalis, A. Tefas, "Learning Deep Representations with Probabilistic Knowledge
//        Transfer", ECCV 2018 (arXiv 1803.10837). Reference code: mdistiller
//        (megvii-research/mdistiller), mdistiller/distillers/PKT.py (pkt_loss); RepDistiller
//        (HobbitLong/RepDistiller), distiller_zoo/PKT.py (cosine_similarity_loss, "code from the
//        author", passalis/probabilistic_kt), the same computation.
//
// Each network's features define, for every sample i, a probability distribution over the other
// samples of the batch ("how likely is j to be i's neighbour"), from a cosine-similarity kernel;
// the student matches the teacher's distributions under KL:
//     x_i     = e_i / (||e_i|| + eps)                                   (eps = 1e-7)
//     K_ij    = (x_i . x_j + 1) / 2                                     (the cosine kernel, in [0, 1])
//     p_{j|i} = K_ij / sum_j K_ij                                       (paper eq. 7, per row)
//     L_PKT   = mean over B^2 of p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))   (eq. 8)
//     L       = w_ce * CE(zs, y) + w_pkt * L_PKT                        (w_ce = 1, w_pkt = 30000, pooled)
//               (w_ce * CE added by distill_loss, distiller.h)
// An instance of the relation mechanism (relation.h): psi=prob with d=kl, reduction mean.
//
// Official-code semantics reproduced (cosine_similarity_loss; CFG.PKT):
//   - pooled_feat of both networks (the tap `pooled`); the teacher under torch.no_grad;
//   - the norm plus eps (not a max), the same eps = 1e-7 inside the KL's logarithm; the mean over
//     all B^2 entries (torch.mean), not the sum over j and the mean over i;
//   - LOSS.CE_WEIGHT 1, LOSS.FEAT_WEIGHT 30000 (RepDistiller: -b 30000).
//   - The code sets NaN entries of x to 0 (output_net[output_net != output_net] = 0); x cannot be
//     NaN here for finite features (the denominator is >= eps), so that step has no counterpart.
// The paper writes the divergence as a sum over the pairs; the code's torch.mean divides that sum
// by B^2, a constant factor that the weight 30000 absorbs.
//
// Parameters (--set): the option table PktOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method pkt`).
// Loss parts (after distill_loss's "ce"): "pkt" = w_pkt * L_PKT. No helper modules.
#pragma once
#include "distill/distiller.h"
#include "distill/relation/relation.h"

namespace kd::distill {

struct PktOptions {
  std::string tap = "pooled";
  std::string teacher_tap = "pooled";
  double ce_weight = 1.0;
  double feat_weight = 30000.0;
  double eps = 1e-7;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("tap", o.tap, "the student's tap (pooled, f0..fN, pre1..preN)");
    f("teacher_tap", o.teacher_tap, "the teacher's tap; when not given: tap");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("feat_weight", o.feat_weight, "the weight of L_pkt");
    f("eps", o.eps, "the constant in the norms and the logarithm");
  }
};

RelationOptions pkt_relation(double eps);  // psi=prob, d=kl, reduction mean

// zs (B, K), labels (B), fs / ft (B, ...) (ft detached). Intermediates shown:
// pkt.{cos_t, psi_t, cos_s, psi_s, L}. The method's terms only (add_cross_entropy adds the CE).
LossBreakdown pkt_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs, const Tensor& ft,
                       const PktOptions& opt, const ExplainFn& explain = {});

class PktDistiller : public Distiller {
 public:
  explicit PktDistiller(const PktOptions& opt) : opt_(opt) {}
  std::string name() const override { return "pkt"; }
  std::string type_name() const override { return "PKT"; }
  // the teacher's pooled feature only (the teacher cache can store it), or its feature maps
  TeacherNeeds needs() const override {
    return {.feats = opt_.teacher_tap != "pooled", .pooled = opt_.teacher_tap == "pooled"};
  }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const PktOptions& options() const { return opt_; }

 private:
  PktOptions opt_;
};

std::shared_ptr<Distiller> make_pkt_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
