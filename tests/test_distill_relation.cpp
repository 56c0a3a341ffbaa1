// The relation family of distillation losses (distill/relation/): golden values and gradients from
// the official codes' semantics (tests/reference/gen_relation.py: mdistiller's RKD, SP and PKT,
// RepDistiller's CC with its trained embeddings, and the general mechanism's definitions);
// gradchecks w.r.t. the student features for every method and every relation psi; invariants
// (RKD and SP do not change when either network's features are scaled, zero loss when the
// student's features are the teacher's); the general mechanism with RKD's settings is RKD; the
// registry, parameters and errors; --explain; `kdlab loss` on saved taps; and each method trained
// end to end on the synthetic set.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "distill/relation/cc.h"
#include "distill/relation/pkt.h"
#include "distill/relation/relation.h"
#include "distill/relation/rkd.h"
#include "distill/relation/sp.h"
#include "engine/autograd.h"
#include "engine/npy.h"
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

// A ModelOutput whose tap `tap` ("pooled" or "f<i>") is `t`.
nn::ModelOutput with_tap(const Tensor& t, const std::string& tap, const Tensor& logits = Tensor()) {
  nn::ModelOutput o;
  o.logits = logits;
  if (tap == "pooled") {
    o.pooled = t;
  } else {
    const size_t i = (size_t)std::stoi(tap.substr(1));
    o.feats.resize(i + 1);
    o.feats[i] = t;
  }
  return o;
}

DistillerContext ctx_for(const Tensor& fs, const Tensor& ft, const std::string& tap = "pooled", uint64_t seed = 5) {
  DistillerContext ctx;
  ctx.student_sample = with_tap(zeros(fs.shape()), tap);
  ctx.teacher_sample = with_tap(zeros(ft.shape()), tap);
  ctx.seed = seed;
  return ctx;
}

BatchInfo batch_of(const Tensor& y) {
  BatchInfo b;
  b.labels = y;
  return b;
}

std::string tap_of(const json& p) { return p.contains("tap") ? p["tap"].get<std::string>() : std::string("pooled"); }

// The golden cases run through the registry (factories and taps exercised too).
V run_method(const std::string& method, const V& x, const json& p, const std::string& tap) {
  // inputs: zs, fs, ft, labels
  auto d = create_distiller(method, params_from(p), {});
  return outputs_of(distill_loss(*d, with_tap(x[1], tap, x[0]), with_tap(x[2], tap), batch_of(x[3])));
}

V run_sp(const V& x, const json& p) {
  auto d = create_distiller("sp", params_from(p), {});
  return outputs_of(distill_loss(*d, with_tap(x[1], "f3", x[0]), with_tap(x[2], "f3"), batch_of(x[3])));
}

// CC: form=code loads the case's embedding weights (inputs 4..7) into the distiller's helpers.
V run_cc(const V& x, const json& p, std::shared_ptr<Distiller>* made = nullptr) {
  const std::string tap = tap_of(p);
  auto d = create_distiller("cc", params_from(p), ctx_for(x[1], x[2], tap));
  if (p["form"] == "code") {
    std::map<std::string, Tensor> state{
        {"embed_s.weight", x[4]}, {"embed_s.bias", x[5]}, {"embed_t.weight", x[6]}, {"embed_t.bias", x[7]}};
    nn::LoadReport rep = d->load_state_dict(state, /*strict=*/true);
    CHECK(rep.missing.empty());
    CHECK(rep.unexpected.empty());
  }
  if (made) *made = d;
  return outputs_of(distill_loss(*d, with_tap(x[1], tap, x[0]), with_tap(x[2], tap), batch_of(x[3])));
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

}  // namespace

// ============================================================================ golden values

TEST_CASE("relation losses: golden values and gradients from the official codes") {
  kdtest::GoldenTable table = {
      {"rkd", [](const V& x, const json& p) { return run_method("rkd", x, p, tap_of(p)); }},
      {"pkt", [](const V& x, const json& p) { return run_method("pkt", x, p, "pooled"); }},
      {"relation", [](const V& x, const json& p) { return run_method("relation", x, p, "pooled"); }},
      {"sp", [](const V& x, const json& p) { return run_sp(x, p); }},
      {"cc", [](const V& x, const json& p) { return run_cc(x, p); }},
  };
  CHECK(kdtest::run_golden_file("relation_losses.json", table) == 19);
}

TEST_CASE("CC: the gradients of both trained embeddings match RepDistiller's") {
  std::ifstream f(kdtest::fixture_path("relation_losses.json"));
  REQUIRE(f.good());
  json doc = json::parse(f);
  int checked = 0;
  for (const json& c : doc.at("cases")) {
    if (!c.contains("param_grads")) continue;
    CAPTURE(c.at("name").get<std::string>());
    V x;
    for (const json& ij : c.at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
    std::shared_ptr<Distiller> d;
    V out = run_cc(x, c.at("params"), &d);
    out[0].backward(kdtest::tensor_from_json(c.at("grad_outputs")[0]));
    std::map<std::string, Tensor> params = nn::to_map(d->named_parameters());
    REQUIRE(c.at("param_grads").size() == 4);
    for (const auto& [name, g] : c.at("param_grads").items()) {
      CAPTURE(name);
      REQUIRE(params.count(name) == 1);
      REQUIRE(params[name].grad().defined());
      kdtest::Closeness cl = kdtest::allclose(params[name].grad(), kdtest::tensor_from_json(g), 1e-4, 1e-6);
      CHECK_MESSAGE(cl.ok, cl.msg);
    }
    // the teacher's embedding learns from this loss too (RepDistiller trains both)
    CHECK(max(abs(params["embed_t.weight"].grad())).item() > 0);
    ++checked;
  }
  CHECK(checked == 2);
}

// ============================================================================ gradchecks

TEST_CASE("relation losses: gradcheck w.r.t. the student features and logits") {
  Generator gen(11);
  const int64_t B = 4, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen));
  Tensor fs = leaf(randn({B, 5}, gen));
  Tensor ft = mul(randn({B, 7}, gen), 1.5);

  SUBCASE("rkd, plain and squared distances") {
    for (bool squared : {false, true}) {
      CAPTURE(squared);
      RkdOptions o;
      o.squared = squared;
      CHECK_GRADCHECK([&](const V& x) { return rkd_loss(x[0], y, x[1], ft, o).total; }, V{zs, fs});
    }
  }
  SUBCASE("sp on 4-D maps") {
    Tensor f4 = leaf(randn({B, 2, 2, 2}, gen));
    Tensor t4 = randn({B, 3, 2, 2}, gen);
    SpOptions o;
    o.feat_weight = 10.0;
    CHECK_GRADCHECK([&](const V& x) { return sp_loss(x[0], y, x[1], t4, o).total; }, V{zs, f4});
  }
  SUBCASE("pkt") {
    PktOptions o;
    o.feat_weight = 100.0;
    CHECK_GRADCHECK([&](const V& x) { return pkt_loss(x[0], y, x[1], ft, o).total; }, V{zs, fs});
  }
  SUBCASE("cc, both forms, and the embeddings' parameters") {
    CcOptions o;
    o.feat_weight = 1.0;
    o.feat_dim = 3;
    Generator g2(3);
    nn::Linear es(5, 3, g2), et(7, 3, g2);
    CHECK_GRADCHECK([&](const V& x) { return cc_loss(x[0], y, x[1], ft, &es, &et, o).total; }, V{zs, fs});
    CHECK_GRADCHECK([&](const V& x) { return cc_loss(zs, y, fs, ft, &es, &et, o).total; },
                    V{es.weight, et.weight, et.bias});
    o.form = "paper";
    o.feat_weight = 10.0;
    CHECK_GRADCHECK([&](const V& x) { return cc_loss(x[0], y, x[1], ft, nullptr, nullptr, o).total; }, V{zs, fs});
  }
  SUBCASE("the general mechanism: every psi with a d") {
    struct Combo {
      std::string psi, d;
    };
    for (const Combo& c : std::vector<Combo>{{"distance", "huber"},
                                             {"angle", "mse"},
                                             {"gram", "frobenius"},
                                             {"prob", "kl"},
                                             {"corr", "smooth_l1"}}) {
      CAPTURE(c.psi);
      RelationMethodOptions o;
      o.rel.psi = c.psi;
      o.rel.d = c.d;
      o.weight = 5.0;
      CHECK_GRADCHECK([&](const V& x) { return relation_method_loss(x[0], y, x[1], ft, o).total; }, V{zs, fs});
    }
  }
}

// ============================================================================ invariants

TEST_CASE("RKD and SP do not change when the student's or the teacher's features are scaled") {
  Generator gen(21);
  const int64_t B = 5, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  Tensor fs = randn({B, 6}, gen), ft = randn({B, 4}, gen);
  RkdOptions ro;
  ro.ce_weight = 0.0;
  const LossBreakdown base = rkd_loss(zs, y, fs, ft, ro);
  CHECK(part(base, "distance") > 0);
  CHECK(part(base, "angle") > 0);
  Tensor ms = randn({B, 2, 3, 3}, gen), mt = abs(randn({B, 4, 2, 2}, gen));
  SpOptions so;
  so.ce_weight = 0.0;
  const double sp_base = sp_loss(zs, y, ms, mt, so).total.item();
  CHECK(sp_base > 0);
  for (double c : {0.01, 3.0, 250.0}) {
    CAPTURE(c);
    for (int side = 0; side < 2; ++side) {
      CAPTURE(side);
      const LossBreakdown scaled = side == 0 ? rkd_loss(zs, y, mul(fs, c), ft, ro) : rkd_loss(zs, y, fs, mul(ft, c), ro);
      CHECK(part(scaled, "distance") == doctest::Approx(part(base, "distance")).epsilon(1e-4));
      CHECK(part(scaled, "angle") == doctest::Approx(part(base, "angle")).epsilon(1e-4));
      const double sp = side == 0 ? sp_loss(zs, y, mul(ms, c), mt, so).total.item()
                                  : sp_loss(zs, y, ms, mul(mt, c), so).total.item();
      CHECK(sp == doctest::Approx(sp_base).epsilon(1e-4));
    }
  }
  // the normalised distances have mean 1 over the off-diagonal pairs; angles lie in [-1, 1]
  Tensor psi_d = psi_distance(fs, false);
  CHECK(sum(psi_d).item() / (double)(B * (B - 1)) == doctest::Approx(1.0).epsilon(1e-5));
  for (int64_t i = 0; i < B; ++i) CHECK(psi_d.at({i, i}) == 0.0);
  Tensor psi_a = psi_angle(fs);
  CHECK(psi_a.shape() == Shape{B, B, B});
  CHECK(max(abs(psi_a)).item() <= 1.0 + 1e-5);
  // <u_ij, u_ij> = 1 off the diagonal, and the angle at i with j = i is 0
  CHECK(psi_a.at({0, 1, 1}) == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(psi_a.at({2, 2, 3}) == 0.0);
  // RKD's distance by hand for one pair
  std::vector<float> a = to_float_vector(fs.select(0, 1).contiguous()), b = to_float_vector(fs.select(0, 3).contiguous());
  double d13 = 0;
  for (size_t k = 0; k < a.size(); ++k) d13 += (a[k] - b[k]) * (a[k] - b[k]);
  CHECK(pairwise_distance(fs, false).at({1, 3}) == doctest::Approx(std::sqrt(d13)).epsilon(1e-5));
  CHECK(pairwise_distance(fs, true).at({1, 3}) == doctest::Approx(d13).epsilon(1e-5));
}

TEST_CASE("relation losses are 0 when the student's features are the teacher's, and positive otherwise") {
  Generator gen(31);
  const int64_t B = 4, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  Tensor f = randn({B, 6}, gen), g = randn({B, 6}, gen);
  Tensor m = abs(randn({B, 3, 2, 2}, gen));
  for (const Tensor* t : {&f, &g}) {
    const bool same = t == &f;
    CAPTURE(same);
    LossBreakdown r = rkd_loss(zs, y, f, *t, RkdOptions{});
    LossBreakdown p = pkt_loss(zs, y, f, *t, PktOptions{});
    if (same) {
      CHECK(std::abs(part(r, "distance")) < 1e-6);
      CHECK(std::abs(part(r, "angle")) < 1e-6);
      CHECK(std::abs(part(p, "pkt")) < 1e-3);  // 30000 x float rounding of a 0 KL
    } else {
      CHECK(part(r, "distance") > 0);
      CHECK(part(r, "angle") > 0);
      CHECK(part(p, "pkt") > 0);
    }
  }
  CHECK(std::abs(part(sp_loss(zs, y, m, m, SpOptions{}), "sp")) < 1e-6);
  CHECK(part(sp_loss(zs, y, m, abs(randn({B, 3, 2, 2}, gen)), SpOptions{}), "sp") > 0);
  // CC's code: the same features through the same embedding give delta = 0
  Generator g2(4);
  nn::Linear e(6, 3, g2);
  CcOptions co;
  CHECK(part(cc_loss(zs, y, f, f, &e, &e, co), "cc") == 0.0);
  CHECK(part(cc_loss(zs, y, f, g, &e, &e, co), "cc") > 0);
  co.form = "paper";
  CHECK(std::abs(part(cc_loss(zs, y, f, f, nullptr, nullptr, co), "cc")) < 1e-8);
  // every psi of the general mechanism
  for (const std::string psi : {"distance", "angle", "gram", "prob", "corr"}) {
    CAPTURE(psi);
    RelationOptions o;
    o.psi = psi;
    o.d = psi == "prob" ? "kl" : "mse";
    CHECK(std::abs(relation_loss(f, f, o).item()) < 1e-7);
    CHECK(relation_loss(f, g, o).item() > 0);
  }
}

TEST_CASE("the general mechanism with RKD's settings is RKD") {
  Generator gen(41);
  const int64_t B = 6, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  Tensor fs = randn({B, 5}, gen), ft = randn({B, 8}, gen);
  nn::ModelOutput s = with_tap(fs, "pooled", zs), t = with_tap(ft, "pooled");
  LossBreakdown rkd = distill_loss(*create_distiller("rkd", {}, {}), s, t, batch_of(y));
  LossBreakdown dist = distill_loss(
      *create_distiller("relation", {{"psi", "distance"}, {"d", "smooth_l1"}, {"beta", "1"}, {"weight", "25"}}, {}), s,
      t, batch_of(y));
  LossBreakdown angle = distill_loss(
      *create_distiller("relation", {{"psi", "angle"}, {"d", "smooth_l1"}, {"weight", "50"}}, {}), s, t, batch_of(y));
  CHECK(part(dist, "distance") == doctest::Approx(part(rkd, "distance")).epsilon(1e-6));
  CHECK(part(angle, "angle") == doctest::Approx(part(rkd, "angle")).epsilon(1e-6));
  CHECK(part(dist, "ce") == doctest::Approx(part(rkd, "ce")).epsilon(1e-6));
  CHECK(rkd.total.item() ==
        doctest::Approx(dist.total.item() + angle.total.item() - part(rkd, "ce")).epsilon(1e-6));
  // the same holds for SP and PKT against their relation settings
  Tensor ms = randn({B, 2, 3, 3}, gen), mt = randn({B, 4, 3, 3}, gen);
  CHECK(part(sp_loss(zs, y, ms, mt, SpOptions{}), "sp") ==
        doctest::Approx(3000.0 * relation_loss(ms, mt, sp_relation()).item()).epsilon(1e-6));
  LossBreakdown gen_sp = create_distiller("relation", {{"psi", "gram"}, {"d", "frobenius"}, {"reduction", "mean"},
                                                        {"weight", "3000"}, {"tap", "f3"}},
                                          {})
                             ->loss(with_tap(ms, "f3", zs), with_tap(mt, "f3"), batch_of(y));
  CHECK(part(gen_sp, "gram") == doctest::Approx(part(sp_loss(zs, y, ms, mt, SpOptions{}), "sp")).epsilon(1e-6));
  LossBreakdown gen_pkt =
      create_distiller("relation", {{"psi", "prob"}, {"d", "kl"}, {"weight", "30000"}}, {})->loss(s, t, batch_of(y));
  CHECK(part(gen_pkt, "prob") == doctest::Approx(part(pkt_loss(zs, y, fs, ft, PktOptions{}), "pkt")).epsilon(1e-6));
}

// ============================================================================ registry, parameters, errors

TEST_CASE("relation family: registry rows, defaults and error messages") {
  Generator gen(51);
  std::vector<std::string> names;
  for (const auto& e : distiller_registry())
    if (e.family == "relation") names.push_back(e.name);
  for (const char* m : {"rkd", "sp", "pkt", "cc", "relation"})
    CHECK(std::find(names.begin(), names.end(), m) != names.end());

  auto rkd = create_distiller("rkd", {}, {});
  CHECK(rkd->needs().pooled);  // on the pooled tap: the teacher cache can serve it
  CHECK_FALSE(rkd->needs().feats);
  CHECK(rkd->needs().cacheable());
  CHECK(create_distiller("rkd", {{"teacher_tap", "f3"}, {"tap", "f3"}}, {})->needs().feats);
  CHECK_FALSE(create_distiller("sp", {}, {})->needs().cacheable());  // SP reads a feature map
  CHECK(rkd->params() == Params{{"tap", "pooled"}, {"teacher_tap", "pooled"}, {"ce_weight", "1"},
                                {"distance_weight", "25"}, {"angle_weight", "50"}, {"squared", "false"}});
  CHECK(rkd->named_parameters().empty());
  CHECK(create_distiller("sp", {}, {})->params() ==
        Params{{"layer", "f3"}, {"teacher_layer", "f3"}, {"ce_weight", "1"}, {"feat_weight", "3000"}});
  CHECK(create_distiller("sp", {{"layer", "f4"}}, {})->params()["teacher_layer"] == "f4");
  CHECK(create_distiller("pkt", {}, {})->params() == Params{{"tap", "pooled"}, {"teacher_tap", "pooled"}, {"ce_weight", "1"},
                                                            {"feat_weight", "30000"}, {"eps", "1e-07"}});
  Tensor ps = randn({2, 6}, gen), pt = randn({2, 10}, gen);
  auto cc = create_distiller("cc", {}, ctx_for(ps, pt));
  CHECK(cc->params() == Params{{"tap", "pooled"}, {"teacher_tap", "pooled"}, {"ce_weight", "1"}, {"feat_weight", "0.02"},
                               {"form", "code"}, {"feat_dim", "128"}});
  std::map<std::string, Shape> shapes;
  for (auto& [n, p] : cc->named_parameters()) shapes[n] = p.shape();
  CHECK(shapes == std::map<std::string, Shape>{{"embed_s.weight", {128, 6}}, {"embed_s.bias", {128}},
                                               {"embed_t.weight", {128, 10}}, {"embed_t.bias", {128}}});
  CHECK(create_distiller("cc", cc->params(), ctx_for(ps, pt))->params() == cc->params());
  auto paper = create_distiller("cc", {{"form", "paper"}}, {});
  CHECK(paper->named_parameters().empty());
  CHECK(paper->params()["gamma"] == "0.4");
  CHECK(paper->params()["order"] == "2");
  auto rel = create_distiller("relation", {}, {});
  CHECK(rel->params() == Params{{"psi", "distance"}, {"d", "smooth_l1"}, {"reduction", "mean"}, {"tap", "pooled"},
                                {"teacher_tap", "pooled"}, {"weight", "1"}, {"ce_weight", "1"}, {"beta", "1"},
                                {"squared", "false"}});
  CHECK(create_distiller("relation", {{"d", "frobenius"}, {"psi", "gram"}}, {})->params()["reduction"] == "sum");
  for (const auto& p : std::vector<Params>{{{"psi", "prob"}, {"d", "kl"}},
                                           {{"psi", "corr"}, {"d", "mse"}, {"gamma", "0.3"}, {"order", "3"}},
                                           {{"psi", "angle"}, {"d", "huber"}, {"beta", "0.5"}, {"reduction", "sum"}}}) {
    auto d = create_distiller("relation", p, {});
    CHECK(create_distiller("relation", d->params(), {})->params() == d->params());
  }

  // errors name the problem and the fix
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"psi", "cosine"}}, {}),
                           "psi=cosine is not a relation; choose one of: distance, angle, gram, prob, corr");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"d", "l2"}}, {}), "d=l2 is not a distance");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"d", "kl"}}, {}), "use it with psi=prob");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"reduction", "max"}}, {}), "reduction=max is not a reduction");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"d", "mse"}, {"beta", "2"}}, {}),
                           "beta is read by d=smooth_l1 and d=huber only");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"gamma", "2"}}, {}), "gamma is read by psi=corr only");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("relation", {{"tap", "layer4"}}, {}), "'layer4' is not a feature tap");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("rkd", {{"w_d", "25"}}, {}), "rkd: unknown parameter w_d");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("cc", {}, {}), "feature shapes are unknown");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("cc", {{"form", "taylor"}}, {}), "form=taylor is not a CC form");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("cc", {{"gamma", "1"}}, ctx_for(ps, pt)), "add form=paper");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("pkt", {{"eps", "0"}}, {}), "eps must be > 0");
  // a relation needs pairs
  Tensor z1 = randn({1, 3}, gen), y1 = zeros({1}, DType::i64);
  CHECK_THROWS_WITH_SUBSTR(rkd->loss(with_tap(randn({1, 4}, gen), "pooled", z1), with_tap(randn({1, 4}, gen), "pooled"),
                                     batch_of(y1)),
                           "needs a batch of at least 2");
  // the teacher cache's outputs have no features
  nn::ModelOutput logits_only;
  logits_only.logits = randn({2, 3}, gen);
  CHECK_THROWS_WITH_SUBSTR(rkd->loss(with_tap(ps, "pooled", randn({2, 3}, gen)), logits_only, batch_of(zeros({2}, DType::i64))),
                           "teacher output has no feature tap 'pooled'");
  // embeddings sized for other features say so
  CHECK_THROWS_WITH_SUBSTR(cc->loss(with_tap(randn({2, 5}, gen), "pooled", randn({2, 3}, gen)), with_tap(pt, "pooled"),
                                    batch_of(zeros({2}, DType::i64))),
                           "the embeddings were sized for features of width 6");
}

TEST_CASE("relation losses: --explain shows the intermediates in order") {
  Generator gen(61);
  Tensor zs = randn({3, 4}, gen), y = zeros({3}, DType::i64);
  Tensor fs = randn({3, 5}, gen), ft = randn({3, 6}, gen);
  auto order_of = [&](const std::string& method, const Params& p, const DistillerContext& ctx, const std::string& tap,
                      const Tensor& a, const Tensor& b) {
    std::vector<std::string> order;
    auto d = create_distiller(method, p, ctx);
    d->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
    distill_loss(*d, with_tap(a, tap, zs), with_tap(b, tap), batch_of(y));
    return order;
  };
  CHECK(order_of("rkd", {}, {}, "pooled", fs, ft) ==
        std::vector<std::string>{"distance.dist_t", "distance.mu_t", "distance.psi_t", "distance.dist_s",
                                 "distance.mu_s", "distance.psi_s", "distance.L", "angle.unit_t", "angle.psi_t",
                                 "angle.unit_s", "angle.psi_s", "angle.L", "ce", "loss"});
  Tensor ms = randn({3, 2, 2, 2}, gen), mt = randn({3, 3, 2, 2}, gen);
  CHECK(order_of("sp", {}, {}, "f3", ms, mt) ==
        std::vector<std::string>{"sp.gram_t", "sp.psi_t", "sp.gram_s", "sp.psi_s", "sp.L", "ce", "loss"});
  CHECK(order_of("pkt", {}, {}, "pooled", fs, ft) ==
        std::vector<std::string>{"pkt.cos_t", "pkt.psi_t", "pkt.cos_s", "pkt.psi_s", "pkt.L", "ce", "loss"});
  CHECK(order_of("cc", {}, ctx_for(fs, ft), "pooled", fs, ft) ==
        std::vector<std::string>{"e_s", "e_t", "delta", "L_CC", "ce", "loss"});
  CHECK(order_of("relation", {{"psi", "corr"}, {"d", "mse"}}, {}, "pooled", fs, ft) ==
        std::vector<std::string>{"corr.cos_t", "corr.psi_t", "corr.cos_s", "corr.psi_s", "corr.L", "ce", "loss"});
}

// ============================================================================ the loss inspector

namespace {

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  REQUIRE(pclose(p) == 0);
  return out;
}

}  // namespace

TEST_CASE("kdlab loss rkd|sp|pkt|cc|relation on saved taps: the library's value, gradients, --explain") {
  const std::string dir = kdtest::temp_path("loss_relation");
  fs::create_directories(dir);
  Generator g(71);
  const int64_t B = 4, K = 5;
  Tensor zs = randn({B, K}, g), zt = randn({B, K}, g), y = from_vector(std::vector<int64_t>{0, 3, 4, 1}, {B});
  Tensor ps = randn({B, 6}, g), pt = randn({B, 9}, g);
  Tensor f3s = abs(randn({B, 3, 2, 2}, g)), f3t = abs(randn({B, 5, 2, 2}, g));
  for (auto& [name, t] : std::vector<std::pair<std::string, Tensor>>{
           {"zs", zs}, {"zt", zt}, {"y", y}, {"ps", ps}, {"pt", pt}, {"f3s", f3s}, {"f3t", f3t}})
    save_npy(dir + "/" + name + ".npy", t);
  const std::string common = std::string(KDLAB_BIN) + " loss {} --student-logits " + dir + "/zs.npy --teacher-logits " +
                             dir + "/zt.npy --labels " + dir + "/y.npy ";
  auto cmd_for = [&](const std::string& method, const std::string& tap, const std::string& extra) {
    std::string c = common;
    c.replace(c.find("{}"), 2, method);
    const bool pooled = tap == "pooled";
    return c + "--student-feat " + tap + "=" + dir + (pooled ? "/ps.npy" : "/f3s.npy") + " --teacher-feat " + tap + "=" +
           dir + (pooled ? "/pt.npy" : "/f3t.npy") + " " + extra;
  };
  struct Case {
    std::string method, tap, sets;
    Params params;
    std::vector<std::string> parts;
  };
  for (const Case& k : std::vector<Case>{{"rkd", "pooled", "", {}, {"ce", "distance", "angle"}},
                                         {"sp", "f3", "", {}, {"ce", "sp"}},
                                         {"pkt", "pooled", "", {}, {"ce", "pkt"}},
                                         {"cc", "pooled", "", {}, {"ce", "cc"}},
                                         {"relation", "pooled", "--set psi=angle --set d=huber --set beta=0.5",
                                          {{"psi", "angle"}, {"d", "huber"}, {"beta", "0.5"}},
                                          {"ce", "angle"}}}) {
    CAPTURE(k.method);
    const bool pooled = k.tap == "pooled";
    // the same distiller in C++ (helpers from seed 0, kdlab loss's default --seed)
    nn::ModelOutput s = with_tap(pooled ? ps : f3s, k.tap, zs), t = with_tap(pooled ? pt : f3t, k.tap, zt);
    DistillerContext ctx;
    ctx.num_classes = K;
    ctx.student_sample = s;
    ctx.teacher_sample = t;
    ctx.seed = 0;
    Tensor fsl = (pooled ? ps : f3s).clone().detach().requires_grad_();
    nn::ModelOutput sl = with_tap(fsl, k.tap, zs);
    LossBreakdown expected = distill_loss(*create_distiller(k.method, k.params, ctx), sl, t, batch_of(y));
    expected.total.backward();

    json j = json::parse(run_capture(cmd_for(k.method, k.tap, k.sets + " --json --grad-out " + dir + "/g_" + k.method)));
    CHECK(j["loss"].get<double>() == doctest::Approx(expected.total.item()).epsilon(1e-5));
    for (const auto& p : k.parts) CHECK(j["parts"][p].get<double>() == doctest::Approx(part(expected, p)).epsilon(1e-5));
    Tensor grad = load_npy(dir + "/g_" + k.method + "/" + k.tap + ".npy");
    CHECK(grad.shape() == fsl.shape());
    CHECK(max(abs(grad)).item() > 0);  // the relation reaches the student's features
    kdtest::Closeness cl = kdtest::allclose(grad, fsl.grad(), 1e-4, 1e-6);
    CHECK_MESSAGE(cl.ok, cl.msg);
  }
  // --explain prints the intermediates by name
  const std::string text = run_capture(cmd_for("rkd", "pooled", "--explain"));
  for (const char* name : {"distance.dist_t", "distance.mu_s", "angle.unit_s", "angle.L", "loss"})
    CHECK(text.find(name) != std::string::npos);
}

// ============================================================================ end to end

using kdtest::read_metrics;
using kdtest::tiny_config;

TEST_CASE("every relation-family method trains a student end to end; CC's embeddings are trained and checkpointed") {
  struct Case {
    std::string method;
    std::vector<std::string> sets;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases{
      {"rkd", {}, {"ce", "distance", "angle"}},
      {"sp", {}, {"ce", "sp"}},
      {"pkt", {}, {"ce", "pkt"}},
      {"cc", {}, {"ce", "cc"}},
      {"relation", {"psi=corr", "d=mse", "weight=100"}, {"ce", "corr"}},
  };
  for (const Case& k : cases) {
    CAPTURE(k.method);
    train::TrainConfig c = tiny_config();
    c.method = k.method;
    c.teacher = "resnet14";
    c.teacher_weights = kdtest::tiny_teacher("resnet14");
    for (const auto& s : k.sets) train::apply_distill_override(s, c);
    const std::string dir = kdtest::temp_path("rel_" + k.method);
    DistillSetup setup;
    train::Run run = prepare_distill_run(c, dir, "test", setup);
    CHECK((setup.distiller->needs().feats || setup.distiller->needs().pooled));
    const bool helper = k.method == "cc";
    CHECK(setup.distiller->named_parameters().empty() == !helper);
    CHECK(run.extra_params.size() == setup.distiller->named_parameters().size());
    std::map<std::string, Tensor> initial;
    for (auto& [n, p] : setup.distiller->state_dict()) initial[n] = p.clone().detach();

    train::RunSummary s = train::run_training(run, false);
    CHECK_FALSE(s.interrupted);
    std::vector<json> m = read_metrics(dir);
    REQUIRE(m.size() == 3);
    for (const auto& p : k.parts) {
      CHECK(m[0].contains("loss_" + p));
      CHECK(std::isfinite(m[2]["loss_" + p].get<double>()));
    }
    CHECK(m[2]["train_loss"].get<double>() < m[0]["train_loss"].get<double>());
    if (!helper) continue;
    std::map<std::string, Tensor> ckpt = nn::to_map(nn::load_safetensors(dir + "/checkpoint.safetensors").tensors);
    for (const char* n : {"embed_s.weight", "embed_t.weight"}) {
      CAPTURE(n);
      REQUIRE(ckpt.count(std::string("distiller.") + n) == 1);
      CHECK(max(abs(sub(ckpt.at(std::string("distiller.") + n), initial.at(n)))).item() > 1e-5);  // trained
    }
  }
}
