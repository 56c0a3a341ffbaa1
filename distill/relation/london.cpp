// london.cpp: LONDON (Shang et al., ICCV 2021) on OFD's feature loss, after the official
// distiller_london.py. The equations are in london.h.
#include "distill/relation/london.h"

#include <cmath>
#include <fmt/format.h>
#include <numbers>
#include <optional>

#include "distill/feature/at.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/init.h"
#include "nn/safetensors.h"

namespace kd::distill {

double london_default_base_weight(const std::string& base) {
  if (base == "ofd") return 1e-3;  // loss_distill.sum() / batch_size / 1000
  if (base == "at") return 1000.0;  // mdistiller AT.FEAT_WEIGHT
  if (base == "mse") return 100.0;  // mdistiller FITNET.FEAT_WEIGHT
  if (base == "none") return 0.0;
  KD_CHECK(false,
           "london: base={} is not a feature loss; use base=ofd (the official code's), at, mse (a FitNets hint per "
           "stage) or none",
           base);
  return 0.0;
}

static void check_options(const LondonOptions& o) {
  london_default_base_weight(o.base);  // validates the name
  check_taps(o.layers, "london");
  check_taps(o.teacher_layers, "london");
  KD_CHECK(o.layers.size() >= 2, "london: the transmitting matrices join consecutive taps; give at least two layers, "
                                 "like layers=pre1,pre2,pre3 (got {})",
           join_taps(o.layers));
  KD_CHECK(o.layers.size() == o.teacher_layers.size(),
           "london: {} student layers ({}) but {} teacher layers ({}); give one teacher tap per student tap",
           o.layers.size(), join_taps(o.layers), o.teacher_layers.size(), join_taps(o.teacher_layers));
  KD_CHECK(o.power_iters >= 1, "london: power_iters={} must be >= 1 (the official code runs 10)", o.power_iters);
  KD_CHECK(o.pair_decay > 0, "london: pair_decay={} must be > 0 (the official code's weights are 1/2^(n-i-1))",
           o.pair_decay);
}

// ------------------------------------------------------------------------------- the proxy

Tensor transmitting_matrix(const Tensor& a_in, const Tensor& b_in) {
  KD_CHECK(a_in.dim() == 4 && b_in.dim() == 4 && a_in.size(0) == b_in.size(0),
           "london: the transmitting matrix joins two (B, C, H, W) maps of one batch; got {} and {}",
           shape_str(a_in.shape()), shape_str(b_in.shape()));
  Tensor a = a_in, b = b_in;
  if (a.size(2) > b.size(2)) a = adaptive_avg_pool2d(a, Int2(b.size(2), b.size(3)));  // (B, Ca, Hb, Wb)
  else if (b.size(2) > a.size(2)) b = adaptive_avg_pool2d(b, Int2(a.size(2), a.size(3)));  // (B, Cb, Ha, Wa)
  KD_CHECK(a.size(2) == b.size(2) && a.size(3) == b.size(3),
           "london: after pooling the two maps are {} and {}; the transmitting matrix needs maps of one size "
           "(choose taps whose aspect ratios agree)",
           shape_str(a.shape()), shape_str(b.shape()));
  const int64_t B = a.size(0), HW = a.size(2) * a.size(3);
  Tensor a_flat = a.reshape({B, a.size(1), HW});                    // (B, Ca, HW)
  Tensor b_flat_t = b.reshape({B, b.size(1), HW}).transpose(1, 2);  // (B, HW, Cb)
  return div(bmm(a_flat, b_flat_t.contiguous()), (double)HW);       // (B, Ca, Cb)
}

Tensor lipschitz_proxy(const Tensor& G, const Tensor& v0, int64_t iters, bool differentiable) {
  KD_CHECK(G.dim() == 3, "london: the proxy takes matrices (B, m, k), got {}", shape_str(G.shape()));
  const int64_t B = G.size(0), m = G.size(1);
  KD_CHECK(v0.shape() == (Shape{B, m, 1}), "london: the power iteration's start must be (B, m, 1) = {}, got {}",
           shape_str(Shape{B, m, 1}), shape_str(v0.shape()));
  KD_CHECK(iters >= 1, "london: power_iters={} must be >= 1", iters);
  std::optional<NoGradGuard> released_no_grad;  // the official top_eigenvalue: torch.no_grad()
  if (!differentiable) released_no_grad.emplace();
  Tensor K = bmm(G, G.transpose(1, 2).contiguous());  // (B, m, m) = G G^T, symmetric PSD
  Tensor v = v0;                                      // (B, m, 1)
  Tensor n;
  for (int64_t k = 0; k < iters; ++k) {
    Tensor mk = bmm(K, v);          // (B, m, 1) = K v_{k-1}
    n = norm(mk, 2.0, {1}, true);   // (B, 1, 1) = ||K v_{k-1}||, -> lambda_max
    v = div(mk, n);                 // (B, m, 1) unit
  }
  Tensor sigma = sqrt(div(n, norm(v, 2.0, {1}, true)));  // (B, 1, 1) = sqrt(lambda_max) = ||G||_2
  return sigma.reshape({B});
}

// ------------------------------------------------------------------------------- OFD

double ofd_margin(double mu, double s) {
  s = std::abs(s);
  KD_CHECK(s > 0, "london: the OFD margin needs a positive standard deviation, got {} (a constant channel)", s);
  const double z = mu / s;
  const double cdf = 0.5 * std::erfc(z / std::numbers::sqrt2);  // Phi(-mu / s) = P(x < 0)
  if (cdf <= 0.001) return -3.0 * s;
  const double pdf = std::exp(-0.5 * z * z) / std::sqrt(2.0 * std::numbers::pi);  // phi(mu / s)
  return -s * pdf / cdf + mu;
}

Tensor ofd_margins_of(const Tensor& f) {
  KD_CHECK(f.dim() == 4, "london: OFD margins are measured on a (B, C, H, W) map, got {}", shape_str(f.shape()));
  const int64_t B = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  std::vector<float> x = to_float_vector(f.detach().contiguous());
  std::vector<float> out((size_t)C);
  for (int64_t c = 0; c < C; ++c) {
    double s1 = 0, s2 = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < HW; ++i) {
        const double v = x[(size_t)((b * C + c) * HW + i)];
        s1 += v;
        s2 += v * v;
      }
    const double n = (double)(B * HW);
    const double mu = s1 / n;
    const double sd = std::sqrt(std::max(s2 / n - mu * mu, 0.0));
    out[(size_t)c] = sd > 0 ? (float)ofd_margin(mu, sd) : (float)std::min(mu, 0.0);  // a constant channel: itself
  }
  return from_vector(out, {C});
}

Tensor ofd_distillation_loss(const Tensor& s, const Tensor& t_in, const Tensor& margin) {
  KD_CHECK(s.dim() == 4 && s.shape() == t_in.shape(),
           "london: OFD compares the connected student map with the teacher's, which must have one shape; got {} and "
           "{} (1x1 connectors keep H and W: choose taps of the same size in both networks)",
           shape_str(s.shape()), shape_str(t_in.shape()));
  KD_CHECK(margin.dim() == 1 && margin.size(0) == s.size(1), "london: {} margins for a map of {} channels",
           margin.numel(), s.size(1));
  const Tensor t = t_in.detach();
  Tensor target = maximum(t, margin.detach().reshape({1, s.size(1), 1, 1}));  // (B, C, H, W) max(t, m)
  Tensor counted = maximum(gt(s, target).to(DType::f32), gt(t, 0.0).to(DType::f32));  // s > target or t > 0
  return sum(mul(pow(sub(s, target), 2.0), counted));  // ()
}

// ------------------------------------------------------------------------------- the loss

LossBreakdown london_loss(const Tensor& zs, const Tensor& labels, const std::vector<Tensor>& fs,
                          const std::vector<Tensor>& connected, const std::vector<Tensor>& ft_in,
                          const std::vector<Tensor>& margins, const PowerStarts& starts, const LondonOptions& opt,
                          const ExplainFn& explain) {
  check_options(opt);
  check_logits_labels("london", zs, Tensor(), labels);
  const size_t n = opt.layers.size();
  KD_CHECK(fs.size() == n && connected.size() == n && ft_in.size() == n,
           "london: {} layers but {} student maps, {} connected maps and {} teacher maps", n, fs.size(),
           connected.size(), ft_in.size());
  KD_CHECK(starts.student.size() == n - 1 && starts.teacher.size() == n - 1,
           "london: one power-iteration start per pair and side: {} pairs, got {} and {}", n - 1,
           starts.student.size(), starts.teacher.size());
  const int64_t B = zs.size(0);
  std::vector<Tensor> ft;
  for (size_t i = 0; i < n; ++i) {
    KD_CHECK(fs[i].dim() == 4 && ft_in[i].dim() == 4 && fs[i].size(0) == B && ft_in[i].size(0) == B,
             "london: tap {}: the student map {} and teacher map {} must be (B, C, H, W) with the batch size {} of the "
             "logits",
             opt.layers[i], shape_str(fs[i].shape()), shape_str(ft_in[i].shape()), B);
    KD_CHECK(connected[i].shape() == ft_in[i].shape(),
             "london: tap {}: the connected student map is {} but the teacher's is {}; the 1x1 connectors keep H and "
             "W, so the student's and teacher's taps must have the same spatial size",
             opt.layers[i], shape_str(connected[i].shape()), shape_str(ft_in[i].shape()));
    ft.push_back(ft_in[i].detach());  // the teacher is a constant
  }
  auto layer_weight = [&](size_t i) { return 1.0 / std::pow(opt.pair_decay, (double)(n - i - 1)); };

  // the Lipschitz proxies of consecutive stages
  Tensor l_london = scalar_tensor(0.0);
  for (size_t i = 0; i + 1 < n; ++i) {
    const std::string p = fmt::format("pair{}.", i);
    const Tensor& next_s = opt.connect_both ? connected[i + 1] : fs[i + 1];  // released: f_{i+1} raw
    Tensor G_s = transmitting_matrix(connected[i], next_s);  // (B, Ct_i, C_{i+1})
    Tensor G_t = transmitting_matrix(ft[i], ft[i + 1]);      // (B, Ct_i, Ct_{i+1})
    show_step(explain, p + "G_s", G_s);
    show_step(explain, p + "G_t", G_t);
    Tensor sigma_s = lipschitz_proxy(G_s, starts.student[i], opt.power_iters, opt.power_grad);  // (B)
    Tensor sigma_t = lipschitz_proxy(G_t, starts.teacher[i], opt.power_iters, false);           // (B)
    show_step(explain, p + "sigma_s", sigma_s);
    show_step(explain, p + "sigma_t", sigma_t);
    Tensor l_pair = mse_loss(sigma_s, sigma_t);  // () mean over the batch
    show_step(explain, p + "L", l_pair);
    l_london = add(l_london, mul(l_pair, layer_weight(i)));
  }
  show_step(explain, "L_london", l_london);

  // the base feature loss
  Tensor l_feature = scalar_tensor(0.0);
  for (size_t i = 0; i < n && opt.base != "none"; ++i) {
    if (opt.base == "ofd") {
      KD_CHECK(i < margins.size() && margins[i].defined(), "london: base=ofd needs the margins of tap {}",
               opt.teacher_layers[i]);
      l_feature = add(l_feature, mul(ofd_distillation_loss(connected[i], ft[i], margins[i]), layer_weight(i)));
    } else if (opt.base == "at") {
      l_feature = add(l_feature, at_stage_loss(fs[i], ft[i], 2.0));
    } else {  // mse
      l_feature = add(l_feature, mse_loss(connected[i], ft[i]));
    }
  }
  if (opt.base == "ofd") l_feature = div(l_feature, (double)B);  // loss_distill.sum() / batch_size
  show_step(explain, "L_feature", l_feature);

  Tensor feature_part = mul(l_feature, opt.base_weight);  // base_weight * L_feature
  Tensor london_part = mul(l_london, opt.london_weight);  // london_weight * L_london
  LossBreakdown out;
  out.total = add(feature_part, london_part);
  out.parts = {{"feature", feature_part}, {"london", london_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

// ------------------------------------------------------------------------------- the distiller

LondonConnector::LondonConnector(int64_t s_channels, int64_t t_channels, Generator& gen) {
  conv = register_module("conv", std::make_shared<nn::Conv2d>(s_channels, t_channels, Int2(1), gen, Int2(1), Int2(0),
                                                              Int2(1), 1, /*bias=*/false));
  {
    NoGradGuard ng;
    nn::init::kaiming_normal_fan_out_(conv->weight, gen);  // N(0, 2 / (1 * 1 * Ct)), build_feature_connector
  }
  bn = register_module("bn", nn::BatchNorm2d(t_channels));  // weight 1, bias 0
}

Tensor LondonConnector::forward(const Tensor& x) { return bn->forward(conv->forward(x)); }

LondonDistiller::LondonDistiller(const LondonOptions& opt, const std::vector<Shape>& s_shapes,
                                 const std::vector<Shape>& t_shapes, const std::vector<Tensor>& margins, uint64_t seed)
    : opt_(opt), gen_(seed ^ 0x4c4f4e444f4eull) {  // "LONDON": the starts' stream, apart from the weights'
  check_options(opt_);
  const size_t n = opt_.layers.size();
  KD_CHECK(s_shapes.size() == n && t_shapes.size() == n && margins.size() == n,
           "london: {} layers but {} student shapes, {} teacher shapes and {} margin vectors", n, s_shapes.size(),
           t_shapes.size(), margins.size());
  Generator gen(seed);
  auto list = register_module("connectors", std::make_shared<nn::Module>());
  for (size_t i = 0; i < n; ++i) {
    const Shape& s = s_shapes[i];
    const Shape& t = t_shapes[i];
    KD_CHECK(s.size() == 4 && t.size() == 4 && s[2] == t[2] && s[3] == t[3],
             "london: tap {} is {} in the student and {} in the teacher; the 1x1 connectors need (B, C, H, W) maps "
             "of the same H and W (choose other taps with layers= / teacher_layers=)",
             opt_.layers[i], shape_str(s), shape_str(t));
    KD_CHECK(margins[i].dim() == 1 && margins[i].size(0) == t[1], "london: tap {}: {} margins for {} teacher channels",
             opt_.teacher_layers[i], margins[i].numel(), t[1]);
    connectors_.push_back(list->register_module(std::to_string(i), std::make_shared<LondonConnector>(s[1], t[1], gen)));
    register_buffer(fmt::format("margin{}", i + 1), margins[i].detach().clone());  // OFD's names
  }
}

std::vector<Tensor> LondonDistiller::margins() const {
  std::map<std::string, Tensor> buffers = nn::to_map(named_buffers());
  std::vector<Tensor> out;
  for (size_t i = 0; i < opt_.layers.size(); ++i) out.push_back(buffers.at(fmt::format("margin{}", i + 1)));
  return out;
}

LossBreakdown LondonDistiller::loss_with_starts(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                                const BatchInfo& batch, const PowerStarts& starts) {
  std::vector<Tensor> fs, connected, ft;
  for (size_t i = 0; i < opt_.layers.size(); ++i) {
    fs.push_back(feature_tap(student, opt_.layers[i], "london", "student"));
    ft.push_back(feature_tap(teacher, opt_.teacher_layers[i], "london", "teacher"));
    connected.push_back(connectors_[i]->forward(fs.back()));  // (B, Ct_i, H_i, W_i)
  }
  return london_loss(student.logits, batch.labels, fs, connected, ft, margins(), starts, opt_, explain);
}

LossBreakdown LondonDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                    const BatchInfo& batch) {
  const int64_t B = student.logits.defined() ? student.logits.size(0) : 0;
  PowerStarts starts;
  for (size_t i = 0; i + 1 < opt_.layers.size(); ++i) {
    const int64_t C = connectors_[i]->bn->weight.size(0);  // the teacher's channels of tap i
    starts.student.push_back(rand({B, C, 1}, gen_));       // torch.rand, as released
    starts.teacher.push_back(rand({B, C, 1}, gen_));
  }
  return loss_with_starts(student, teacher, batch, starts);
}

Params LondonDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_london_distiller(const Params& params, const DistillerContext& ctx) {
  LondonOptions o = parse_options<LondonOptions>("london", params);
  if (!params.count("teacher_layers")) o.teacher_layers = o.layers;
  if (!params.count("base_weight")) o.base_weight = london_default_base_weight(o.base);
  check_options(o);
  std::vector<Shape> s_shapes, t_shapes;
  std::vector<Tensor> margins;
  for (size_t i = 0; i < o.layers.size(); ++i) {
    s_shapes.push_back(sample_tap_shape(ctx.student_sample, o.layers[i], "london", "student"));
    t_shapes.push_back(sample_tap_shape(ctx.teacher_sample, o.teacher_layers[i], "london", "teacher"));
    margins.push_back(ofd_margins_of(feature_tap(ctx.teacher_sample, o.teacher_layers[i], "london", "teacher")));
  }
  return std::make_shared<LondonDistiller>(o, s_shapes, t_shapes, margins, ctx.seed);
}

}  // namespace kd::distill
