// fitnet.cpp: FitNets (Romero et al. 2015), mdistiller semantics; the hint stage of the paper's
// two-stage schedule (the regime is in fitnet_run.cpp). The equations are in fitnet.h.
#include "distill/feature/fitnet.h"

#include "engine/ops.h"

namespace kd::distill {

int64_t fitnet_stage(const FitNetOptions& opt, int64_t epoch) {
  if (opt.stages == 1) return 1;
  return epoch <= opt.hint_epochs ? 1 : 2;
}

static void check_options(const FitNetOptions& o) {
  KD_CHECK(o.stages == 1 || o.stages == 2,
           "fitnet: stages={} is not a schedule; stages=1 is mdistiller's CE + hint loss, stages=2 the paper's hint "
           "training followed by KD",
           o.stages);
  KD_CHECK(o.stages == 1 || o.hint_epochs >= 1,
           "fitnet: stages=2 needs the length of the hint stage: give hint_epochs=N (N >= 1 epochs of hint training "
           "before KD)");
  KD_CHECK(o.stages == 2 || o.hint_epochs == 0,
           "fitnet: hint_epochs={} is only used with stages=2; add stages=2 or remove hint_epochs", o.hint_epochs);
  KD_CHECK(o.kd.T > 0, "fitnet: the stage-2 temperature T must be > 0, got T={}", o.kd.T);
}

LossBreakdown fitnet_loss(const Tensor& fs, const Tensor& ft_in, ConvReg& regressor, const FitNetOptions& opt,
                          const ExplainFn& explain) {
  check_options(opt);
  KD_CHECK(fs.defined() && ft_in.defined() && fs.dim() == 4 && ft_in.dim() == 4,
           "fitnet: the guided (student) and hint (teacher) features must be (B, C, H, W) maps");
  KD_CHECK(fs.size(0) == ft_in.size(0), "fitnet: the student feature {} and teacher feature {} differ in batch size",
           shape_str(fs.shape()), shape_str(ft_in.shape()));
  const Tensor ft = ft_in.detach();  // the hint is a constant of the loss
  Tensor regressed = regressor.forward(fs);  // (B, Ct, Ht, Wt) = r(v_g)
  show_step(explain, "regressed", regressed);
  show_step(explain, "hint_target", ft);
  KD_CHECK(regressed.shape() == ft.shape(),
           "fitnet: the regressor ({}) maps the student feature {} to {}, but the teacher's hint is {}; the regressor "
           "was sized for other feature shapes (build the distiller from a sample batch of the same input size)",
           regressor.kind(), shape_str(fs.shape()), shape_str(regressed.shape()), shape_str(ft.shape()));
  Tensor l_hint = mse_loss(regressed, ft);  // () mean over B * Ct * Ht * Wt
  show_step(explain, "L_hint", l_hint);
  Tensor hint_part = mul(l_hint, opt.feat_weight);  // w_feat * L_hint

  LossBreakdown out;
  out.total = hint_part;
  out.parts = {{"hint", hint_part}};  // distill_loss adds w_ce * CE(zs, y), or nothing in the hint stage
  return out;
}

std::optional<double> fitnet_ce_weight(const FitNetOptions& opt) {
  if (opt.stages == 1) return opt.ce_weight;
  return std::nullopt;  // the hint stage of the two-stage form: no CE at all
}

Params fitnet_stage2_kd_params(const FitNetOptions& opt) {
  return {{"T", format_number(opt.kd.T)},
          {"ce_weight", format_number(opt.kd.ce_weight)},
          {"kd_weight", format_number(opt.kd.kd_weight)}};
}

FitNetDistiller::FitNetDistiller(const FitNetOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed)
    : opt_(opt) {
  check_options(opt_);
  Generator gen(seed);
  conv_reg_ = register_module("conv_reg", std::make_shared<ConvReg>(s_shape, t_shape, gen, true, "fitnet"));
}

LossBreakdown FitNetDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                    const BatchInfo& batch) {
  check_logits_labels("fitnet", student.logits, teacher.logits, batch.labels);
  const Tensor fs = feature_tap(student, opt_.hint_layer, "fitnet", "student");
  const Tensor ft = feature_tap(teacher, opt_.teacher_layer, "fitnet", "teacher");
  return fitnet_loss(fs, ft, *conv_reg_, opt_, explain);
}

Params FitNetDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_fitnet_distiller(const Params& params, const DistillerContext& ctx) {
  FitNetOptions o = parse_options<FitNetOptions>("fitnet", params);
  if (!params.count("teacher_layer")) o.teacher_layer = o.hint_layer;
  check_tap_name(o.hint_layer, "fitnet");
  check_tap_name(o.teacher_layer, "fitnet");
  check_options(o);
  const Shape s = sample_tap_shape(ctx.student_sample, o.hint_layer, "fitnet", "student");
  const Shape t = sample_tap_shape(ctx.teacher_sample, o.teacher_layer, "fitnet", "teacher");
  return std::make_shared<FitNetDistiller>(o, s, t, ctx.seed);
}

}  // namespace kd::distill
