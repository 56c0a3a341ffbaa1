// rkd.h: RKD, relational knowledge distillation.
//
// Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019
//        (arXiv 1904.05068). Reference code: mdistiller (megvii-research/mdistiller),
//        mdistiller/distillers/RKD.py (rkd_loss, _pdist); RepDistiller (HobbitLong/RepDistiller),
//        distiller_zoo/RKD.py (RKDLoss), the same computation.
//
// The student learns the *shape* of the teacher's embedding of a batch, not the embedding itself:
// the distances between pairs of samples and the angles within triplets. With e = the pooled
// feature (B, D) of each network:
//     psi_D(i, j)    = ||e_i - e_j|| / mu,     mu = mean of the positive distances in the batch
//     psi_A(i, j, k) = < (e_j - e_i) / ||e_j - e_i||, (e_k - e_i) / ||e_k - e_i|| >
//     L_D = mean over B^2 pairs   of smooth_l1(psi_D^s(i, j),    psi_D^t(i, j))
//     L_A = mean over B^3 triples of smooth_l1(psi_A^s(i, j, k), psi_A^t(i, j, k))
//     L   = w_ce * CE(zs, y) + w_D * L_D + w_A * L_A               (w_ce = 1, w_D = 25, w_A = 50)
//           (w_ce * CE added by distill_loss, distiller.h)
// Both are instances of the relation mechanism (relation.h): psi=distance and psi=angle with
// d=smooth_l1 (beta = 1), reduction mean.
//
// Official-code semantics reproduced (rkd_loss, _pdist; CFG.RKD):
//   - pooled_feat of both networks (the tap `pooled`), viewed as (B, D); the teacher's relations
//     are computed under torch.no_grad (so its mu is a constant), the student's are not (its mu
//     is differentiated through);
//   - _pdist: (||e_i||^2 + ||e_j||^2 - 2 e_i.e_j).clamp(min=1e-12), sqrt (PDIST.SQUARED False),
//     the diagonal set to 0; mu = d[d > 0].mean();
//   - the angle: F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2) (eps 1e-12) and bmm;
//   - F.smooth_l1_loss with beta 1 and the mean reduction (over B^2 and B^3 entries);
//   - DISTANCE_WEIGHT 25, ANGLE_WEIGHT 50, LOSS.CE_WEIGHT 1, LOSS.FEAT_WEIGHT 1 (a factor on both,
//     here folded into the two weights).
// The paper's equations sum over pairs and triplets (its l_delta is the Huber loss); the code's
// mean is what the published CIFAR numbers use.
//
// Parameters (--set): the option table RkdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method rkd`).
// Loss parts (after distill_loss's "ce"): "distance" = w_D * L_D, "angle" = w_A * L_A. No helper
// modules.
#pragma once
#include "distill/distiller.h"
#include "distill/relation/relation.h"

namespace kd::distill {

struct RkdOptions {
  std::string tap = "pooled";
  std::string teacher_tap = "pooled";
  double ce_weight = 1.0;
  double distance_weight = 25.0;
  double angle_weight = 50.0;
  bool squared = false;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("tap", o.tap, "the student's tap (pooled, f0..fN, pre1..preN)");
    f("teacher_tap", o.teacher_tap, "the teacher's tap; when not given: tap");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("distance_weight", o.distance_weight, "the weight of the distance term");
    f("angle_weight", o.angle_weight, "the weight of the angle term");
    f("squared", o.squared, "compare squared distances");
  }
};

// The two relation terms as the general mechanism's settings.
RelationOptions rkd_distance_relation(const RkdOptions& opt);  // psi=distance, d=smooth_l1, beta 1, mean
RelationOptions rkd_angle_relation();                          // psi=angle, d=smooth_l1, beta 1, mean

// zs (B, K), labels (B), fs (B, ...) the student's tap, ft (B, ...) the teacher's (detached).
// Intermediates shown: distance.{dist_t, mu_t, psi_t, dist_s, mu_s, psi_s, L}, angle.{unit_t,
// psi_t, unit_s, psi_s, L}. The method's terms only (add_cross_entropy adds the CE).
LossBreakdown rkd_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs, const Tensor& ft,
                       const RkdOptions& opt, const ExplainFn& explain = {});

class RkdDistiller : public Distiller {
 public:
  explicit RkdDistiller(const RkdOptions& opt) : opt_(opt) {}
  std::string name() const override { return "rkd"; }
  std::string type_name() const override { return "RKD"; }
  // the teacher's pooled feature only (the teacher cache can store it), or its feature maps
  TeacherNeeds needs() const override {
    return {.feats = opt_.teacher_tap != "pooled", .pooled = opt_.teacher_tap == "pooled"};
  }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const RkdOptions& options() const { return opt_; }

 private:
  RkdOptions opt_;
};

std::shared_ptr<Distiller> make_rkd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
