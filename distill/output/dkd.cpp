// dkd.cpp: DKD (Zhao et al. 2022), mdistiller semantics. The equation is in dkd.h.
#include "distill/output/dkd.h"

#include <algorithm>
#include <cmath>

#include "engine/ops.h"

namespace kd::distill {

namespace {

// log b = [log p_y, log(1 - p_y)] of one network, computed in log space:
//   log p_y       = log_softmax(z / T)[y]
//   log(1 - p_y)  = logsumexp_{k != y}(z_k / T) - logsumexp_k(z_k / T)
// z_T (B, K) = z / T, log_p (B, K) = log_softmax(z_T), gt_mask (B, K) u8, y (B, 1) int64.
Tensor binary_log_split(const Tensor& z_T, const Tensor& log_p, const Tensor& gt_mask, const Tensor& y) {
  Tensor log_b_target = gather(log_p, 1, y);                                             // (B, 1)
  Tensor lse_other = logsumexp(masked_fill(z_T, gt_mask, -INFINITY), {1}, /*keepdim=*/true);  // (B, 1)
  Tensor lse_all = logsumexp(z_T, {1}, /*keepdim=*/true);                                // (B, 1)
  Tensor log_b_other = sub(lse_other, lse_all);                                          // (B, 1)
  return cat({log_b_target, log_b_other}, 1);                                            // (B, 2)
}

}  // namespace

double dkd_warmup_factor(int64_t epoch, int64_t warmup) {
  if (warmup <= 0) return 1.0;
  return std::min((double)epoch / (double)warmup, 1.0);
}

LossBreakdown dkd_loss(const Tensor& zs, const Tensor& zt_in, const Tensor& labels, const DkdOptions& opt, int64_t epoch,
                       const ExplainFn& explain) {
  check_logits_labels("dkd", zs, zt_in, labels);
  const int64_t B = zs.size(0), K = zs.size(1);
  KD_CHECK(K >= 3,
           "dkd: the logits have K = {} classes; DKD needs K >= 3 (with 2 classes the non-target distribution has a "
           "single class, so NCKD is always 0 and DKD reduces to a reweighted KD); use method kd instead",
           K);
  KD_CHECK(opt.T > 0, "dkd: the temperature T must be > 0, got {}", opt.T);
  KD_CHECK(opt.warmup >= 0, "dkd: warmup must be >= 0 epochs, got {}", opt.warmup);
  KD_CHECK(epoch >= 1, "dkd: epoch {} given; epochs are counted from 1 (the warm-up factor is min(epoch / W, 1))", epoch);
  const double T = opt.T;
  const Tensor zt = zt_in.detach();  // the teacher is frozen
  const Tensor y = labels.reshape({B, 1});

  Tensor zs_T = div(zs, T);  // (B, K)
  Tensor zt_T = div(zt, T);  // (B, K)
  Tensor log_ps = log_softmax(zs_T, 1);  // (B, K)
  Tensor log_pt = log_softmax(zt_T, 1);  // (B, K)
  show_step(explain, "log_ps", log_ps);
  show_step(explain, "log_pt", log_pt);
  Tensor gt_mask = target_mask(labels, K);  // (B, K) u8, 1 at the label
  show_step(explain, "gt_mask", gt_mask);

  // ---- TCKD: KL between the binary distributions b = [p_y, 1 - p_y]
  Tensor log_bs = binary_log_split(zs_T, log_ps, gt_mask, y);  // (B, 2)
  Tensor log_bt = binary_log_split(zt_T, log_pt, gt_mask, y);  // (B, 2)
  Tensor bt = exp(log_bt);                                     // (B, 2)
  show_step(explain, "log_bs", log_bs);
  show_step(explain, "bt", bt);
  // KL(bt || bs) = sum_i bt_i (log bt_i - log bs_i), per sample
  Tensor tckd_b = sum(kl_div(log_bs, log_bt, Reduction::None, /*log_target=*/true), {1});  // (B)
  show_step(explain, "tckd_b", tckd_b);
  Tensor tckd = mul(sum(tckd_b), T * T / (double)B);  // ()
  show_step(explain, "TCKD", tckd);

  // ---- NCKD: KL between the distributions over the non-target classes
  Tensor mask_1000 = mul(one_hot(labels, K), 1000.0);  // (B, K): 1000 at the label, after dividing by T
  Tensor log_p_hat_s = log_softmax(sub(zs_T, mask_1000), 1);  // (B, K)
  Tensor p_hat_t = softmax(sub(zt_T, mask_1000), 1);          // (B, K), ~0 at the label
  show_step(explain, "log_p_hat_s", log_p_hat_s);
  show_step(explain, "p_hat_t", p_hat_t);
  Tensor nckd_b = sum(kl_div(log_p_hat_s, p_hat_t, Reduction::None), {1});  // (B)
  show_step(explain, "nckd_b", nckd_b);
  Tensor nckd = mul(sum(nckd_b), T * T / (double)B);  // ()
  show_step(explain, "NCKD", nckd);

  // ---- warm-up and total
  const double warm = dkd_warmup_factor(epoch, opt.warmup);
  show_step(explain, "warmup_factor", scalar_tensor(warm));

  Tensor tckd_part = mul(tckd, warm * opt.alpha);  // warm * alpha * TCKD
  Tensor nckd_part = mul(nckd, warm * opt.beta);   // warm * beta * NCKD
  LossBreakdown out;
  out.total = add(tckd_part, nckd_part);
  out.parts = {{"tckd", tckd_part}, {"nckd", nckd_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y), not warmed up
}

LossBreakdown DkdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  return dkd_loss(student.logits, teacher.logits, batch.labels, opt_, batch.epoch, explain);
}

Params DkdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_dkd_distiller(const Params& params, const DistillerContext& ctx) {
  const DkdOptions o = parse_options<DkdOptions>("dkd", params);
  KD_CHECK(o.T > 0, "dkd: the temperature T must be > 0, got T={}", o.T);
  KD_CHECK(o.warmup >= 0, "dkd: warmup must be >= 0 epochs (0 = no warm-up), got warmup={}", o.warmup);
  KD_CHECK(ctx.num_classes == 0 || ctx.num_classes >= 3,
           "dkd: the data set has {} classes; DKD needs K >= 3 (NCKD is undefined for 2); use method kd", ctx.num_classes);
  return std::make_shared<DkdDistiller>(o);
}

}  // namespace kd::distill
