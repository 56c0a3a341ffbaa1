// pkt.cpp: PKT (Passalis & Tefas 2018), mdistiller / RepDistiller semantics, as an instance of
// the relation mechanism (relation.h). The equations are in pkt.h.
#include "distill/relation/pkt.h"

#include "engine/ops.h"

namespace kd::distill {

RelationOptions pkt_relation(double eps) {
  RelationOptions r;
  r.psi = "prob";
  r.d = "kl";
  r.eps = eps;
  r.reduction = "mean";  // torch.mean over the B^2 entries
  return r;
}

LossBreakdown pkt_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs_in, const Tensor& ft_in,
                       const PktOptions& opt, const ExplainFn& explain) {
  check_logits_labels("pkt", zs, Tensor(), labels);
  KD_CHECK(opt.eps > 0, "pkt: eps must be > 0, got eps={}", opt.eps);
  const int64_t B = zs.size(0);
  Tensor fs = relation_features(fs_in, B, "pkt", "student");  // (B, Ds)
  Tensor ft = relation_features(ft_in, B, "pkt", "teacher");  // (B, Dt)
  Tensor l_pkt = relation_loss(fs, ft, pkt_relation(opt.eps), explain, "pkt.");  // ()
  Tensor pkt_part = mul(l_pkt, opt.feat_weight);  // w_pkt * L_PKT
  LossBreakdown out;
  out.total = pkt_part;
  out.parts = {{"pkt", pkt_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

LossBreakdown PktDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.tap, "pkt", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_tap, "pkt", "teacher");
  return pkt_loss(student.logits, batch.labels, fs, ft, opt_, explain);
}

Params PktDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_pkt_distiller(const Params& params, const DistillerContext&) {
  PktOptions o = parse_options<PktOptions>("pkt", params);
  if (!params.count("teacher_tap")) o.teacher_tap = o.tap;
  check_tap_name(o.tap, "pkt");
  check_tap_name(o.teacher_tap, "pkt");
  KD_CHECK(o.eps > 0, "pkt: eps must be > 0, got eps={}", o.eps);
  return std::make_shared<PktDistiller>(o);
}

}  // namespace kd::distill
