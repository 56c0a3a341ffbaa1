// supervision_transfer.cpp: Gupta, Hoffman & Malik's supervision transfer (equations in the header).
#include "distill/cross_modal/supervision_transfer.h"

#include "distill/output/common.h"
#include "engine/ops.h"

namespace kd::distill {

LossBreakdown supervision_transfer_loss(const Tensor& fs, const Tensor& ft_in, nn::Layer* connector, bool on_teacher,
                                        const SupervisionTransferOptions& opt, const ExplainFn& explain) {
  KD_CHECK(fs.defined() && ft_in.defined() && fs.dim() == 4 && ft_in.dim() == 4,
           "supervision_transfer: the student's and the teacher's layers must be (B, C, H, W) maps (taps f0..fN)");
  KD_CHECK(fs.size(0) == ft_in.size(0) && fs.size(2) == ft_in.size(2) && fs.size(3) == ft_in.size(3),
           "supervision_transfer: the student map {} and the teacher map {} differ in batch or spatial size; choose "
           "layers of the same size (--set layer=... teacher_layer=...)",
           shape_str(fs.shape()), shape_str(ft_in.shape()));
  const Tensor ft = ft_in.detach();  // f_A(I) is a constant: the teacher is frozen
  Tensor teacher_side = (connector && on_teacher) ? connector->forward(ft) : ft;   // t(f_A(I))
  Tensor student_side = (connector && !on_teacher) ? connector->forward(fs) : fs;  // g_B(D) (or r(g_B(D)))
  show_step(explain, "teacher_side", teacher_side);
  show_step(explain, "student_side", student_side);
  KD_CHECK(teacher_side.shape() == student_side.shape(),
           "supervision_transfer: the two sides have shapes {} and {}; connector=identity needs maps of the same shape "
           "(use connector=teacher or student)",
           shape_str(teacher_side.shape()), shape_str(student_side.shape()));
  Tensor l = mse_loss(student_side, teacher_side);  // (1 / (B C H W)) sum ||t(f_A) - g_B||^2
  show_step(explain, "L_st", l);
  Tensor part = mul(l, opt.feat_weight);
  LossBreakdown out;
  out.total = part;
  out.parts = {{"st", part}};
  return out;
}

static void check_options(const SupervisionTransferOptions& o) {
  KD_CHECK(o.connector == "auto" || o.connector == "teacher" || o.connector == "student" || o.connector == "identity",
           "supervision_transfer: connector={} is not one of auto, teacher, student, identity", o.connector);
  KD_CHECK(o.ce_weight >= 0, "supervision_transfer: ce_weight must be >= 0, got {}", o.ce_weight);
}

SupervisionTransferDistiller::SupervisionTransferDistiller(const SupervisionTransferOptions& opt, const Shape& s,
                                                           const Shape& t, uint64_t seed)
    : opt_(opt) {
  check_options(opt_);
  KD_CHECK(s.size() == 4 && t.size() == 4 && s[2] == t[2] && s[3] == t[3],
           "supervision_transfer: the student's layer {} is {} and the teacher's layer {} is {}; they need the same "
           "spatial size (choose other layers with --set layer=... teacher_layer=...)",
           opt_.layer, shape_str(s), opt_.teacher_layer, shape_str(t));
  side_ = opt_.connector;
  if (side_ == "auto") side_ = s[1] == t[1] ? "identity" : "teacher";
  KD_CHECK(side_ != "identity" || s[1] == t[1],
           "supervision_transfer: connector=identity needs as many channels on both sides, but the student has {} and "
           "the teacher {}; use connector=teacher or student",
           s[1], t[1]);
  Generator gen(seed);
  if (side_ == "teacher") conv_ = register_module("connector", std::make_shared<nn::Conv2d>(t[1], s[1], 1, gen));
  if (side_ == "student") conv_ = register_module("connector", std::make_shared<nn::Conv2d>(s[1], t[1], 1, gen));
}

LossBreakdown SupervisionTransferDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                                 const BatchInfo&) {
  const Tensor fs = feature_tap(student, opt_.layer, "supervision_transfer", "student");
  const Tensor ft = feature_tap(teacher, opt_.teacher_layer, "supervision_transfer", "teacher");
  return supervision_transfer_loss(fs, ft, conv_.get(), side_ == "teacher", opt_, explain);
}

Params SupervisionTransferDistiller::params() const {
  Params p = option_params(opt_);
  p["connector"] = side_;
  return p;
}

std::shared_ptr<Distiller> make_supervision_transfer_distiller(const Params& params, const DistillerContext& ctx) {
  SupervisionTransferOptions o = parse_options<SupervisionTransferOptions>("supervision_transfer", params);
  if (!params.count("teacher_layer")) o.teacher_layer = o.layer;
  check_tap_name(o.layer, "supervision_transfer");
  check_tap_name(o.teacher_layer, "supervision_transfer");
  check_options(o);
  const Shape s = sample_tap_shape(ctx.student_sample, o.layer, "supervision_transfer", "student");
  const Shape t = sample_tap_shape(ctx.teacher_sample, o.teacher_layer, "supervision_transfer", "teacher");
  return std::make_shared<SupervisionTransferDistiller>(o, s, t, ctx.seed);
}

}  // namespace kd::distill
