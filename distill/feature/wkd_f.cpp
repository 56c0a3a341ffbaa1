// wkd_f.cpp: WKD-F (Lv, Yang, Li 2024), the official code's diagonal-Gaussian Wasserstein
// feature loss. The equations are in wkd_f.h.
#include "distill/feature/wkd_f.h"

#include <cmath>
#include <numbers>

#include "engine/ops.h"

namespace kd::distill {

double wkd_f_weight(double weight, int64_t epoch, int64_t decay_epoch, int64_t total_epochs) {
  if (epoch <= decay_epoch) return weight;
  KD_CHECK(total_epochs > decay_epoch,
           "wkd_f: epoch {} is past decay_epoch {}, but the run's total epochs ({}) are not; the cosine decay of the "
           "feature weight needs total_epochs > decay_epoch (set BatchInfo::total_epochs, or a larger decay_epoch)",
           epoch, decay_epoch, total_epochs);
  const double progress = (double)(epoch - decay_epoch) / (double)(total_epochs - decay_epoch);
  return 0.5 * weight * (1.0 + std::cos(progress * std::numbers::pi));
}

ChannelGaussians channel_gaussians(const Tensor& f, int64_t g, double eps) {
  KD_CHECK(f.defined() && f.dim() == 4, "wkd_f: channel statistics are taken of (B, C, H, W) maps, got {}",
           f.defined() ? shape_str(f.shape()) : std::string("an undefined tensor"));
  KD_CHECK(g >= 1, "wkd_f: the spatial grid must be >= 1 (1 = statistics over the whole map), got grid={}", g);
  const int64_t H = f.size(2), W = f.size(3);
  KD_CHECK(g <= H && g <= W, "wkd_f: a {}x{} grid does not fit a {}x{} map; use grid <= {}", g, g, H, W,
           std::min(H, W));
  if (g == 1) {
    KD_CHECK(H * W >= 2, "wkd_f: a 1x1 map has no unbiased variance; distil a larger feature map");
    Tensor mu = mean(f, {2, 3}, /*keepdim=*/true);                                   // (B, C, 1, 1)
    Tensor sigma = sqrt(add(var(f, {2, 3}, /*unbiased=*/true, /*keepdim=*/true), eps));  // (B, C, 1, 1)
    return {mu, sigma};
  }
  // PyTorch's adaptive-pooling cells: rows floor(i H / g) .. ceil((i + 1) H / g) (exclusive)
  auto start = [](int64_t i, int64_t out, int64_t in) { return (i * in) / out; };
  auto end = [](int64_t i, int64_t out, int64_t in) { return ((i + 1) * in + out - 1) / out; };
  std::vector<Tensor> mu_rows, sigma_rows;
  for (int64_t i = 0; i < g; ++i) {
    const int64_t h0 = start(i, g, H), h1 = end(i, g, H);
    std::vector<Tensor> mu_cells, sigma_cells;
    for (int64_t j = 0; j < g; ++j) {
      const int64_t w0 = start(j, g, W), w1 = end(j, g, W);
      KD_CHECK((h1 - h0) * (w1 - w0) >= 2,
               "wkd_f: grid={} cuts the {}x{} map into cells of one position, which have no unbiased variance (the "
               "official code gives NaN); use a smaller grid",
               g, H, W);
      Tensor cell = f.slice(2, h0, h1).slice(3, w0, w1);                                  // (B, C, h, w)
      mu_cells.push_back(mean(cell, {2, 3}));                                              // (B, C)
      sigma_cells.push_back(sqrt(add(var(cell, {2, 3}, /*unbiased=*/true), eps)));        // (B, C)
    }
    mu_rows.push_back(stack(mu_cells, 2));        // (B, C, g)
    sigma_rows.push_back(stack(sigma_cells, 2));  // (B, C, g)
  }
  return {stack(mu_rows, 2), stack(sigma_rows, 2)};  // (B, C, g, g) each
}

LossBreakdown wkd_f_loss(const Tensor& zs, const Tensor& fs, const Tensor& ft_in, const Tensor& labels, ConvReg& projector,
                         const WkdFOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain) {
  check_logits_labels("wkd_f", zs, Tensor(), labels);
  KD_CHECK(fs.defined() && ft_in.defined() && fs.dim() == 4 && ft_in.dim() == 4,
           "wkd_f: the student and teacher features must be (B, C, H, W) maps");
  KD_CHECK(fs.size(0) == zs.size(0) && ft_in.size(0) == zs.size(0),
           "wkd_f: the student feature {} and teacher feature {} must have the batch size of the logits ({})",
           shape_str(fs.shape()), shape_str(ft_in.shape()), zs.size(0));
  KD_CHECK(epoch >= 1, "wkd_f: epoch {} given; epochs are counted from 1", epoch);
  KD_CHECK(opt.eps >= 0, "wkd_f: eps must be >= 0, got {}", opt.eps);
  const int64_t B = zs.size(0);
  const Tensor ft = ft_in.detach();  // the teacher is a constant

  Tensor projected = projector.forward(fs);  // (B, Ct, Ht, Wt)
  show_step(explain, "projected", projected);
  KD_CHECK(projected.shape() == ft.shape(),
           "wkd_f: the projector ({}) maps the student feature {} to {}, but the teacher feature is {}; the projector "
           "was sized for other feature shapes (build the distiller from a sample batch of the same input size)",
           projector.kind(), shape_str(fs.shape()), shape_str(projected.shape()), shape_str(ft.shape()));

  ChannelGaussians gs = channel_gaussians(projected, opt.grid, opt.eps);  // (B, Ct, g, g) each
  ChannelGaussians gt = channel_gaussians(ft, opt.grid, opt.eps);
  show_step(explain, "mu_s", gs.mean);
  show_step(explain, "sigma_s", gs.std);
  show_step(explain, "mu_t", gt.mean);
  show_step(explain, "sigma_t", gt.std);

  // the two terms of W2^2 between diagonal Gaussians, summed over channels and cells
  const double norm = (double)(opt.grid * opt.grid * B);
  Tensor l_mean = div(sum(pow(sub(gs.mean, gt.mean), 2.0)), norm);  // ()
  Tensor l_cov = div(sum(pow(sub(gs.std, gt.std), 2.0)), norm);     // ()
  show_step(explain, "L_mean", l_mean);
  show_step(explain, "L_cov", l_cov);

  const double w = wkd_f_weight(opt.weight, epoch, opt.decay_epoch, total_epochs);
  show_step(explain, "weight_e", scalar_tensor(w));
  Tensor ce = cross_entropy(zs, labels);  // ()
  show_step(explain, "ce", ce);

  Tensor ce_part = mul(ce, opt.ce_weight);
  Tensor mean_part = mul(l_mean, w * opt.gamma);
  Tensor cov_part = mul(l_cov, w);
  LossBreakdown out;
  out.total = add(add(ce_part, mean_part), cov_part);
  out.parts = {{"ce", ce_part}, {"mean", mean_part}, {"cov", cov_part}};
  show_step(explain, "loss", out.total);
  return out;
}

WkdFDistiller::WkdFDistiller(const WkdFOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed)
    : opt_(opt) {
  Generator gen(seed);
  conv_reg_ = register_module("conv_reg", std::make_shared<ConvReg>(s_shape, t_shape, gen, true, "wkd_f"));
}

LossBreakdown WkdFDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.hint_layer, "wkd_f", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_layer, "wkd_f", "teacher");
  return wkd_f_loss(student.logits, fs, ft, batch.labels, *conv_reg_, opt_, batch.epoch, batch.total_epochs, explain);
}

Params WkdFDistiller::params() const {
  return {{"hint_layer", opt_.hint_layer},
          {"teacher_layer", opt_.teacher_layer},
          {"weight", format_number(opt_.weight)},
          {"gamma", format_number(opt_.gamma)},
          {"decay_epoch", std::to_string(opt_.decay_epoch)},
          {"grid", std::to_string(opt_.grid)},
          {"eps", format_number(opt_.eps)},
          {"ce_weight", format_number(opt_.ce_weight)}};
}

std::shared_ptr<Distiller> make_wkd_f_distiller(const Params& params, const DistillerContext& ctx) {
  ParamReader r("wkd_f", params);
  WkdFOptions o;
  o.hint_layer = r.text("hint_layer", o.hint_layer);
  o.teacher_layer = r.text("teacher_layer", o.hint_layer);
  o.weight = r.number("weight", o.weight);
  o.gamma = r.number("gamma", o.gamma);
  o.decay_epoch = r.integer("decay_epoch", o.decay_epoch);
  o.grid = r.integer("grid", o.grid);
  o.eps = r.number("eps", o.eps);
  o.ce_weight = r.number("ce_weight", o.ce_weight);
  r.finish();
  check_tap_name(o.hint_layer, "wkd_f");
  check_tap_name(o.teacher_layer, "wkd_f");
  KD_CHECK(o.grid >= 1, "wkd_f: the spatial grid must be >= 1 (1 = statistics over the whole map), got grid={}", o.grid);
  KD_CHECK(o.eps >= 0, "wkd_f: eps must be >= 0, got eps={}", o.eps);
  KD_CHECK(o.decay_epoch >= 0, "wkd_f: decay_epoch must be >= 0, got {}", o.decay_epoch);
  const Shape s = sample_tap_shape(ctx.student_sample, o.hint_layer, "wkd_f", "student");
  const Shape t = sample_tap_shape(ctx.teacher_sample, o.teacher_layer, "wkd_f", "teacher");
  return std::make_shared<WkdFDistiller>(o, s, t, ctx.seed);
}

}  // namespace kd::distill
