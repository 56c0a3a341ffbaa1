// kd.cpp: KD (Hinton et al. 2015), mdistiller semantics. The equation is in kd.h.
#include "distill/output/kd.h"

#include "engine/ops.h"

namespace kd::distill {

LossBreakdown kd_loss(const Tensor& zs, const Tensor& zt_in, const Tensor& labels, const KdOptions& opt,
                      const ExplainFn& explain) {
  check_logits_labels("kd", zs, zt_in, labels);
  KD_CHECK(opt.T > 0, "kd: the temperature T must be > 0, got {}", opt.T);
  const double T = opt.T;
  const Tensor zt = zt_in.detach();  // the teacher is frozen: no gradient flows into it

  // softened distributions
  Tensor log_ps = log_softmax(div(zs, T), 1);  // (B, K) log ps = log softmax(zs / T)
  Tensor pt = softmax(div(zt, T), 1);          // (B, K) pt = softmax(zt / T)
  show_step(explain, "log_ps", log_ps);
  if (explain) show_step(explain, "ps", exp(log_ps.detach()));
  show_step(explain, "pt", pt);

  // KL(pt_b || ps_b) = sum_k pt_bk (log pt_bk - log ps_bk), per sample
  Tensor kl_b = sum(kl_div(log_ps, pt, Reduction::None), {1});  // (B)
  show_step(explain, "kl_b", kl_b);
  // L_kd = T^2 * mean_b KL_b  (the true batch mean)
  Tensor l_kd = mul(mean(kl_b), T * T);  // ()
  show_step(explain, "L_kd", l_kd);

  Tensor kd_part = mul(l_kd, opt.kd_weight);  // w_kd * L_kd
  LossBreakdown out;
  out.total = kd_part;
  out.parts = {{"kd", kd_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

LossBreakdown KdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  return kd_loss(student.logits, teacher.logits, batch.labels, opt_, explain);
}

Params KdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_kd_distiller(const Params& params, const DistillerContext&) {
  const KdOptions o = parse_options<KdOptions>("kd", params);
  KD_CHECK(o.T > 0, "kd: the temperature T must be > 0, got T={}", o.T);
  return std::make_shared<KdDistiller>(o);
}

}  // namespace kd::distill
