// The feature family of distillation losses (distill/feature/): golden values and gradients from
// the official codes' semantics (tests/reference/gen_feature.py: mdistiller's FitNet and AT,
// JiamingLv/WKD's WKD-F), including the gradients of the helper modules' parameters; gradchecks
// w.r.t. the student features; invariants (zero loss through identity helpers, AT's scale
// invariance, non-negativity); mdistiller's regressor rules; the two-stage FitNet schedule; the
// registry, parameters and error messages; and each method trained end to end on the synthetic
// set with its helper saved in the checkpoint.
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "distill/feature/at.h"
#include "distill/feature/common.h"
#include "distill/feature/fitnet.h"
#include "distill/feature/fitnet_run.h"
#include "distill/feature/wkd_f.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/safetensors.h"
#include "distill_run_test_util.h"
#include "distill_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::outputs_of;
using kdtest::params_from;
using kdtest::part;
using kdtest::json;
using V = std::vector<Tensor>;
namespace fs = std::filesystem;

namespace {

// A ModelOutput whose tap `tap` ("f<i>") is `t`, the lower taps left undefined.
nn::ModelOutput with_tap(const Tensor& t, int index, const Tensor& logits = Tensor()) {
  nn::ModelOutput o;
  o.logits = logits;
  o.feats.resize((size_t)index + 1);
  o.feats[(size_t)index] = t;
  return o;
}

DistillerContext ctx_for(const Tensor& fs, const Tensor& ft, int index) {
  DistillerContext ctx;
  ctx.student_sample = with_tap(zeros(fs.shape()), index);
  ctx.teacher_sample = with_tap(zeros(ft.shape()), index);
  ctx.seed = 5;
  return ctx;
}

// Loads the golden case's ConvReg weights (conv weight, conv bias, bn weight, bn bias).
void load_conv_reg(Distiller& d, const V& w) {
  std::map<std::string, Tensor> state{{"conv_reg.conv.weight", w[0]},
                                      {"conv_reg.conv.bias", w[1]},
                                      {"conv_reg.bn.weight", w[2]},
                                      {"conv_reg.bn.bias", w[3]}};
  nn::LoadReport rep = d.load_state_dict(state, /*strict=*/false);
  CHECK(rep.unexpected.empty());
  CHECK(rep.shape_mismatch.empty());
  CHECK(rep.missing.size() == 3);  // the BatchNorm buffers keep their initial values, as in PyTorch
}

BatchInfo batch_of(const Tensor& y, int64_t epoch = 1, int64_t total_epochs = 240) {
  BatchInfo b;
  b.labels = y;
  b.epoch = epoch;
  b.total_epochs = total_epochs;
  return b;
}

// The golden cases, run through the registry (so the factories and taps are exercised too).
// `made` receives the distiller, for the helper-gradient check.
V run_fitnet(const V& x, const json& p, std::shared_ptr<Distiller>* made = nullptr) {
  // inputs: zs, zt, fs, ft, labels, conv_w, conv_b, bn_w, bn_b
  const int64_t epoch = p["epoch"].get<int64_t>();
  auto d = create_distiller("fitnet", params_from(p, {"epoch"}), ctx_for(x[2], x[3], 2));
  load_conv_reg(*d, {x[5], x[6], x[7], x[8]});
  if (made) *made = d;
  const FitNetOptions& o = dynamic_cast<FitNetDistiller&>(*d).options();
  if (fitnet_stage(o, epoch) == 2)  // the two-stage regime's stage 2 (fitnet_run.cpp): KD with the kd_* options
    d = make_kd_distiller(fitnet_stage2_kd_params(o), ctx_for(x[2], x[3], 2));
  return outputs_of(distill_loss(*d, with_tap(x[2], 2, x[0]), with_tap(x[3], 2, x[1]), batch_of(x[4], epoch)));
}

V run_wkd_f(const V& x, const json& p, std::shared_ptr<Distiller>* made = nullptr) {
  // inputs: zs, fs, ft, labels, conv_w, conv_b, bn_w, bn_b
  auto d = create_distiller("wkd_f", params_from(p, {"epoch", "total_epochs"}), ctx_for(x[1], x[2], 3));
  load_conv_reg(*d, {x[4], x[5], x[6], x[7]});
  if (made) *made = d;
  return outputs_of(distill_loss(*d, with_tap(x[1], 3, x[0]), with_tap(x[2], 3),
                                 batch_of(x[3], p["epoch"].get<int64_t>(), p["total_epochs"].get<int64_t>())));
}

V run_at(const V& x, const json& p) {
  // inputs: zs, labels, n student maps, n teacher maps; taps named by "layers"
  const std::vector<std::string> taps = split_taps(p["layers"].get<std::string>(), "at");
  const size_t n = taps.size();
  nn::ModelOutput s, t;
  s.logits = x[0];
  s.feats.resize(4);
  t.feats.resize(4);
  for (size_t l = 0; l < n; ++l) {
    const int i = taps[l][1] - '0';
    s.feats[(size_t)i] = x[2 + l];
    t.feats[(size_t)i] = x[2 + n + l];
  }
  auto d = create_distiller("at", params_from(p), {});
  return outputs_of(distill_loss(*d, s, t, batch_of(x[1])));
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

// Positive feature maps away from 0 (post-ReLU-like, no kinks for finite differences).
Tensor feat(const Shape& shape, Generator& gen) { return add(abs(randn(shape, gen)), 0.1); }

// A ConvReg that is the identity on non-negative maps of C channels: 1x1 conv = I, no bias,
// BatchNorm in eval mode with running mean 0 and running variance 1 - eps, then ReLU.
std::shared_ptr<ConvReg> identity_reg(int64_t C, int64_t H, Generator& gen) {
  auto reg = std::make_shared<ConvReg>(Shape{1, C, H, H}, Shape{1, C, H, H}, gen);
  NoGradGuard ng;
  auto& conv = dynamic_cast<nn::Conv2d&>(*reg->conv);
  conv.weight.zero_();
  for (int64_t c = 0; c < C; ++c) conv.weight.set({c, c, 0, 0}, 1.0);
  conv.bias.zero_();
  reg->bn->running_var.fill_(1.0 - reg->bn->eps);
  reg->eval();
  return reg;
}

}  // namespace

// ============================================================================ golden values

TEST_CASE("feature losses: golden values and gradients from the official codes") {
  kdtest::GoldenTable table = {
      {"fitnet", [](const V& x, const json& p) { return run_fitnet(x, p); }},
      {"wkd_f", [](const V& x, const json& p) { return run_wkd_f(x, p); }},
      {"at", [](const V& x, const json& p) { return run_at(x, p); }},
  };
  CHECK(kdtest::run_golden_file("feature_losses.json", table) == 17);
}

TEST_CASE("feature losses: the helpers' parameter gradients match the official code's") {
  std::ifstream f(kdtest::fixture_path("feature_losses.json"));
  REQUIRE(f.good());
  json doc = json::parse(f);
  int checked = 0;
  for (const json& c : doc.at("cases")) {
    if (!c.contains("param_grads")) continue;
    CAPTURE(c.at("name").get<std::string>());
    V x;
    for (const json& ij : c.at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
    std::shared_ptr<Distiller> d;
    V out = c.at("op") == "fitnet" ? run_fitnet(x, c.at("params"), &d) : run_wkd_f(x, c.at("params"), &d);
    out[0].backward(kdtest::tensor_from_json(c.at("grad_outputs")[0]));
    std::map<std::string, Tensor> params = nn::to_map(d->named_parameters());
    REQUIRE(c.at("param_grads").size() == 4);
    for (const auto& [name, g] : c.at("param_grads").items()) {
      CAPTURE(name);
      REQUIRE(params.count(name) == 1);
      REQUIRE(params[name].grad().defined());
      kdtest::Closeness cl = kdtest::allclose(params[name].grad(), kdtest::tensor_from_json(g), 1e-3, 1e-5);
      CHECK_MESSAGE(cl.ok, cl.msg);
    }
    ++checked;
  }
  CHECK(checked == 12);  // 5 FitNet cases with a hint term + 7 WKD-F cases
}

// ============================================================================ gradchecks

TEST_CASE("feature losses: gradcheck w.r.t. the student features and logits") {
  Generator gen(11);
  const int64_t B = 3, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen));

  SUBCASE("fitnet through each regressor rule") {
    for (auto [sH, tH] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {4, 2}, {2, 4}, {3, 2}}) {
      CAPTURE(sH);
      CAPTURE(tH);
      Tensor fs = leaf(feat({B, 2, sH, sH}, gen));
      Tensor ft = feat({B, 3, tH, tH}, gen);
      Generator g2(3);
      ConvReg reg(fs.shape(), ft.shape(), g2, /*use_relu=*/false);  // no ReLU kink for finite differences
      FitNetOptions o;
      o.feat_weight = 2.0;
      CHECK_GRADCHECK([&](const V& x) { return fitnet_loss(x[0], ft, reg, o).total; }, V{fs});
    }
  }
  SUBCASE("at, with pooling on either side") {
    Tensor f1 = leaf(feat({B, 2, 4, 4}, gen)), f2 = leaf(feat({B, 3, 2, 2}, gen));
    Tensor t1 = feat({B, 3, 2, 2}, gen), t2 = feat({B, 2, 4, 4}, gen);
    AtOptions o;
    o.layers = o.teacher_layers = {"f1", "f2"};
    o.feat_weight = 10.0;
    CHECK_GRADCHECK([&](const V& x) { return at_loss(x[0], y, {x[1], x[2]}, {t1, t2}, o).total; }, V{zs, f1, f2});
    o.p = 3.0;
    CHECK_GRADCHECK([&](const V& x) { return at_loss(x[0], y, {x[1], x[2]}, {t1, t2}, o).total; }, V{zs, f1, f2});
  }
  SUBCASE("wkd_f, whole map and grids") {
    for (int64_t grid : {1, 2, 3}) {
      CAPTURE(grid);
      Tensor fs = leaf(feat({B, 2, 5, 5}, gen));
      Tensor ft = feat({B, 3, 5, 5}, gen);
      Generator g2(4);
      ConvReg reg(fs.shape(), ft.shape(), g2, /*use_relu=*/false);
      WkdFOptions o;
      o.grid = grid;
      o.weight = 1.0;
      CHECK_GRADCHECK([&](const V& x) { return wkd_f_loss(x[0], x[1], ft, y, reg, o, 1, 240).total; }, V{zs, fs});
    }
  }
}

// ============================================================================ invariants

TEST_CASE("AT: zero when the maps agree, invariant to the scale of either network, >= 0") {
  Generator gen(21);
  const int64_t B = 2, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  Tensor f1 = feat({B, 3, 4, 4}, gen), f2 = feat({B, 5, 2, 2}, gen);
  AtOptions o;
  o.layers = o.teacher_layers = {"f1", "f2"};
  o.ce_weight = 0.0;
  // the same maps: every attention map agrees
  CHECK(std::abs(at_loss(zs, y, {f1, f2}, {f1, f2}, o).total.item()) < 1e-9);
  // other channel counts with the same channel-mean energy also give 0: a(F) only sees mean_c F^2
  Tensor doubled = cat({f1, f1}, 1);  // (B, 6, 4, 4): same mean over channels of F^2
  CHECK(std::abs(at_stage_loss(doubled, f1, 2.0).item()) < 1e-9);
  // scaling a network's activations by c > 0 does not change its attention maps
  Tensor t1 = feat({B, 4, 4, 4}, gen), t2 = feat({B, 2, 2, 2}, gen);
  const double base = at_loss(zs, y, {f1, f2}, {t1, t2}, o).total.item();
  CHECK(base > 0);
  for (double c : {0.01, 3.0, 250.0}) {
    CHECK(at_loss(zs, y, {mul(f1, c), mul(f2, c)}, {t1, t2}, o).total.item() == doctest::Approx(base).epsilon(1e-4));
    CHECK(at_loss(zs, y, {f1, f2}, {mul(t1, c), mul(t2, c)}, o).total.item() == doctest::Approx(base).epsilon(1e-4));
  }
  // each attention map has unit L2 norm per sample
  Tensor a = attention_map(f1, 2.0);  // (B, 16)
  CHECK(a.shape() == Shape{B, 16});
  for (int64_t b = 0; b < B; ++b) CHECK(norm(a.select(0, b)).item() == doctest::Approx(1.0).epsilon(1e-5));
  // a random pair: >= 0, and the teacher gets no gradient
  Tensor fsl = leaf(randn({B, 3, 4, 4}, gen)), ftl = leaf(randn({B, 3, 4, 4}, gen));
  Tensor l = at_stage_loss(fsl, ftl, 2.0);
  CHECK(l.item() >= 0);
  l.backward();
  CHECK(fsl.grad().defined());
  CHECK_FALSE(ftl.grad().defined());
}

TEST_CASE("FitNet and WKD-F: zero feature loss when the student equals the teacher through an identity helper") {
  Generator gen(31);
  const int64_t B = 3, K = 4, C = 5, H = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  Tensor f = feat({B, C, H, H}, gen);
  auto reg = identity_reg(C, H, gen);
  CHECK(reg->kind() == "conv1x1");
  CHECK(max(abs(sub(reg->forward(f), f))).item() < 1e-5);  // it is the identity

  FitNetOptions fo;
  LossBreakdown fl = fitnet_loss(f, f, *reg, fo);
  CHECK(part(fl, "hint") < 1e-8);
  CHECK(fl.parts.size() == 1);  // FitNets' own term: distill_loss adds the CE
  WkdFOptions wo;
  wo.weight = 1.0;
  for (int64_t grid : {1, 2}) {
    wo.grid = grid;
    LossBreakdown wl = wkd_f_loss(zs, f, f, y, *reg, wo, 1, 240);
    CHECK(part(wl, "mean") < 1e-8);
    CHECK(part(wl, "cov") < 1e-8);
  }
  // a different teacher: both terms positive, and the parts add up to the total
  Tensor ft = feat({B, C, H, H}, gen);
  LossBreakdown wl = wkd_f_loss(zs, f, ft, y, *reg, wo, 1, 240);
  CHECK(part(wl, "mean") > 0);
  CHECK(part(wl, "cov") > 0);
  CHECK(wl.total.item() == doctest::Approx(part(wl, "mean") + part(wl, "cov")).epsilon(1e-5));
}

TEST_CASE("WKD-F: channel Gaussians, the W2 of shifted maps, the cosine decay of the weight") {
  Generator gen(41);
  Tensor f = randn({2, 3, 4, 6}, gen);
  ChannelGaussians g1 = channel_gaussians(f, 1, 1e-5);
  CHECK(g1.mean.shape() == Shape{2, 3, 1, 1});
  // by hand for one channel: mean and sqrt(unbiased variance + eps)
  std::vector<float> v = to_float_vector(f.select(0, 1).select(0, 2).contiguous());  // (4, 6)
  double m = 0, s2 = 0;
  for (float x : v) m += x;
  m /= (double)v.size();
  for (float x : v) s2 += (x - m) * (x - m);
  s2 /= (double)(v.size() - 1);
  CHECK(g1.mean.at({1, 2, 0, 0}) == doctest::Approx(m).epsilon(1e-5));
  CHECK(g1.std.at({1, 2, 0, 0}) == doctest::Approx(std::sqrt(s2 + 1e-5)).epsilon(1e-5));
  // grid 2 of a 4x6 map: cells of 2x3 positions
  ChannelGaussians g2 = channel_gaussians(f, 2, 1e-5);
  CHECK(g2.std.shape() == Shape{2, 3, 2, 2});
  Tensor cell = f.slice(2, 2, 4).slice(3, 0, 3);  // row cell 1, column cell 0
  CHECK(g2.mean.at({0, 1, 1, 0}) == doctest::Approx(mean(cell.select(0, 0).select(0, 1)).item()).epsilon(1e-5));
  // a map shifted by a constant d per channel: only the mean term moves, by C * d^2 per sample
  Tensor shifted = add(f, 0.5);
  ChannelGaussians gs = channel_gaussians(shifted, 1, 1e-5);
  CHECK(max(abs(sub(gs.std, g1.std))).item() < 1e-5);
  CHECK(sum(pow(sub(gs.mean, g1.mean), 2.0)).item() / 2 == doctest::Approx(3 * 0.25).epsilon(1e-4));
  // the weight: constant to decay_epoch, then half a cosine down to 0 at the last epoch
  CHECK(wkd_f_weight(0.08, 1, 150, 240) == 0.08);
  CHECK(wkd_f_weight(0.08, 150, 150, 240) == 0.08);
  CHECK(wkd_f_weight(0.08, 195, 150, 240) == doctest::Approx(0.04));
  CHECK(wkd_f_weight(0.08, 240, 150, 240) == doctest::Approx(0.0).scale(1));
  CHECK_THROWS_WITH_SUBSTR(wkd_f_weight(0.08, 151, 150, 0), "total_epochs > decay_epoch");
  // errors
  CHECK_THROWS_WITH_SUBSTR(channel_gaussians(randn({1, 2, 3, 3}, gen), 3, 1e-5), "cells of one position");
  CHECK_THROWS_WITH_SUBSTR(channel_gaussians(randn({1, 2, 3, 3}, gen), 4, 1e-5), "does not fit");
}

TEST_CASE("WKD-F full covariance: the eigen-decomposition, tr sqrt(M), the Bures term on diagonal input") {
  Generator gen(45);
  // A = E diag(w) E^T with orthonormal E, w ascending, for a random symmetric matrix
  const int64_t n = 6;
  std::vector<double> A((size_t)(n * n));
  std::vector<float> r = to_float_vector(randn({n, n}, gen));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) A[i * n + j] = r[i * n + j] + r[j * n + i];
  std::vector<double> w, E;  // eigenvalues, eigenvectors
  symmetric_eigen(A, n, w, E);
  double err = 0, orth = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double a = 0, o = 0;
      for (int64_t k = 0; k < n; ++k) {
        a += E[i * n + k] * w[k] * E[j * n + k];
        o += E[k * n + i] * E[k * n + j];
      }
      err = std::max(err, std::abs(a - A[i * n + j]));
      orth = std::max(orth, std::abs(o - (i == j ? 1.0 : 0.0)));
    }
  CHECK(err < 1e-10);
  CHECK(orth < 1e-10);
  for (int64_t k = 1; k < n; ++k) CHECK(w[k - 1] <= w[k]);
  // tr sqrt(M) of a 2x2 SPD matrix in closed form: sqrt(tr M + 2 sqrt(det M))
  Tensor M = from_vector(std::vector<float>{2.0f, 0.6f, 0.6f, 1.0f}, {1, 2, 2});
  CHECK(trace_sqrtm(M).item() == doctest::Approx(std::sqrt(3.0 + 2.0 * std::sqrt(2.0 - 0.36))).epsilon(1e-6));
  // sqrtm squared is M
  Tensor S = sqrtm_constant(M);
  CHECK(max(abs(sub(bmm(S, S), M))).item() < 1e-5);
  // diagonal covariances: Bures = sum_c (sqrt(a_c) - sqrt(b_c))^2, the diagonal WKD-F term
  std::vector<float> a{0.5f, 2.0f, 1.5f}, b{1.0f, 0.2f, 1.5f};
  Tensor Da = zeros({1, 3, 3}), Db = zeros({1, 3, 3});
  double expect = 0;
  for (int64_t c = 0; c < 3; ++c) {
    Da.set({0, c, c}, a[c]);
    Db.set({0, c, c}, b[c]);
    expect += std::pow(std::sqrt(a[c]) - std::sqrt(b[c]), 2);
  }
  CHECK(bures_term(Da, Db).item() == doctest::Approx(expect).epsilon(1e-5));
  // full Gaussians of a map: the diagonal of Sigma is sigma^2 of the diagonal model, same means
  Tensor f = randn({2, 3, 3, 4}, gen), g = randn({2, 3, 3, 4}, gen);
  FullGaussians fg = full_gaussians(f, 1e-5), gg = full_gaussians(g, 1e-5);
  CHECK(fg.cov.shape() == Shape{2, 3, 3});
  ChannelGaussians fd = channel_gaussians(f, 1, 1e-5);
  CHECK(fg.cov.at({1, 0, 0}) == doctest::Approx(std::pow(fd.std.at({1, 0, 0, 0}), 2)).epsilon(1e-5));
  CHECK(fg.mean.at({1, 1}) == doctest::Approx(fd.mean.at({1, 1, 0, 0})).epsilon(1e-6));
  // Bures >= 0 and 0 between equal covariances
  CHECK(max(abs(bures_term(fg.cov, fg.cov))).item() < 1e-4);
  CHECK(sum(bures_term(fg.cov, gg.cov)).item() > 0);
  // gradcheck of the full-covariance loss w.r.t. the student feature
  const int64_t B = 2, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen));
  // (a student of fewer channels than the teacher would give a rank-deficient Sigma_s whose
  // smallest eigenvalue, eps, sits where sqrt curves too fast for finite differences)
  Tensor fs = leaf(feat({B, 3, 3, 3}, gen));
  Tensor ft = feat({B, 3, 3, 3}, gen);
  Generator g2(9);
  ConvReg reg(fs.shape(), ft.shape(), g2, /*use_relu=*/false);
  WkdFOptions o;
  o.cov = "full";
  o.weight = 1.0;
  o.eps = 1e-2;
  CHECK_GRADCHECK([&](const V& x) { return wkd_f_loss(x[0], x[1], ft, y, reg, o, 1, 240).total; }, V{zs, fs});
}

// ============================================================================ regressor rules

TEST_CASE("ConvReg: mdistiller's regressor rules by the size ratio") {
  Generator gen(51);
  struct Rule {
    Shape s, t;
    std::string kind;
  };
  for (const Rule& r : std::vector<Rule>{{{2, 4, 8, 8}, {2, 6, 4, 4}, "conv3x3/2"},
                                         {{2, 4, 4, 4}, {2, 6, 8, 8}, "convT4x4/2"},
                                         {{2, 4, 8, 8}, {2, 6, 8, 8}, "conv1x1"},
                                         {{2, 4, 6, 6}, {2, 6, 4, 4}, "conv3x3"},
                                         {{2, 4, 7, 5}, {2, 6, 4, 4}, "conv4x2"}}) {
    CAPTURE(r.kind);
    ConvReg reg(r.s, r.t, gen);
    CHECK(reg.kind() == r.kind);
    Tensor out = reg.forward(randn(r.s, gen));
    CHECK(out.shape() == r.t);
    CHECK(min(out).item() >= 0);  // ReLU last
    std::vector<std::string> names;
    for (auto& [n, p] : reg.named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{"conv.weight", "conv.bias", "bn.weight", "bn.bias"});
  }
  CHECK_THROWS_WITH_SUBSTR(ConvReg(Shape{2, 4, 3, 3}, Shape{2, 6, 8, 8}, gen), "no regressor rule");
  CHECK_THROWS_WITH_SUBSTR(ConvReg(Shape{2, 4}, Shape{2, 6, 8, 8}, gen, true, "fitnet"), "fitnet: the regressor");
}

// ============================================================================ FitNet's two stages

TEST_CASE("FitNet two-stage: the distiller is the hint stage (no CE, no gradient to the logits)") {
  Generator gen(61);
  const int64_t B = 4, K = 5;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zt = randn({B, K}, gen);
  Tensor fs = feat({B, 3, 4, 4}, gen), ft = feat({B, 6, 2, 2}, gen);
  auto d = create_distiller("fitnet", {{"stages", "2"}, {"hint_epochs", "2"}}, ctx_for(fs, ft, 2));
  auto& fd = dynamic_cast<FitNetDistiller&>(*d);
  CHECK(fitnet_stage(fd.options(), 1) == 1);
  CHECK(fitnet_stage(fd.options(), 2) == 1);
  CHECK(fitnet_stage(fd.options(), 3) == 2);
  CHECK_FALSE(d->regime_of_its_own().empty());  // stage 2 is the regime's (fitnet_run.cpp)
  CHECK(create_distiller("fitnet", {}, ctx_for(fs, ft, 2))->regime_of_its_own().empty());
  Tensor zs = leaf(randn({B, K}, gen));
  Tensor fsl = leaf(fs.clone().detach());
  LossBreakdown l = distill_loss(*d, with_tap(fsl, 2, zs), with_tap(ft, 2, zt), batch_of(y, 1));
  REQUIRE(l.parts.size() == 2);
  CHECK(part(l, "ce") == 0);
  CHECK(part(l, "hint") > 0);
  CHECK(l.total.item() == part(l, "hint"));
  l.total.backward();
  CHECK_FALSE(zs.grad().defined());  // only the layers below the guided layer learn
  CHECK(fsl.grad().defined());
  // stage 2's KD takes T, kd_ce_weight and kd_weight
  Params kd = fitnet_stage2_kd_params(fd.options());
  CHECK(kd == Params{{"T", "4"}, {"ce_weight", "0.1"}, {"kd_weight", "0.9"}});
  // a fusion cannot hold the hint stage alone
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet+at", {{"fitnet.stages", "2"}, {"fitnet.hint_epochs", "1"}},
                                            ctx_for(fs, ft, 2)),
                           "regime of its own");
}

// ============================================================================ registry, parameters, errors

TEST_CASE("feature family: registry rows, defaults, taps and error messages") {
  Generator gen(71);
  Tensor fs = feat({2, 4, 8, 8}, gen), ft = feat({2, 8, 8, 8}, gen);
  std::vector<std::string> names;
  for (const auto& e : distiller_registry())
    if (e.family == "feature") names.push_back(e.name);
  for (const char* m : {"fitnet", "at", "wkd_f"}) CHECK(std::find(names.begin(), names.end(), m) != names.end());

  auto fit = create_distiller("fitnet", {}, ctx_for(fs, ft, 2));
  CHECK(fit->needs().feats);
  Params fp = fit->params();
  CHECK(fp["hint_layer"] == "f2");
  CHECK(fp["teacher_layer"] == "f2");
  CHECK(fp["feat_weight"] == "100");
  CHECK(fp["ce_weight"] == "1");
  CHECK(fp["stages"] == "1");
  CHECK(dynamic_cast<FitNetDistiller&>(*fit).regressor().kind() == "conv1x1");
  // the regressor is a registered helper: its parameters are the distiller's
  std::vector<std::string> pnames;
  for (auto& [n, p] : fit->named_parameters()) pnames.push_back(n);
  CHECK(pnames == std::vector<std::string>{"conv_reg.conv.weight", "conv_reg.conv.bias", "conv_reg.bn.weight",
                                           "conv_reg.bn.bias"});
  CHECK(fit->state_dict().size() == 7);  // + the BatchNorm's running statistics and counter
  CHECK(create_distiller("fitnet", fit->params(), ctx_for(fs, ft, 2))->params() == fp);

  auto at = create_distiller("at", {}, {});
  CHECK(at->needs().feats);
  CHECK(at->params() == Params{{"layers", "f1,f2,f3"}, {"teacher_layers", "f1,f2,f3"}, {"p", "2"}, {"ce_weight", "1"},
                               {"feat_weight", "1000"}});
  CHECK(at->named_parameters().empty());
  CHECK(create_distiller("at", {{"layers", "f2, f3"}, {"teacher_layers", "f1,pre3"}}, {})->params()["teacher_layers"] ==
        "f1,pre3");

  auto wk = create_distiller("wkd_f", {}, ctx_for(fs, ft, 3));
  CHECK(wk->needs().feats);
  Params wp = wk->params();
  CHECK(wp["hint_layer"] == "f3");
  CHECK(wp["weight"] == "0.08");
  CHECK(wp["gamma"] == "4");
  CHECK(wp["decay_epoch"] == "150");
  CHECK(wp["grid"] == "1");
  CHECK(wp["eps"] == "1e-05");
  CHECK(wp["cov"] == "diag");
  CHECK(create_distiller("wkd_f", wp, ctx_for(fs, ft, 3))->params() == wp);

  // errors name the problem and the fix
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {}, {}), "feature shapes are unknown");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"hint_layer", "layer2"}}, ctx_for(fs, ft, 2)),
                           "'layer2' is not a feature tap");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"hint_layer", "f3"}}, ctx_for(fs, ft, 2)),
                           "the student output has no feature tap 'f3' (it has: f0, f1, f2)");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"stages", "2"}}, ctx_for(fs, ft, 2)), "hint_epochs=N");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"hint_epochs", "3"}}, ctx_for(fs, ft, 2)), "stages=2");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"stages", "3"}, {"hint_epochs", "1"}}, ctx_for(fs, ft, 2)),
                           "stages=3");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("fitnet", {{"beta", "3"}}, ctx_for(fs, ft, 2)),
                           "fitnet: unknown parameter beta");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("at", {{"layers", "f1,f2"}, {"teacher_layers", "f1"}}, {}),
                           "one teacher tap per student tap");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("at", {{"p", "0"}}, {}), "p must be > 0");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("wkd_f", {{"grid", "0"}}, ctx_for(fs, ft, 3)), "grid must be >= 1");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("wkd_f", {{"cov", "spherical"}}, ctx_for(fs, ft, 3)), "cov=diag");
  CHECK(create_distiller("wkd_f", {{"cov", "full"}}, ctx_for(fs, ft, 3))->params()["cov"] == "full");
  // a student map smaller than the teacher's but not half of it has no regressor
  CHECK_THROWS_WITH_SUBSTR(create_distiller("wkd_f", {}, ctx_for(feat({2, 4, 3, 3}, gen), ft, 3)), "no regressor rule");
  // the teacher cache's outputs have no features
  nn::ModelOutput logits_only, student;
  logits_only.logits = randn({2, 3}, gen);
  student.logits = randn({2, 3}, gen);
  student.feats = {fs, fs, fs, fs};
  CHECK_THROWS_WITH_SUBSTR(at->loss(student, logits_only, batch_of(zeros({2}, DType::i64))),
                           "teacher output has no feature tap 'f1' (it has: none (logits only))");
  // a helper sized for other shapes says so
  auto small = create_distiller("fitnet", {}, ctx_for(fs, ft, 2));
  CHECK_THROWS_WITH_SUBSTR(small->loss(with_tap(feat({2, 4, 8, 8}, gen), 2, randn({2, 3}, gen)),
                                       with_tap(feat({2, 8, 4, 4}, gen), 2), batch_of(zeros({2}, DType::i64))),
                           "the regressor was sized for other feature shapes");
}

TEST_CASE("feature losses: --explain shows the intermediates in order") {
  Generator gen(81);
  Tensor fs = feat({2, 3, 4, 4}, gen), ft = feat({2, 5, 4, 4}, gen);
  std::vector<std::string> order;
  auto d = create_distiller("wkd_f", {}, ctx_for(fs, ft, 3));
  d->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
  distill_loss(*d, with_tap(fs, 3, randn({2, 3}, gen)), with_tap(ft, 3), batch_of(zeros({2}, DType::i64)));
  CHECK(order == std::vector<std::string>{"projected", "mu_s", "sigma_s", "mu_t", "sigma_t", "L_mean", "L_cov",
                                          "weight_e", "ce", "loss"});
  order.clear();
  auto a = create_distiller("at", {{"layers", "f3"}}, {});
  a->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
  distill_loss(*a, with_tap(fs, 3, randn({2, 3}, gen)), with_tap(ft, 3), batch_of(zeros({2}, DType::i64)));
  CHECK(order == std::vector<std::string>{"f3.a_s", "f3.a_t", "f3.L_at", "ce", "loss"});
  order.clear();
  auto f = create_distiller("fitnet", {{"hint_layer", "f3"}}, ctx_for(fs, ft, 3));
  f->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
  distill_loss(*f, with_tap(fs, 3, randn({2, 3}, gen)), with_tap(ft, 3), batch_of(zeros({2}, DType::i64)));
  CHECK(order == std::vector<std::string>{"regressed", "hint_target", "L_hint", "ce", "loss"});
}

// ============================================================================ end to end

using kdtest::read_metrics;
using kdtest::tiny_config;

TEST_CASE("every feature-family method trains a student end to end, trains its helper and checkpoints it") {
  struct Case {
    std::string method;
    std::vector<std::string> sets;
    std::vector<std::string> parts;
    bool helper;
  };
  const std::vector<Case> cases{
      {"fitnet", {}, {"ce", "hint"}, true},
      {"fitnet", {"hint_layer=f3", "teacher_layer=f2"}, {"ce", "hint"}, true},  // 8x8 -> 16x16: transposed conv
      {"at", {}, {"ce", "at_f1", "at_f2", "at_f3"}, false},
      {"wkd_f", {"weight=1", "grid=2"}, {"ce", "mean", "cov"}, true},
      {"catkd", {}, {"ce", "cat"}, false},
  };
  for (const Case& k : cases) {
    CAPTURE(k.method);
    CAPTURE(k.sets.size());
    train::TrainConfig c = tiny_config();
    c.method = k.method;
    c.teacher = "resnet14";
    c.teacher_weights = kdtest::tiny_teacher("resnet14");
    for (const auto& s : k.sets) train::apply_distill_override(s, c);
    const std::string dir = kdtest::temp_path("feat_" + k.method + std::to_string(k.sets.size()));
    DistillSetup setup;
    train::Run run = prepare_distill_run(c, dir, "test", setup);
    CHECK(setup.distiller->needs().feats);
    nn::NamedTensors helpers = setup.distiller->named_parameters();
    CHECK(helpers.empty() == !k.helper);
    CHECK(run.extra_params.size() == helpers.size());  // the helper's parameters are optimised
    std::map<std::string, Tensor> initial;
    for (auto& [n, p] : setup.distiller->state_dict()) initial[n] = p.clone().detach();

    train::RunSummary s = train::run_training(run, false);
    CHECK_FALSE(s.interrupted);
    std::vector<json> m = read_metrics(dir);
    REQUIRE(m.size() == 3);
    for (const auto& p : k.parts) CHECK(m[0].contains("loss_" + p));
    CHECK(m[2]["train_loss"].get<double>() < m[0]["train_loss"].get<double>());
    if (!k.helper) continue;
    // the distillation loss itself went down, and the helper moved and is in the checkpoint
    const std::string feat_part = k.parts[1];
    CHECK(m[2]["loss_" + feat_part].get<double>() < m[0]["loss_" + feat_part].get<double>());
    std::map<std::string, Tensor> ckpt = nn::to_map(nn::load_safetensors(dir + "/checkpoint.safetensors").tensors);
    for (auto& [n, p] : setup.distiller->state_dict()) {
      CAPTURE(n);
      REQUIRE(ckpt.count("distiller." + n) == 1);
      CHECK(max(abs(sub(ckpt["distiller." + n].to(DType::f32), p.to(DType::f32)))).item() == 0.0);
    }
    const Tensor& w0 = initial.at("conv_reg.conv.weight");
    CHECK(max(abs(sub(ckpt.at("distiller.conv_reg.conv.weight"), w0))).item() > 1e-4);
    CHECK(ckpt.at("distiller.conv_reg.bn.num_batches_tracked").to(DType::f32).item() == 12.0);  // 3 epochs x 4 batches
  }
}

TEST_CASE("FitNet's two-stage schedule end to end: a regime of hint epochs, then KD") {
  train::TrainConfig c = tiny_config();
  c.method = "fitnet";
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  train::apply_distill_override("stages=2", c);
  train::apply_distill_override("hint_epochs=1", c);
  const std::string dir = kdtest::temp_path("feat_fitnet_two_stage");
  DistillSetup setup;
  train::Run run = prepare_distill_run(c, dir, "test", setup);
  // the student's classifier (its one 2-D parameter) must not move during the hint stage
  auto classifier = [&run] {
    Tensor w;
    for (auto& [n, p] : run.model->named_parameters())
      if (p.dim() == 2) w = p.clone().detach();
    return w;
  };
  const Tensor fc0 = classifier();
  // the regime, watched between epochs by a regime that forwards everything to it
  struct Watch : train::Regime {
    train::Regime& inner;
    std::function<void(int64_t)> before_epoch;
    Watch(train::Regime& r, std::function<void(int64_t)> f) : inner(r), before_epoch(std::move(f)) {}
    nlohmann::json record() override { return inner.record(); }
    nn::LabeledModules modules() override { return inner.modules(); }
    nn::LabeledOptimizers optimizers() override { return inner.optimizers(); }
    void save_state(nn::TrainingCheckpoint& i) override { inner.save_state(i); }
    void restore_state(const nn::TrainingCheckpoint& ck) override { inner.restore_state(ck); }
    train::EpochReport run_epoch(int64_t e) override {
      before_epoch(e);
      return inner.run_epoch(e);
    }
    void save_best(const train::RunRecorder& r) override { inner.save_best(r); }
    void finish(const train::RunRecorder& r) override { inner.finish(r); }
  };
  std::unique_ptr<train::Regime> regime = make_fitnet_two_stage(run, setup);
  Tensor fc_after_hint;
  Watch watch(*regime, [&](int64_t e) {
    if (e == 1) fc_after_hint = classifier();  // before the first epoch of stage 2
  });
  train::run_regime(watch, run.config, dir, "test", false);
  REQUIRE(fc_after_hint.defined());
  CHECK(max(abs(sub(fc_after_hint, fc0))).item() == 0.0);
  CHECK(max(abs(sub(classifier(), fc_after_hint))).item() > 0.0);
  std::vector<json> m = read_metrics(dir);
  REQUIRE(m.size() == 3);
  CHECK(m[0]["stage"] == 1);
  CHECK(m[0]["loss_ce"].get<double>() == 0.0);
  CHECK(m[0]["loss_kd"].get<double>() == 0.0);
  CHECK(m[0]["loss_hint"].get<double>() > 0.0);
  for (int e : {1, 2}) {
    CHECK(m[e]["stage"] == 2);
    CHECK(m[e]["loss_hint"].get<double>() == 0.0);
    CHECK(m[e]["loss_kd"].get<double>() > 0.0);
    CHECK(m[e]["loss_ce"].get<double>() > 0.0);
  }
  CHECK(m[2]["train_loss"].get<double>() < m[1]["train_loss"].get<double>());
  const json config = json::parse(std::ifstream(dir + "/config.json"));
  CHECK(config["fitnet_stages"].size() == 2);
  // hint_epochs must leave stage 2 an epoch
  train::TrainConfig c2 = c;
  c2.epochs = 1;
  DistillSetup setup2;
  train::Run run2 = prepare_distill_run(c2, dir + "_short", "test", setup2);
  CHECK_THROWS_WITH_SUBSTR(make_fitnet_two_stage(run2, setup2), "hint_epochs < epochs");
}
