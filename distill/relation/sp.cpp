// sp.cpp: SP (Tung & Mori 2019), mdistiller / RepDistiller semantics, as an instance of the
// relation mechanism (relation.h). The equations are in sp.h.
#include "distill/relation/sp.h"

#include "engine/ops.h"

namespace kd::distill {

RelationOptions sp_relation() {
  RelationOptions r;
  r.psi = "gram";
  r.d = "frobenius";
  r.reduction = "mean";  // ||G~_s - G~_t||_F^2 / B^2
  return r;
}

LossBreakdown sp_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs_in, const Tensor& ft_in,
                      const SpOptions& opt, const ExplainFn& explain) {
  check_logits_labels("sp", zs, Tensor(), labels);
  const int64_t B = zs.size(0);
  Tensor fs = relation_features(fs_in, B, "sp", "student");  // (B, Cs*Hs*Ws) = Q_s
  Tensor ft = relation_features(ft_in, B, "sp", "teacher");  // (B, Ct*Ht*Wt) = Q_t
  Tensor l_sp = relation_loss(fs, ft, sp_relation(), explain, "sp.");  // ()
  Tensor sp_part = mul(l_sp, opt.feat_weight);  // w_sp * L_SP
  LossBreakdown out;
  out.total = sp_part;
  out.parts = {{"sp", sp_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

LossBreakdown SpDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.layer, "sp", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_layer, "sp", "teacher");
  return sp_loss(student.logits, batch.labels, fs, ft, opt_, explain);
}

Params SpDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_sp_distiller(const Params& params, const DistillerContext&) {
  SpOptions o = parse_options<SpOptions>("sp", params);
  if (!params.count("teacher_layer")) o.teacher_layer = o.layer;
  check_tap_name(o.layer, "sp");
  check_tap_name(o.teacher_layer, "sp");
  return std::make_shared<SpDistiller>(o);
}

}  // namespace kd::distill
