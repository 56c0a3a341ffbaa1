// rkd.cpp: RKD (Park et al. 2019), mdistiller / RepDistiller semantics, as two instances of the
// relation mechanism (relation.h). The equations are in rkd.h.
#include "distill/relation/rkd.h"

#include "engine/ops.h"

namespace kd::distill {

RelationOptions rkd_distance_relation(const RkdOptions& opt) {
  RelationOptions r;
  r.psi = "distance";
  r.d = "smooth_l1";
  r.beta = 1.0;
  r.reduction = "mean";
  r.squared = opt.squared;
  return r;
}

RelationOptions rkd_angle_relation() {
  RelationOptions r;
  r.psi = "angle";
  r.d = "smooth_l1";
  r.beta = 1.0;
  r.reduction = "mean";
  return r;
}

LossBreakdown rkd_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs_in, const Tensor& ft_in,
                       const RkdOptions& opt, const ExplainFn& explain) {
  check_logits_labels("rkd", zs, Tensor(), labels);
  const int64_t B = zs.size(0);
  Tensor fs = relation_features(fs_in, B, "rkd", "student");  // (B, Ds)
  Tensor ft = relation_features(ft_in, B, "rkd", "teacher");  // (B, Dt)
  Tensor l_d = relation_loss(fs, ft, rkd_distance_relation(opt), explain, "distance.");  // ()
  Tensor l_a = relation_loss(fs, ft, rkd_angle_relation(), explain, "angle.");           // ()
  Tensor d_part = mul(l_d, opt.distance_weight);  // w_D * L_D
  Tensor a_part = mul(l_a, opt.angle_weight);     // w_A * L_A
  LossBreakdown out;
  out.total = add(d_part, a_part);
  out.parts = {{"distance", d_part}, {"angle", a_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

LossBreakdown RkdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.tap, "rkd", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_tap, "rkd", "teacher");
  return rkd_loss(student.logits, batch.labels, fs, ft, opt_, explain);
}

Params RkdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_rkd_distiller(const Params& params, const DistillerContext&) {
  RkdOptions o = parse_options<RkdOptions>("rkd", params);
  if (!params.count("teacher_tap")) o.teacher_tap = o.tap;
  check_tap_name(o.tap, "rkd");
  check_tap_name(o.teacher_tap, "rkd");
  return std::make_shared<RkdDistiller>(o);
}

}  // namespace kd::distill
