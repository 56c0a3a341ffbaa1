// LONDON (distill/relation/london.h): golden values and gradients from the official code's
// semantics (tests/reference/gen_london.py, after 42Shawn/LONDON distiller_london.py), including
// the connectors' parameter gradients; the power iteration against a symmetric eigen-solver; the
// gradient through the unrolled loop against the released no-grad version; finite-difference
// gradchecks; zero loss through identity connectors; OFD's margins; the registry, parameters
// and errors; and a student trained end to end with its connectors checkpointed.
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "distill/feature/wkd_f.h"
#include "distill/relation/london.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/safetensors.h"
#include "distill_test_util.h"
#include "distill_run_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::outputs_of;
using kdtest::params_from;
using kdtest::part;
using kdtest::json;
using V = std::vector<Tensor>;

namespace {

// A ModelOutput whose taps pre1..pren are `maps`.
nn::ModelOutput with_pre(const V& maps, const Tensor& logits = Tensor()) {
  nn::ModelOutput o;
  o.logits = logits;
  o.preact_feats.resize(maps.size() + 1);
  o.feats.resize(maps.size() + 1);  // (sample shapes are read when feats exist)
  for (size_t i = 0; i < maps.size(); ++i) o.preact_feats[i + 1] = o.feats[i + 1] = maps[i];
  return o;
}

DistillerContext ctx_for(const V& fs, const V& ft) {
  DistillerContext ctx;
  V zs, zt;
  for (const Tensor& f : fs) zs.push_back(zeros(f.shape()));
  for (const Tensor& f : ft) zt.push_back(zeros(f.shape()));
  ctx.student_sample = with_pre(zs);
  ctx.teacher_sample = with_pre(zt);
  ctx.seed = 9;
  return ctx;
}

BatchInfo batch_of(const Tensor& y) {
  BatchInfo b;
  b.labels = y;
  return b;
}

// The golden "london" case through the registry: inputs zs, y, fs[n], ft[n], conv_w[n], bn_w[n],
// bn_b[n], margins[n], v0_s[n-1], v0_t[n-1].
V run_london(const V& x, const json& p, std::shared_ptr<Distiller>* made = nullptr) {
  const size_t n = p.at("n").get<size_t>();
  auto at = [&](size_t block, size_t i) { return x[2 + block * n + i]; };
  V fs, ft;
  for (size_t i = 0; i < n; ++i) {
    fs.push_back(at(0, i));
    ft.push_back(at(1, i));
  }
  auto d = create_distiller("london", params_from(p, {"n"}), ctx_for(fs, ft));
  std::map<std::string, Tensor> state;
  for (size_t i = 0; i < n; ++i) {
    state[fmt::format("connectors.{}.conv.weight", i)] = at(2, i);
    state[fmt::format("connectors.{}.bn.weight", i)] = at(3, i);
    state[fmt::format("connectors.{}.bn.bias", i)] = at(4, i);
    state[fmt::format("margin{}", i + 1)] = at(5, i);
  }
  nn::LoadReport rep = d->load_state_dict(state, /*strict=*/false);
  CHECK(rep.unexpected.empty());
  CHECK(rep.shape_mismatch.empty());
  CHECK(rep.missing.size() == 3 * n);  // the BatchNorm buffers keep their initial values, as in PyTorch
  PowerStarts starts;
  const size_t v0 = 2 + 6 * n;
  for (size_t i = 0; i + 1 < n; ++i) {
    starts.student.push_back(x[v0 + i]);
    starts.teacher.push_back(x[v0 + (n - 1) + i]);
  }
  if (made) *made = d;
  auto& london = dynamic_cast<LondonDistiller&>(*d);
  // LONDON's terms with the fixture's power-iteration starts, then w_ce * CE as distill_loss adds it
  return outputs_of(add_cross_entropy(london.loss_with_starts(with_pre(fs, x[0]), with_pre(ft), batch_of(x[1]), starts),
                                      x[0], x[1], london.options().ce_weight));
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

// sigma_max(G_b) for each matrix of G (B, m, k), from the eigenvalues of G G^T (double).
std::vector<double> svd_sigma_max(const Tensor& G) {
  const int64_t B = G.size(0), m = G.size(1), k = G.size(2);
  std::vector<float> g = to_float_vector(G.contiguous());
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> A((size_t)(m * m), 0.0), w, Vec;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t c = 0; c < k; ++c)
          A[i * m + j] += (double)g[(b * m + i) * k + c] * (double)g[(b * m + j) * k + c];
    symmetric_eigen(A, m, w, Vec);
    out.push_back(std::sqrt(std::max(w.back(), 0.0)));  // ascending: the last is the largest
  }
  return out;
}

}  // namespace

// ============================================================================ golden values

TEST_CASE("LONDON: golden values and gradients from the official code's semantics") {
  kdtest::GoldenTable table = {
      {"london", [](const V& x, const json& p) { return run_london(x, p); }},
      {"london_proxy",
       [](const V& x, const json& p) { return V{lipschitz_proxy(x[0], x[1], p.at("iters").get<int64_t>())}; }},
      {"ofd_margin",
       [](const V& x, const json&) {
         std::vector<float> m = to_float_vector(x[0]), s = to_float_vector(x[1]), out;
         for (size_t i = 0; i < m.size(); ++i) out.push_back((float)ofd_margin(m[i], s[i]));
         return V{from_vector(out, {(int64_t)out.size()})};
       }},
  };
  CHECK(kdtest::run_golden_file("london.json", table) == 10);
}

TEST_CASE("LONDON: the connectors' parameter gradients match the official code's") {
  std::ifstream f(kdtest::fixture_path("london.json"));
  REQUIRE(f.good());
  json doc = json::parse(f);
  int checked = 0;
  for (const json& c : doc.at("cases")) {
    if (c.at("op") != "london") continue;
    CAPTURE(c.at("name").get<std::string>());
    V x;
    for (const json& ij : c.at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
    std::shared_ptr<Distiller> d;
    V out = run_london(x, c.at("params"), &d);
    out[0].backward(kdtest::tensor_from_json(c.at("grad_outputs")[0]));
    std::map<std::string, Tensor> params = nn::to_map(d->named_parameters());
    REQUIRE(c.at("param_grads").size() == params.size());
    for (const auto& [name, g] : c.at("param_grads").items()) {
      CAPTURE(name);
      REQUIRE(params.count(name) == 1);
      if (g.is_null()) {  // no path from the loss (base=none/at: the last connector is unused)
        CHECK((!params[name].grad().defined() || max(abs(params[name].grad())).item() == 0.0));
        continue;
      }
      REQUIRE(params[name].grad().defined());
      kdtest::Closeness cl = kdtest::allclose(params[name].grad(), kdtest::tensor_from_json(g), 1e-3, 1e-5);
      CHECK_MESSAGE(cl.ok, cl.msg);
    }
    ++checked;
  }
  CHECK(checked == 6);
}

// ============================================================================ the proxy

TEST_CASE("LONDON: the power iteration gives the largest singular value of an SVD (to 1e-4)") {
  Generator gen(17);
  SUBCASE("10 iterations, as the official code runs, on matrices with a spectral gap") {
    // G = U diag(s) W^T with orthonormal U, W from Gram-Schmidt of random matrices, s1 / s2 = 2
    const int64_t B = 3, m = 5, k = 4;
    std::vector<float> g((size_t)(B * m * k), 0.f);
    for (int64_t b = 0; b < B; ++b) {
      auto orthonormal = [&](int64_t rows, int64_t cols) {  // `cols` orthonormal columns of length `rows`
        std::vector<std::vector<double>> q;
        while ((int64_t)q.size() < cols) {
          std::vector<double> v((size_t)rows);
          for (double& e : v) e = gen.normal();
          for (const auto& u : q) {
            double d = 0;
            for (int64_t i = 0; i < rows; ++i) d += v[i] * u[i];
            for (int64_t i = 0; i < rows; ++i) v[i] -= d * u[i];
          }
          double nrm = 0;
          for (double e : v) nrm += e * e;
          for (double& e : v) e /= std::sqrt(nrm);
          q.push_back(v);
        }
        return q;
      };
      auto U = orthonormal(m, 3), W = orthonormal(k, 3);
      const double s[3] = {3.0 + b, 1.5 + 0.5 * b, 0.4};
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < k; ++j)
          for (int r = 0; r < 3; ++r) g[(b * m + i) * k + j] += (float)(U[r][i] * s[r] * W[r][j]);
    }
    Tensor G = from_vector(g, {B, m, k});
    Tensor sigma = lipschitz_proxy(G, rand({B, m, 1}, gen), 10);
    std::vector<double> ref = svd_sigma_max(G);
    for (int64_t b = 0; b < B; ++b) {
      CHECK(ref[b] == doctest::Approx(3.0 + b).epsilon(1e-5));  // the SVD recovers the constructed s1
      CHECK(std::abs(sigma.at({b}) - ref[b]) < 1e-4);
    }
  }
  SUBCASE("random transmitting matrices of feature maps, enough iterations to converge") {
    for (auto [Ca, Cb, H] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{4, 6, 4}, {8, 3, 2}, {6, 6, 8}}) {
      CAPTURE(Ca);
      Tensor a = randn({2, Ca, 2 * H, 2 * H}, gen), b = randn({2, Cb, H, H}, gen);
      Tensor G = transmitting_matrix(a, b);  // (2, Ca, Cb)
      Tensor sigma = lipschitz_proxy(G, rand({2, Ca, 1}, gen), 200);
      std::vector<double> ref = svd_sigma_max(G);
      for (int64_t i = 0; i < 2; ++i) CHECK(std::abs(sigma.at({i}) - ref[i]) < 1e-4 * std::max(1.0, ref[i]));
    }
  }
}

TEST_CASE("LONDON: the transmitting matrix by hand, with the larger map pooled") {
  Generator gen(3);
  Tensor a = randn({2, 3, 4, 4}, gen), b = randn({2, 2, 2, 2}, gen);
  Tensor G = transmitting_matrix(a, b);
  REQUIRE(G.shape() == (Shape{2, 3, 2}));
  Tensor ap = adaptive_avg_pool2d(a, Int2(2, 2));  // the larger map pooled to 2x2
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        double s = 0;
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t w = 0; w < 2; ++w) s += ap.at({n, i, h, w}) * b.at({n, j, h, w});
        CHECK(G.at({n, i, j}) == doctest::Approx(s / 4).epsilon(1e-5));
      }
  // the pooling works on either side: G(b, a) = G(a, b)^T
  Tensor Gt = transmitting_matrix(b, a);
  CHECK(max(abs(sub(Gt, G.transpose(1, 2)))).item() < 1e-6);
}

TEST_CASE("LONDON: the gradient flows through the unrolled power iteration; the released no-grad version gives none") {
  Generator gen(5);
  const int64_t B = 3, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  V ft = {randn({B, 4, 8, 8}, gen), randn({B, 6, 4, 4}, gen), randn({B, 5, 2, 2}, gen)};
  V fs0 = {randn({B, 4, 8, 8}, gen), randn({B, 6, 4, 4}, gen), randn({B, 5, 2, 2}, gen)};
  PowerStarts starts{{rand({B, 4, 1}, gen), rand({B, 6, 1}, gen)}, {rand({B, 4, 1}, gen), rand({B, 6, 1}, gen)}};
  LondonOptions o;
  o.base = "none";
  o.ce_weight = 0.0;
  o.london_weight = 1.0;  // the LONDON term alone
  auto grads = [&](bool power_grad, double* value) {
    o.power_grad = power_grad;
    V fs;
    for (const Tensor& f : fs0) fs.push_back(leaf(f.clone()));
    LossBreakdown l = london_loss(zs, y, fs, fs, ft, {}, starts, o);  // identity connection
    *value = l.total.item();
    if (l.total.requires_grad()) l.total.backward();
    double g = 0;
    for (const Tensor& f : fs)
      if (f.grad().defined()) g += sum(abs(f.grad())).item();
    return g;
  };
  double with_grad = 0, released = 0;
  const double g_unrolled = grads(true, &with_grad);
  const double g_released = grads(false, &released);
  CHECK(with_grad > 1e-6);
  CHECK(with_grad == doctest::Approx(released).epsilon(1e-6));  // the same value either way
  CHECK(g_unrolled > 1e-4);  // differentiated through the loop: the features get a gradient
  CHECK(g_released == 0.0);  // under no-grad the LONDON term cannot train anything
  // the proxy's own gradient: d sigma / dG = u v^T for the top singular pair, so <dsigma/dG, G> = sigma
  Tensor G = leaf(randn({2, 4, 3}, gen));
  Tensor sigma = lipschitz_proxy(G, rand({2, 4, 1}, gen), 50);
  sum(sigma).backward();
  Tensor inner = sum(mul(G.grad(), G.detach()), {1, 2});  // (2)
  for (int64_t b = 0; b < 2; ++b) CHECK(inner.at({b}) == doctest::Approx(sigma.at({b})).epsilon(1e-3));
}

// ============================================================================ gradchecks

TEST_CASE("LONDON: gradcheck w.r.t. the student features and logits") {
  Generator gen(23);
  const int64_t B = 2, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen));
  V ft = {add(randn({B, 3, 4, 4}, gen), 0.3), add(randn({B, 4, 2, 2}, gen), 0.3), add(randn({B, 2, 2, 2}, gen), 0.3)};
  V margins = {full({3}, -0.6), full({4}, -0.8), full({2}, -0.5)};
  PowerStarts starts{{rand({B, 3, 1}, gen), rand({B, 4, 1}, gen)}, {rand({B, 3, 1}, gen), rand({B, 4, 1}, gen)}};
  for (const std::string base : {"ofd", "none", "mse", "at"}) {
    for (bool both : {false, true}) {
      CAPTURE(base);
      CAPTURE(both);
      V fs = {leaf(randn({B, 3, 4, 4}, gen)), leaf(randn({B, 4, 2, 2}, gen)), leaf(randn({B, 2, 2, 2}, gen))};
      LondonOptions o;
      o.base = base;
      o.base_weight = base == "at" ? 10.0 : 0.5;
      o.london_weight = 5.0;
      o.connect_both = both;
      // the identity connection (the connectors' own gradients are checked against PyTorch above)
      CHECK_GRADCHECK([&](const V& x) { return london_loss(x[0], y, {x[1], x[2], x[3]}, {x[1], x[2], x[3]}, ft,
                                                           margins, starts, o).total; },
                      V{zs, fs[0], fs[1], fs[2]});
    }
  }
  SUBCASE("the proxy alone") {
    Tensor G = leaf(randn({2, 4, 5}, gen));
    Tensor v0 = rand({2, 4, 1}, gen);
    CHECK_GRADCHECK([&](const V& x) { return lipschitz_proxy(x[0], v0, 10); }, V{G});
  }
}

// ============================================================================ invariants

TEST_CASE("LONDON: zero loss when the student equals the teacher through identity connectors") {
  Generator gen(31);
  const int64_t B = 3, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = randn({B, K}, gen);
  V f = {randn({B, 4, 8, 8}, gen), randn({B, 5, 4, 4}, gen), randn({B, 3, 2, 2}, gen)};
  auto d = create_distiller("london", {}, ctx_for(f, f));
  auto& london = dynamic_cast<LondonDistiller&>(*d);
  {  // connectors = identity: 1x1 conv I, BatchNorm in eval mode with mean 0 and variance 1 - eps
    NoGradGuard ng;
    for (size_t i = 0; i < 3; ++i) {
      LondonConnector& c = london.connector(i);
      c.conv->weight.zero_();
      for (int64_t ch = 0; ch < c.conv->weight.size(0); ++ch) c.conv->weight.set({ch, ch, 0, 0}, 1.0);
      c.bn->running_var.fill_(1.0 - c.bn->eps);
      c.eval();
    }
  }
  for (size_t i = 0; i < 3; ++i) CHECK(max(abs(sub(london.connector(i).forward(f[i]), f[i]))).item() < 1e-5);
  PowerStarts same{{rand({B, 4, 1}, gen), rand({B, 5, 1}, gen)}, {}};
  same.teacher = same.student;
  LossBreakdown l = london.loss_with_starts(with_pre(f, zs), with_pre(f), batch_of(y), same);
  CHECK(part(l, "london") < 1e-9);
  CHECK(part(l, "feature") < 1e-9);  // OFD: s = t gives 0 above and below the margin
  CHECK(l.parts.size() == 2);         // LONDON's own terms: distill_loss adds the CE
  // the distiller's own random starts: both proxies converge to the same sigma
  CHECK(part(d->loss(with_pre(f, zs), with_pre(f), batch_of(y)), "london") < 1e-6);
  // another student: both terms positive, the parts add up
  V g = {randn({B, 4, 8, 8}, gen), randn({B, 5, 4, 4}, gen), randn({B, 3, 2, 2}, gen)};
  LossBreakdown l2 = london.loss_with_starts(with_pre(g, zs), with_pre(f), batch_of(y), same);
  CHECK(part(l2, "london") > 0);
  CHECK(part(l2, "feature") > 0);
  CHECK(l2.total.item() == doctest::Approx(part(l2, "feature") + part(l2, "london")).epsilon(1e-5));
}

TEST_CASE("LONDON: OFD's margins and masked loss") {
  // the margin E[x | x < 0] of N(0, 1) is -sqrt(2 / pi); of N(mu, s^2) it scales with s
  CHECK(ofd_margin(0.0, 1.0) == doctest::Approx(-std::sqrt(2.0 / 3.141592653589793)));
  CHECK(ofd_margin(0.0, 2.0) == doctest::Approx(-2.0 * std::sqrt(2.0 / 3.141592653589793)));
  CHECK(ofd_margin(5.0, 1.0) == -3.0);  // P(x < 0) < 0.001: -3 s
  CHECK(ofd_margin(-1.0, 0.5) < -1.0);  // below the mean when the mean is negative
  // measured on a map: channel 0 constant 2 (no spread: its own value, floored at 0), channel 1
  // the values -1, 1 (mu 0, s 1)
  Tensor f = from_vector(std::vector<float>{2, 2, 2, 2, -1, 1, -1, 1}, {1, 2, 2, 2});
  Tensor m = ofd_margins_of(f);
  CHECK(m.at({0}) == 0.0);
  CHECK(m.at({1}) == doctest::Approx(ofd_margin(0.0, 1.0)).epsilon(1e-6));
  // the masked loss by hand: t = (1, -2, -0.2), margin -1 -> targets (1, -1, -0.2); s = (0, -3, 0)
  Tensor t = from_vector(std::vector<float>{1, -2, -0.2f}, {1, 1, 1, 3});
  Tensor s = from_vector(std::vector<float>{0, -3, 0}, {1, 1, 1, 3});
  // (0 - 1)^2 counted (t > 0); (-3 + 1)^2 not (s below the target, t < 0); (0 + 0.2)^2 counted (s > target)
  CHECK(ofd_distillation_loss(s, t, full({1}, -1.0)).item() == doctest::Approx(1.0 + 0.04));
}

// ============================================================================ registry and errors

TEST_CASE("LONDON: registry row, defaults, parameters and error messages") {
  bool found = false;
  for (const DistillerEntry& e : distiller_registry())
    if (e.name == "london") {
      found = true;
      CHECK(e.family == "relation");
    }
  CHECK(found);
  Generator gen(1);
  V fs = {randn({2, 3, 8, 8}, gen), randn({2, 4, 4, 4}, gen), randn({2, 5, 2, 2}, gen)};
  V ft = {randn({2, 6, 8, 8}, gen), randn({2, 7, 4, 4}, gen), randn({2, 8, 2, 2}, gen)};
  auto d = create_distiller("london", {}, ctx_for(fs, ft));
  CHECK(d->needs().feats);
  Params p = d->params();
  CHECK(p["layers"] == "pre1,pre2,pre3");
  CHECK(p["base"] == "ofd");
  CHECK(p["base_weight"] == "0.001");
  CHECK(p["london_weight"] == "0.001");
  CHECK(p["power_iters"] == "10");
  CHECK(p["power_grad"] == "true");
  CHECK(p["connect_both"] == "false");
  std::map<std::string, Tensor> named = nn::to_map(d->named_parameters());
  CHECK(named.size() == 9);  // conv weight (no bias), bn weight, bn bias per connector
  CHECK(named.at("connectors.1.conv.weight").shape() == (Shape{7, 4, 1, 1}));
  std::map<std::string, Tensor> buffers = nn::to_map(d->named_buffers());
  CHECK(buffers.at("margin3").shape() == (Shape{8}));
  CHECK(create_distiller("london", {{"base", "at"}}, ctx_for(fs, ft))->params()["base_weight"] == "1000");
  CHECK(create_distiller("london", {{"base", "mse"}, {"base_weight", "3"}}, ctx_for(fs, ft))->params()["base_weight"] ==
        "3");
  // the connector initialisation: N(0, 2 / Ct) (std sqrt(2/6) for tap 1), BN weight 1, bias 0
  auto big = create_distiller("london", {{"layers", "pre1,pre2"}}, ctx_for({zeros({1, 64, 2, 2}), zeros({1, 64, 1, 1})},
                                                    {zeros({1, 128, 2, 2}), zeros({1, 128, 1, 1})}));
  Tensor w = nn::to_map(big->named_parameters()).at("connectors.0.conv.weight");
  const double sd = std::sqrt(var(w, {}, false).item());
  CHECK(sd == doctest::Approx(std::sqrt(2.0 / 128)).epsilon(0.05));
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"base", "kd"}}, ctx_for(fs, ft)), "base=ofd");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"layers", "pre3"}}, ctx_for(fs, ft)), "at least two");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"power_iters", "0"}}, ctx_for(fs, ft)), "power_iters");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"teacher_layers", "pre1,pre2"}}, ctx_for(fs, ft)),
                           "one teacher tap per student tap");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"lambda", "1"}}, ctx_for(fs, ft)), "unknown parameter");
  // a teacher tap of another size: the 1x1 connectors cannot map it
  CHECK_THROWS_WITH_SUBSTR(create_distiller("london", {{"teacher_layers", "pre2,pre1,pre3"}}, ctx_for(fs, ft)),
                           "same H and W");
  CHECK_THROWS_WITH_SUBSTR(lipschitz_proxy(randn({2, 3, 3}, gen), rand({2, 4, 1}, gen), 10), "(B, m, 1)");
}

TEST_CASE("LONDON: --explain shows the pairs' matrices and proxies in order") {
  Generator gen(2);
  V fs = {randn({2, 3, 4, 4}, gen), randn({2, 4, 2, 2}, gen)};
  V ft = {randn({2, 3, 4, 4}, gen), randn({2, 5, 2, 2}, gen)};
  auto d = create_distiller("london", {{"layers", "pre1,pre2"}}, ctx_for(fs, ft));
  std::vector<std::string> names;
  d->explain = [&](const std::string& n, const Tensor&) { names.push_back(n); };
  distill_loss(*d, with_pre(fs, randn({2, 3}, gen)), with_pre(ft), batch_of(randint(0, 3, {2}, gen)));
  const std::vector<std::string> want{"pair0.G_s", "pair0.G_t", "pair0.sigma_s", "pair0.sigma_t", "pair0.L",
                                      "L_london",  "L_feature", "ce",            "loss"};
  CHECK(names == want);
}

// ============================================================================ end to end

TEST_CASE("LONDON trains a student end to end, trains its connectors and checkpoints them with the margins") {
  train::TrainConfig c = kdtest::tiny_config();
  c.epochs = 2;
  c.method = "london";
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  const std::string dir = kdtest::temp_path("london_e2e");
  DistillSetup setup;
  train::Run run = prepare_distill_run(c, dir, "test", setup);
  nn::NamedTensors helpers = setup.distiller->named_parameters();
  CHECK(helpers.size() == 9);
  CHECK(run.extra_params.size() == helpers.size());  // the connectors are optimised
  const Tensor w0 = nn::to_map(helpers).at("connectors.0.conv.weight").clone().detach();
  // the margins were measured on the teacher's sample batch: negative, one per channel
  Tensor m1 = nn::to_map(setup.distiller->named_buffers()).at("margin1");
  CHECK(m1.numel() == 16);
  CHECK(max(m1).item() < 0.0);
  train::RunSummary s = train::run_training(run, false);
  CHECK_FALSE(s.interrupted);
  std::vector<json> m = kdtest::read_metrics(dir);
  REQUIRE(m.size() == 2);
  for (const char* p : {"loss_ce", "loss_feature", "loss_london"}) CHECK(m[0].contains(p));
  CHECK(m[0]["loss_london"].get<double>() > 0.0);
  std::map<std::string, Tensor> ckpt = nn::to_map(nn::load_safetensors(dir + "/checkpoint.safetensors").tensors);
  for (auto& [n, p] : setup.distiller->state_dict()) {
    CAPTURE(n);
    REQUIRE(ckpt.count("distiller." + n) == 1);
  }
  CHECK(max(abs(sub(ckpt.at("distiller.connectors.0.conv.weight"), w0))).item() > 1e-5);
}
