// catkd.cpp: CAT-KD (Guo et al. CVPR 2023), the official code's semantics. The equations are in
// catkd.h.
#include "distill/feature/catkd.h"

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

Tensor fc_to_conv1x1(const Tensor& fc_weight) {
  KD_CHECK(fc_weight.defined() && fc_weight.dim() == 2,
           "catkd: a classifier weight is (K, C) (K classes, C channels), got {}",
           fc_weight.defined() ? shape_str(fc_weight.shape()) : std::string("an undefined tensor"));
  return fc_weight.reshape({fc_weight.size(0), fc_weight.size(1), 1, 1});  // (K, C, 1, 1), the bias dropped
}

Tensor class_activation_maps(const Tensor& map, const Tensor& fc_weight) {
  KD_CHECK(map.defined() && map.dim() == 4,
           "catkd: class activation maps are taken of the (B, C, H, W) map before the global pooling, got {}",
           map.defined() ? shape_str(map.shape()) : std::string("an undefined tensor"));
  Tensor w = fc_to_conv1x1(fc_weight);  // (K, C, 1, 1)
  KD_CHECK(w.size(1) == map.size(1),
           "catkd: the classifier weight {} expects {} channels but the feature map {} has {}; the weight and the map "
           "must come from the same network",
           shape_str(fc_weight.shape()), w.size(1), shape_str(map.shape()), map.size(1));
  return conv2d(map, w);  // (B, K, H, W) = sum_c W[k, c] F[b, c, h, w], no bias
}

Tensor binarize_cams(const Tensor& cam) {
  KD_CHECK(cam.dim() == 4, "catkd: CAMs are (B, K, H, W), got {}", shape_str(cam.shape()));
  Tensor threshold = mean(abs(cam), {2, 3}, /*keepdim=*/true);  // (B, K, 1, 1) = ||CAM||_1 / (H W)
  return gt(sub(cam, threshold), 0.0).to(DType::f32);           // (B, K, H, W) in {0, 1}
}

Tensor normalize_cams(const Tensor& maps) {
  KD_CHECK(maps.dim() == 4, "catkd: CAMs are (B, K, H, W), got {}", shape_str(maps.shape()));
  const int64_t B = maps.size(0), K = maps.size(1), H = maps.size(2), W = maps.size(3);
  Tensor flat = maps.reshape({B, K, H * W});                    // (B, K, H*W)
  return normalize(flat, 2.0, 2, 1e-12).reshape({B, K, H, W});  // unit L2 norm per map
}

Tensor transferred_cams(const Tensor& cam, int64_t r, bool normalize_maps) {
  KD_CHECK(cam.dim() == 4, "catkd: CAMs are (B, K, H, W), got {}", shape_str(cam.shape()));
  KD_CHECK(r >= 1, "catkd: the CAM resolution r must be >= 1, got r={}", r);
  Tensor pooled = adaptive_avg_pool2d(cam, Int2(r, r));  // (B, K, r, r) = P_r(CAM)
  return normalize_maps ? normalize_cams(pooled) : pooled;
}

LossBreakdown catkd_loss(const Tensor& zs, const Tensor& labels, const Tensor& cam_s, const Tensor& cam_t_in,
                         const CatKdOptions& opt, const ExplainFn& explain) {
  check_logits_labels("catkd", zs, Tensor(), labels);
  KD_CHECK(cam_s.defined() && cam_t_in.defined() && cam_s.dim() == 4 && cam_t_in.dim() == 4,
           "catkd: the student's and the teacher's CAMs must be (B, K, H, W) maps");
  KD_CHECK(cam_s.size(0) == zs.size(0) && cam_t_in.size(0) == zs.size(0) && cam_s.size(1) == zs.size(1) &&
               cam_t_in.size(1) == zs.size(1),
           "catkd: the student's CAMs {} and the teacher's {} must be (B, K, H, W) with the logits' B = {} and K = {}",
           shape_str(cam_s.shape()), shape_str(cam_t_in.shape()), zs.size(0), zs.size(1));
  KD_CHECK(opt.r >= 1, "catkd: the CAM resolution r must be >= 1, got r={}", opt.r);
  Tensor cam_t = cam_t_in.detach();  // the teacher is a constant
  show_step(explain, "cam_s", cam_s);
  show_step(explain, "cam_t", cam_t);
  if (opt.binarize) {
    cam_t = binarize_cams(cam_t);
    show_step(explain, "cam_t_binary", cam_t);
  }
  Tensor p_s = transferred_cams(cam_s, opt.r, false);  // (B, K, r, r) = P_r(CAM_s)
  Tensor p_t = transferred_cams(cam_t, opt.r, false);  // (B, K, r, r) = P_r(CAM_t)
  show_step(explain, "P_cam_s", p_s);
  show_step(explain, "P_cam_t", p_t);
  if (opt.normalize) {
    p_s = normalize_cams(p_s);  // (B, K, r, r) = N(P_r(CAM_s))
    p_t = normalize_cams(p_t);  // (B, K, r, r) = N(P_r(CAM_t))
    show_step(explain, "N_cam_s", p_s);
    show_step(explain, "N_cam_t", p_t);
  }
  Tensor l_cat = mse_loss(p_s, p_t);  // () mean over B * K * r * r
  show_step(explain, "L_cat", l_cat);
  LossBreakdown out;
  Tensor cat_part = mul(l_cat, opt.beta);  // beta * L_cat
  out.total = cat_part;
  out.parts = {{"cat", cat_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

ClassifierParams find_classifier(nn::Classifier& model, int64_t K, int64_t C, const std::string& side) {
  const nn::ClassifierHead head = model.classifier_head();
  KD_CHECK(head.weight.size(0) == K && head.weight.size(1) == C,
           "catkd: the {}'s classifier '{}' has weight {} but CAT-KD needs ({}, {}) (K classes x the channels of its "
           "last feature map) to turn it into a 1x1 conv",
           side, head.name, shape_str(head.weight.shape()), K, C);
  KD_CHECK(!head.bias.defined() || (head.bias.dim() == 1 && head.bias.size(0) == K),
           "catkd: the {}'s classifier bias '{}.bias' has shape {}; expected ({})", side, head.name,
           shape_str(head.bias.shape()), K);
  ClassifierParams c;
  const std::string prefix = head.name.empty() ? "" : head.name + ".";
  c.weight_name = prefix + "weight";
  c.weight = head.weight;
  if (head.bias.defined()) {
    c.bias_name = prefix + "bias";
    c.bias = head.bias;
  }
  return c;
}

CatKdDistiller::CatKdDistiller(const CatKdOptions& opt, Tensor w_s, Tensor w_t)
    : opt_(opt), w_s_(std::move(w_s)), w_t_(w_t.defined() ? w_t.detach() : w_t) {}

Tensor CatKdDistiller::cams_of(const nn::ModelOutput& out, const Tensor& w, const std::string& side) const {
  if (out.cam.defined()) return out.cam;  // given (kdlab loss --student-feat cam=...)
  KD_CHECK(w.defined(),
           "catkd: no CAMs for the {0}: give them as the `cam` tap (kdlab loss --{0}-feat cam=FILE.npy, (B, K, H, W)), "
           "or build the distiller with the networks (DistillerContext::student_model / teacher_model, which "
           "prepare_distill_run fills) so that they are computed from the {0}'s classifier",
           side);
  KD_CHECK(out.pooled_map.defined(),
           "catkd: the {} network gives no feature map before its global pooling (ModelOutput::pooled_map); CAT-KD "
           "needs a convolutional network whose classifier pools a (B, C, H, W) map (a ViT's class token has no map)",
           side);
  return class_activation_maps(out.pooled_map, w);  // (B, K, H, W)
}

LossBreakdown CatKdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                   const BatchInfo& batch) {
  Tensor cam_s = cams_of(student, w_s_, "student");
  Tensor cam_t;
  {
    NoGradGuard ng;  // the teacher's CAMs are constants
    cam_t = cams_of(teacher, w_t_, "teacher");
  }
  return catkd_loss(student.logits, batch.labels, cam_s, cam_t, opt_, explain);
}

Params CatKdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_catkd_distiller(const Params& params, const DistillerContext& ctx) {
  const CatKdOptions o = parse_options<CatKdOptions>("catkd", params);
  KD_CHECK(o.r >= 1, "catkd: the CAM resolution r must be >= 1 (2 or 4 in the official configs), got r={}", o.r);

  Tensor w_s, w_t;
  auto classifier_of = [&](const std::shared_ptr<nn::Classifier>& model, const nn::ModelOutput& sample,
                           const std::string& side) -> ClassifierParams {
    KD_CHECK(sample.pooled_map.defined() && sample.pooled_map.dim() == 4,
             "catkd: the {} network's sample output has no feature map before its global pooling "
             "(ModelOutput::pooled_map); CAT-KD needs a convolutional network (not a ViT)",
             side);
    const int64_t K = ctx.num_classes > 0 ? ctx.num_classes : sample.logits.size(1);
    return find_classifier(*model, K, sample.pooled_map.size(1), side);
  };
  if (ctx.student_model && !ctx.student_sample.cam.defined()) {
    ClassifierParams c = classifier_of(ctx.student_model, ctx.student_sample, "student");
    w_s = c.weight;  // the live parameter: the CAT loss trains it
    if (!o.student_bias && c.bias.defined()) {
      // The official student's classifier is a bias-free 1x1 conv: logits = the mean of its CAMs.
      NoGradGuard ng;
      c.bias.zero_();
      c.bias.requires_grad_(false);  // frozen at 0: the optimizer leaves it out
    }
  }
  if (ctx.teacher_model && !ctx.teacher_sample.cam.defined())
    w_t = classifier_of(ctx.teacher_model, ctx.teacher_sample, "teacher").weight.detach();  // bias dropped
  KD_CHECK(w_s.defined() || ctx.student_sample.cam.defined() || !ctx.student_sample.logits.defined(),
           "catkd: no CAMs for the student: give the `cam` tap (kdlab loss --student-feat cam=FILE.npy, (B, K, H, W)) "
           "or the student network (DistillerContext::student_model)");
  KD_CHECK(w_t.defined() || ctx.teacher_sample.cam.defined() || !ctx.teacher_sample.logits.defined(),
           "catkd: no CAMs for the teacher: give the `cam` tap (kdlab loss --teacher-feat cam=FILE.npy, (B, K, H, W)) "
           "or the teacher network (DistillerContext::teacher_model)");
  return std::make_shared<CatKdDistiller>(o, w_s, w_t);
}

}  // namespace kd::distill
