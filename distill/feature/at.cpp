// at.cpp: AT (Zagoruyko & Komodakis 2017), mdistiller semantics. The equation is in at.h.
#include "distill/feature/at.h"

#include "engine/ops.h"

namespace kd::distill {

Tensor attention_map(const Tensor& f, double p) {
  KD_CHECK(f.defined() && f.dim() == 4, "at: attention maps are taken of (B, C, H, W) features, got {}",
           f.defined() ? shape_str(f.shape()) : std::string("an undefined tensor"));
  const int64_t B = f.size(0);
  Tensor energy = mean(pow(f, p), {1});         // (B, H, W) mean over channels of F^p
  Tensor flat = energy.reshape({B, -1});       // (B, H*W)
  return normalize(flat, 2.0, 1, 1e-12);       // (B, H*W) unit L2 norm per sample
}

Tensor at_stage_loss(const Tensor& fs_in, const Tensor& ft_in, double p, const ExplainFn& explain,
                     const std::string& prefix) {
  KD_CHECK(fs_in.defined() && ft_in.defined() && fs_in.dim() == 4 && ft_in.dim() == 4,
           "at: stage {}: both features must be (B, C, H, W) maps", prefix);
  KD_CHECK(fs_in.size(0) == ft_in.size(0), "at: stage {}: the student map {} and the teacher map {} differ in batch size",
           prefix, shape_str(fs_in.shape()), shape_str(ft_in.shape()));
  Tensor fs = fs_in;
  Tensor ft = ft_in.detach();  // the teacher is a constant
  // mdistiller compares heights only and pools the larger map to a square of the smaller height
  const int64_t sH = fs.size(2), tH = ft.size(2);
  if (sH > tH) fs = adaptive_avg_pool2d(fs, Int2(tH, tH));  // (B, Cs, tH, tH)
  else if (sH < tH) ft = adaptive_avg_pool2d(ft, Int2(sH, sH));  // (B, Ct, sH, sH)
  KD_CHECK(fs.size(2) == ft.size(2) && fs.size(3) == ft.size(3),
           "at: stage {}: after pooling the student map is {} and the teacher map {}; AT needs square maps or maps of "
           "the same width",
           prefix, shape_str(fs.shape()), shape_str(ft.shape()));
  Tensor a_s = attention_map(fs, p);  // (B, H*W)
  Tensor a_t = attention_map(ft, p);  // (B, H*W)
  show_step(explain, prefix + "a_s", a_s);
  show_step(explain, prefix + "a_t", a_t);
  Tensor l = mean(pow(sub(a_s, a_t), 2.0));  // () mean over B * H*W
  show_step(explain, prefix + "L_at", l);
  return l;
}

LossBreakdown at_loss(const Tensor& zs, const Tensor& labels, const std::vector<Tensor>& fs,
                      const std::vector<Tensor>& ft, const AtOptions& opt, const ExplainFn& explain) {
  check_logits_labels("at", zs, Tensor(), labels);
  KD_CHECK(fs.size() == ft.size() && fs.size() == opt.layers.size(),
           "at: {} student maps, {} teacher maps and {} layer names; give one of each per stage", fs.size(), ft.size(),
           opt.layers.size());
  KD_CHECK(!fs.empty(), "at: no stages; give at least one tap, like layers=f3");
  KD_CHECK(opt.p > 0, "at: the power p must be > 0, got p={}", opt.p);
  LossBreakdown out;
  Tensor total;  // beta * sum_l L_at^l
  for (size_t l = 0; l < fs.size(); ++l) {
    KD_CHECK(fs[l].size(0) == zs.size(0), "at: the student map {} of stage {} does not have the batch size {} of the logits",
             shape_str(fs[l].shape()), opt.layers[l], zs.size(0));
    Tensor l_at = at_stage_loss(fs[l], ft[l], opt.p, explain, opt.layers[l] + ".");
    Tensor part = mul(l_at, opt.feat_weight);
    out.parts.push_back({"at_" + opt.layers[l], part});
    total = total.defined() ? add(total, part) : part;
  }
  out.total = total;
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

LossBreakdown AtDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  std::vector<Tensor> fs, ft;
  for (size_t l = 0; l < opt_.layers.size(); ++l) {
    fs.push_back(feature_tap(student, opt_.layers[l], "at", "student"));
    ft.push_back(feature_tap(teacher, opt_.teacher_layers[l], "at", "teacher"));
  }
  return at_loss(student.logits, batch.labels, fs, ft, opt_, explain);
}

Params AtDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_at_distiller(const Params& params, const DistillerContext&) {
  AtOptions o = parse_options<AtOptions>("at", params);
  if (!params.count("teacher_layers")) o.teacher_layers = o.layers;
  check_taps(o.layers, "at");
  check_taps(o.teacher_layers, "at");
  KD_CHECK(o.layers.size() == o.teacher_layers.size(),
           "at: layers={} names {} student taps but teacher_layers={} names {}; give one teacher tap per student tap",
           join_taps(o.layers), o.layers.size(), join_taps(o.teacher_layers), o.teacher_layers.size());
  KD_CHECK(o.p > 0, "at: the power p must be > 0, got p={}", o.p);
  return std::make_shared<AtDistiller>(o);
}

}  // namespace kd::distill
