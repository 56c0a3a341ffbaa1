// The output (logit) family of distillation losses (distill/output/): golden values and gradients
// from the official codes' semantics (tests/reference/gen_output_losses.py), the invariants the
// papers state (DKD's decomposition of KL, KD's gradient, non-negativity, Sinkhorn marginals, the
// CKA cost matrix), gradchecks, the registry and the option tables, error messages, a few optimisation
// steps, and the `kdlab loss` inspector run end to end.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/wait.h>

#include "distill/distiller.h"
#include "distill/output/dgkd.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "distill/output/wkd_cost.h"
#include "distill/output/wkd_l.h"
#include "engine/npy.h"
#include "distill_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::outputs_of;
using kdtest::params_from;
using kdtest::part;
using kdtest::json;
using V = std::vector<Tensor>;

namespace {

LossBreakdown run(Distiller& d, const Tensor& zs, const Tensor& zt, const Tensor& y, int64_t epoch = 1,
                  int64_t total_epochs = 240, const std::vector<Tensor>& assistants = {}) {
  nn::ModelOutput s, t;
  s.logits = zs;
  t.logits = zt;
  BatchInfo b;
  b.labels = y;
  b.assistant_logits = assistants;  // DGKD's declared need
  b.epoch = epoch;
  b.total_epochs = total_epochs;
  return distill_loss(d, s, t, b);  // w_ce * CE + the method's terms: the official total
}

Tensor random_labels(int64_t B, int64_t K, Generator& gen) { return randint(0, K, {B}, gen); }

Tensor leaf(Tensor t) { return t.requires_grad_(); }

// A symmetric cost matrix with zero diagonal: 1 - cos between random class prototypes.
Tensor random_cost(int64_t K, Generator& gen) { return cost_matrix_cosine(randn({K, 6}, gen)); }

// Records every intermediate a loss shows.
struct Recorder {
  std::map<std::string, Tensor> seen;
  std::vector<std::string> order;
  ExplainFn fn() {
    return [this](const std::string& name, const Tensor& t) {
      seen[name] = t.detach();
      order.push_back(name);
    };
  }
};

// A small option table with every field type, one option in use only when mode=b.
struct Demo {
  double x = 0.5;
  int64_t n = 3;
  bool on = false;
  std::string mode = "a";
  std::vector<std::string> taps{"f1", "f2"};
  double only_b = 7;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {
    f("x", o.x, "a number");
    f("n", o.n, "an integer");
    f("on", o.on, "a flag");
    f("mode", o.mode, "a or b");
    f("taps", o.taps, "a list");
    f("only_b", o.only_b, "mode=b only", o.mode == "b");
  }
};

}  // namespace

// ============================================================================ golden values

TEST_CASE("output losses: golden values and gradients from the official codes") {
  kdtest::GoldenTable table = {
      {"kd",
       [](const V& x, const json& p) {
         auto d = create_distiller("kd", params_from(p), {});
         return outputs_of(run(*d, x[0], x[1], x[2]));
       }},
      {"dkd",
       [](const V& x, const json& p) {
         auto d = create_distiller("dkd", params_from(p, {"epoch"}), {});
         return outputs_of(run(*d, x[0], x[1], x[2], p["epoch"].get<int64_t>()));
       }},
      {"dgkd",
       [](const V& x, const json& p) {
         DgkdOptions o;
         o.T = p["T"].get<double>();
         o.lambda = p["lam"].get<double>();
         o.ce_weight = p["ce_weight"].get<double>();
         std::vector<bool> kept;
         for (int k : p["kept"].get<std::vector<int>>()) kept.push_back(k != 0);
         V guides(x.begin() + 2, x.end());
         return outputs_of(add_cross_entropy(dgkd_loss(x[0], guides, x[1], kept, o), x[0], x[1], o.ce_weight));
       }},
      {"wkd_l",
       [](const V& x, const json& p) {
         DistillerContext ctx;
         ctx.class_cost = x[3];  // WKD-L's declared need: a class cost matrix
         auto d = create_distiller("wkd_l", params_from(p, {"epoch", "total_epochs"}), ctx);
         return outputs_of(run(*d, x[0], x[1], x[2], p["epoch"].get<int64_t>(), p["total_epochs"].get<int64_t>()));
       }},
      {"cost_cka", [](const V& x, const json&) { return V{cost_matrix_cka(x[0])}; }},
      {"cost_cosine", [](const V& x, const json&) { return V{cost_matrix_cosine(x[0])}; }},
  };
  CHECK(kdtest::run_golden_file("golden_output_losses.json", table) == 26);
}

// ============================================================================ invariants

TEST_CASE("dkd: KL(pt || ps) = TCKD + (1 - pt_y) NCKD per sample, before the T^2") {
  Generator gen(11);
  using BKT = std::tuple<int64_t, int64_t, double>;
  for (auto [B, K, T] : std::vector<BKT>{{4, 5, 4.0}, {3, 10, 1.0}, {6, 3, 2.5}, {2, 100, 8.0}}) {
    CAPTURE(B);
    CAPTURE(K);
    CAPTURE(T);
    Tensor zs = mul(randn({B, K}, gen), 3.0), zt = mul(randn({B, K}, gen), 3.0), y = random_labels(B, K, gen);
    Recorder rec;
    DkdOptions o;
    o.T = T;
    dkd_loss(zs, zt, y, o, 20, rec.fn());
    Tensor kl = sum(kl_div(log_softmax(div(zs, T), 1), softmax(div(zt, T), 1), Reduction::None), {1});  // (B)
    Tensor pt_y = rec.seen.at("bt").select(1, 0);                                                      // (B)
    Tensor rhs = add(rec.seen.at("tckd_b"), mul(rsub(1.0, pt_y), rec.seen.at("nckd_b")));
    auto c = kdtest::allclose(rhs, kl, 1e-4, 1e-6);
    INFO(c.msg);
    CHECK(c.ok);
  }
}

TEST_CASE("kd: the gradient is T (ps - pt) / B times kd_weight, plus the CE gradient") {
  Generator gen(12);
  for (auto [B, K, T] : std::vector<std::tuple<int64_t, int64_t, double>>{{4, 5, 4.0}, {3, 7, 1.0}, {5, 10, 8.0}}) {
    Tensor zs = leaf(randn({B, K}, gen)), zt = mul(randn({B, K}, gen), 2.0), y = random_labels(B, K, gen);
    KdOptions o;
    o.T = T;
    o.ce_weight = 0.3;
    o.kd_weight = 0.9;
    add_cross_entropy(kd_loss(zs, zt, y, o), zs, y, o.ce_weight).total.backward();
    Tensor ps = softmax(div(zs.detach(), T), 1), pt = softmax(div(zt, T), 1);
    Tensor kd_grad = mul(sub(ps, pt), o.kd_weight * T / (double)B);
    Tensor ce_grad = mul(sub(softmax(zs.detach(), 1), one_hot(y, K)), o.ce_weight / (double)B);
    auto c = kdtest::allclose(zs.grad(), add(kd_grad, ce_grad), 1e-4, 1e-6);
    INFO(c.msg);
    CHECK(c.ok);
  }
}

TEST_CASE("output losses: every KL / transport term is >= 0") {
  Generator gen(13);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t B = 1 + trial % 5, K = 3 + trial % 7;
    Tensor zs = mul(randn({B, K}, gen), 1.0 + trial % 4), zt = mul(randn({B, K}, gen), 1.0 + trial % 3);
    Tensor y = random_labels(B, K, gen);
    const double T = 0.5 + trial % 5;
    KdOptions ko;
    ko.T = T;
    LossBreakdown kd = kd_loss(zs, zt, y, ko);
    CHECK(part(kd, "kd") >= -1e-6);
    CHECK(kd.parts.size() == 1);  // KD's own term: distill_loss adds the CE
    DkdOptions dko;
    dko.T = T;
    LossBreakdown dk = dkd_loss(zs, zt, y, dko, 20);
    CHECK(part(dk, "tckd") >= -1e-6);
    CHECK(part(dk, "nckd") >= -1e-6);
    DgkdOptions go;
    go.T = T;
    LossBreakdown dg = dgkd_loss(zs, {zt, mul(zt, 0.5)}, y, {true, true}, go);
    CHECK(part(dg, "kd_teacher") >= -1e-6);
    CHECK(part(dg, "kd_assistant1") >= -1e-6);
    WkdLOptions wo;
    wo.tau = T;
    LossBreakdown wk = wkd_l_loss(zs, zt, y, random_cost(K, gen), wo, 1, 240);
    CHECK(part(wk, "wd") >= 0);
    CHECK(part(wk, "target") >= 0);
  }
  // identical student and teacher: the KL terms vanish
  Tensor z = randn({3, 6}, gen), y = random_labels(3, 6, gen);
  // (float32 rounding of the two log-softmaxes, times kd_weight * T^2 = 14.4, leaves ~1e-6)
  CHECK(std::abs(part(kd_loss(z, z, y, {}), "kd")) < 1e-5);
  LossBreakdown dk = dkd_loss(z, z, y, {}, 20);
  CHECK(std::abs(part(dk, "tckd")) < 1e-5);
  CHECK(std::abs(part(dk, "nckd")) < 1e-5);
}

TEST_CASE("dkd: warm-up min(epoch / W, 1) scales both DKD terms and not CE") {
  CHECK(dkd_warmup_factor(1, 20) == doctest::Approx(0.05));
  CHECK(dkd_warmup_factor(10, 20) == doctest::Approx(0.5));
  CHECK(dkd_warmup_factor(20, 20) == 1.0);
  CHECK(dkd_warmup_factor(240, 20) == 1.0);
  CHECK(dkd_warmup_factor(3, 0) == 1.0);
  Generator gen(14);
  Tensor zs = randn({4, 5}, gen), zt = randn({4, 5}, gen), y = random_labels(4, 5, gen);
  LossBreakdown full = add_cross_entropy(dkd_loss(zs, zt, y, {}, 20), zs, y, 1.0);
  LossBreakdown early = add_cross_entropy(dkd_loss(zs, zt, y, {}, 5), zs, y, 1.0);
  CHECK(part(early, "ce") == doctest::Approx(part(full, "ce")));
  CHECK(part(early, "tckd") == doctest::Approx(0.25 * part(full, "tckd")));
  CHECK(part(early, "nckd") == doctest::Approx(0.25 * part(full, "nckd")));
}

TEST_CASE("dkd: log b_s stays finite where the official log(sum of p) underflows") {
  // The student is certain of the label at T = 1: 1 - p_y underflows to 0 in float32, whose log
  // is -inf in the official code; the log-space split keeps TCKD finite and its gradient too.
  Tensor zs = leaf(from_vector(std::vector<float>{120.f, 0.f, 0.f, 0.f}, {1, 4}));
  Tensor zt = from_vector(std::vector<float>{1.f, 0.5f, 0.f, -1.f}, {1, 4});
  Tensor y = from_vector(std::vector<int64_t>{0}, {1});
  DkdOptions o;
  o.T = 1.0;
  LossBreakdown l = dkd_loss(zs, zt, y, o, 20);
  CHECK(std::isfinite(l.total.item()));
  CHECK(part(l, "tckd") > 10.0);  // the teacher puts real mass off the label
  l.total.backward();
  for (float g : to_float_vector(zs.grad())) CHECK(std::isfinite(g));
}

TEST_CASE("wkd_l: gamma is constant to decay_epoch, then cosine to 0") {
  CHECK(wkd_gamma(600, 1, 150, 240) == 600);
  CHECK(wkd_gamma(600, 150, 150, 240) == 600);
  CHECK(wkd_gamma(600, 195, 150, 240) == doctest::Approx(300));
  CHECK(wkd_gamma(600, 240, 150, 240) == doctest::Approx(0).epsilon(1e-9));
  CHECK_THROWS_WITH_SUBSTR(wkd_gamma(600, 151, 150, 0), "total_epochs");
}

TEST_CASE("sinkhorn: the converged variant matches both marginals; 10 iterations do not") {
  Generator gen(15);
  const int64_t B = 3, n = 7;
  Tensor qs = softmax(mul(randn({B, n}, gen), 2.0), 1), qt = softmax(mul(randn({B, n}, gen), 2.0), 1);
  Tensor D = random_cost(n, gen);
  Tensor M = add(relu(sharpen_cost_matrix(D, 1.0).unsqueeze(0).expand({B, n, n}).contiguous()), 1e-8);
  SinkhornOptions conv;
  conv.converged = true;
  conv.tol = 1e-5;
  SinkhornResult r = sinkhorn(qs, qt, M, conv);
  CHECK(r.iterations < conv.max_iters);
  CHECK(r.marginal_error < 1e-5);
  auto rows = kdtest::allclose(sum(r.transport_plan, {2}), qs, 0, 1e-5);
  auto cols = kdtest::allclose(sum(r.transport_plan, {1}), qt, 0, 1e-5);
  INFO(rows.msg << " / " << cols.msg);
  CHECK(rows.ok);
  CHECK(cols.ok);
  SinkhornResult ten = sinkhorn(qs, qt, M, {});
  CHECK(ten.iterations == 10);
  // after the last u-update the rows are matched; the columns are still off
  CHECK(kdtest::allclose(sum(ten.transport_plan, {2}), qs, 0, 1e-4).ok);  // up to the 1e-8 guards
  CHECK(ten.marginal_error > r.marginal_error);
  // the plan is non-negative and the converged WD is a transport cost of unit mass
  for (float v : to_float_vector(r.transport_plan)) CHECK(v >= 0.f);
  CHECK(sum(r.transport_plan).item() == doctest::Approx((double)B).epsilon(1e-4));
}

TEST_CASE("sinkhorn: a zero-cost diagonal transports qs onto itself at no cost") {
  // qs == qt and M = large off the diagonal: the plan is diag(q) and WD ~ 0
  Generator gen(16);
  Tensor q = softmax(randn({2, 5}, gen), 1);
  Tensor M = ones({2, 5, 5});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 5; ++i) M.set({b, i, i}, 1e-8);
  SinkhornOptions conv;
  conv.converged = true;
  SinkhornResult r = sinkhorn(q, q, M, conv);
  CHECK(sum(mul(r.transport_plan, M)).item() < 1e-4);
}

TEST_CASE("wkd cost: CKA distances are symmetric with a zero diagonal, in [0, 1]; both paths agree") {
  Generator gen(17);
  for (auto [K, n, d] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{5, 6, 10}, {4, 20, 5}, {3, 8, 8}}) {
    Tensor feats = add(randn({1, n, d}, gen), mul(randn({K, n, d}, gen), 0.7));
    Tensor D = cost_matrix_cka(feats);
    CHECK(D.shape() == Shape{K, K});
    for (int64_t i = 0; i < K; ++i) {
      CHECK(D.at({i, i}) == 0.0);
      for (int64_t j = 0; j < K; ++j) {
        CHECK(D.at({i, j}) == D.at({j, i}));
        CHECK(D.at({i, j}) >= -1e-6);
        CHECK(D.at({i, j}) <= 1.0 + 1e-6);
      }
    }
    auto c = kdtest::allclose(cost_matrix_cka(feats, 1), cost_matrix_cka(feats, 2), 1e-4, 1e-5);
    INFO(c.msg);
    CHECK(c.ok);
  }
  // CKA properties: CKA(X, X) = 1, invariant to isotropic scaling and to an orthogonal map
  Tensor X = randn({9, 4}, gen), Y = randn({9, 3}, gen);
  CHECK(linear_cka(X, X) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(linear_cka(X, mul(Y, 3.0)) == doctest::Approx(linear_cka(X, Y)).epsilon(1e-5));
  Tensor rot = from_vector(std::vector<float>{0.6f, -0.8f, 0.f, 0.8f, 0.6f, 0.f, 0.f, 0.f, 1.f}, {3, 3});
  CHECK(linear_cka(X, matmul(Y, rot)) == doctest::Approx(linear_cka(X, Y)).epsilon(1e-5));
  // cosine: 1 - cos, symmetric, ~0 diagonal
  Tensor Dc = cost_matrix_cosine(randn({4, 6}, gen));
  for (int64_t i = 0; i < 4; ++i) CHECK(std::abs(Dc.at({i, i})) < 1e-6);
}

TEST_CASE("wkd cost: grouping rows by class and the official spatial rows") {
  Tensor feats = from_vector(std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4}, {5, 2});
  Tensor y = from_vector(std::vector<int64_t>{1, 0, 1, 0, 1}, {5});
  Tensor s = stack_class_features(feats, y, 2);  // min count 2: rows 1, 3 for class 0 and 0, 2 for class 1
  CHECK(s.shape() == Shape{2, 2, 2});
  CHECK(to_float_vector(s) == std::vector<float>{1, 1, 3, 3, 0, 0, 2, 2});
  CHECK_THROWS_WITH_SUBSTR(stack_class_features(feats, y, 3), "class 2 has 0 feature rows");
  CHECK_THROWS_WITH_SUBSTR(stack_class_features(feats, y, 2, 3), "class 0 has 2 feature rows but 3 are needed");
  Generator gen(18);
  Tensor fmap = randn({2, 3, 2, 2}, gen);
  auto [rows, ry] = spatial_rows(fmap, from_vector(std::vector<int64_t>{4, 7}, {2}));
  CHECK(rows.shape() == Shape{8, 3});
  CHECK(to_int_vector(ry) == std::vector<int64_t>{4, 4, 4, 4, 7, 7, 7, 7});
  CHECK(rows.at({5, 2}) == fmap.at({1, 2, 0, 1}));  // sample 1, position (0, 1), channel 2
}

// ============================================================================ gradcheck

TEST_CASE("output losses: gradcheck w.r.t. the student logits") {
  Generator gen(19);
  auto check_all = [&](int64_t B, int64_t K, bool transposed) {
    CAPTURE(B);
    CAPTURE(K);
    CAPTURE(transposed);
    Tensor base = transposed ? randn({K, B}, gen) : randn({B, K}, gen);
    V in{leaf(base)};
    auto zs_of = [transposed](const V& x) { return transposed ? x[0].t() : x[0]; };
    Tensor zt = mul(randn({B, K}, gen), 2.0), y = random_labels(B, K, gen);
    Tensor a1 = randn({B, K}, gen), a2 = mul(randn({B, K}, gen), 0.5);
    Tensor D = random_cost(K, gen);
    KdOptions ko;
    ko.T = 2.0;
    CHECK_GRADCHECK([&](const V& x) { return kd_loss(zs_of(x), zt, y, ko).total; }, in);
    if (K >= 3) {
      DkdOptions dko;
      dko.T = 2.0;
      dko.beta = 2.0;
      CHECK_GRADCHECK([&](const V& x) { return dkd_loss(zs_of(x), zt, y, dko, 5).total; }, in);
    }
    DgkdOptions go;
    go.T = 3.0;
    go.ce_weight = 0.5;
    CHECK_GRADCHECK([&](const V& x) { return dgkd_loss(zs_of(x), {zt, a1, a2}, y, {true, false, true}, go).total; }, in);
    WkdLOptions wo;
    wo.tau = 2.0;
    wo.gamma = 5.0;
    CHECK_GRADCHECK([&](const V& x) { return wkd_l_loss(zs_of(x), zt, y, D, wo, 1, 240).total; }, in);
    wo.sinkhorn.converged = true;
    wo.sinkhorn.tol = 1e-4;
    CHECK_GRADCHECK([&](const V& x) { return wkd_l_loss(zs_of(x), zt, y, D, wo, 1, 240).total; }, in);
  };
  check_all(3, 4, false);
  check_all(2, 5, true);
  check_all(4, 2, false);
}

// ============================================================================ registry, parameters, errors

TEST_CASE("registry: the output family and its defaults") {
  std::vector<std::string> names;
  for (const auto& e : distiller_registry()) {
    names.push_back(e.name);
    CHECK(!e.description.empty());
  }
  for (const char* m : {"kd", "dkd", "dgkd", "wkd_l"}) CHECK(std::find(names.begin(), names.end(), m) != names.end());
  CHECK(create_distiller("kd", {}, {})->params() == Params{{"T", "4"}, {"ce_weight", "0.1"}, {"kd_weight", "0.9"}});
  Params dkd = create_distiller("dkd", {}, {})->params();
  CHECK(dkd["alpha"] == "1");
  CHECK(dkd["beta"] == "8");
  CHECK(dkd["T"] == "4");
  CHECK(dkd["warmup"] == "20");
  CHECK(dkd["ce_weight"] == "1");
  Params dg = create_distiller("dgkd", {{"lambda", "0.7"}}, {})->params();
  CHECK(dg["T"] == "5");
  CHECK(dg["ce_weight"] == "0.3");  // 1 - lambda, the official weight
  CHECK(dg["drop_num"] == "1");
  Params wk = create_distiller("wkd_l", {}, {})->params();
  CHECK(wk["tau"] == "8");
  CHECK(wk["gamma"] == "600");
  CHECK(wk["eps"] == "0.05");
  CHECK(wk["iters"] == "10");
  CHECK(wk["kappa"] == "1");
  CHECK(wk["decay_epoch"] == "150");
  // params() reads back into the same distiller
  auto d = create_distiller("dkd", {{"beta", "2"}, {"T", "3.5"}}, {});
  CHECK(create_distiller("dkd", d->params(), {})->params() == d->params());
}

TEST_CASE("registry and parameters: error messages") {
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kdd", {}, {}),
                           "unknown distillation method 'kdd'; the known methods are: kd, dkd");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd", {{"temperature", "4"}}, {}),
                           "kd: unknown parameter temperature; the parameters of kd are: T, ce_weight, kd_weight");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd", {{"beta", "eight"}}, {}), "parameter beta=eight is not a number");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd", {{"warmup", "2.5"}}, {}), "warmup=2.5 is not an integer");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("wkd_l", {{"converged", "maybe"}}, {}), "converged=maybe is not a boolean");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd", {{"T", "0"}}, {}), "T must be > 0");
  DistillerContext two;
  two.num_classes = 2;
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd", {}, two), "DKD needs K >= 3");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("wkd_l", {{"cost_matrix", "/nonexistent/cost.npy"}}, {}), "cost.npy");
}

TEST_CASE("registry: every method's option table lists its keys, types, defaults and help") {
  for (const auto& e : distiller_registry()) {
    CAPTURE(e.name);
    const bool listed = e.options != nullptr;
    REQUIRE(listed);
    const std::vector<OptionInfo> rows = e.options();
    std::vector<std::string> keys;
    for (const OptionInfo& r : rows) {
      CAPTURE(r.key);
      CHECK(!r.help.empty());
      CHECK(std::string("number integer boolean text list").find(r.type) != std::string::npos);
      keys.push_back(r.key);
    }
    if (!e.create) continue;  // a regime of its own (baseline, acd_u): no Distiller, no CE term of its own
    // every method declares its official CE weight, which distill_loss reads
    CHECK(std::find(keys.begin(), keys.end(), "ce_weight") != keys.end());
    // a key outside the table is refused with the table's keys listed
    try {
      create_distiller(e.name, {{"no_such_key", "1"}}, {});
      FAIL("no_such_key was accepted");
    } catch (const Error& err) {
      const std::string what = err.what();
      // (methods that need a sample batch may refuse for that first; the others list their keys)
      if (what.find("unknown parameter no_such_key") != std::string::npos)
        for (const std::string& k : keys) CHECK(what.find(k) != std::string::npos);
    }
  }
  // the defaults in the table are what params() records (for the methods built without taps)
  for (const std::string m : {"kd", "dkd", "dgkd", "wkd_l", "at", "catkd", "rkd", "sp", "pkt", "relation", "vrm"}) {
    CAPTURE(m);
    const Params recorded = create_distiller(m, {}, {})->params();
    const DistillerEntry& e = *std::find_if(distiller_registry().begin(), distiller_registry().end(),
                                            [&](const DistillerEntry& x) { return x.name == m; });
    for (const OptionInfo& r : e.options())
      if (recorded.count(r.key) && !r.default_value.empty())  // "": derived from others (relation's reduction)
        CHECK(recorded.at(r.key) == r.default_value);
  }
}

TEST_CASE("option tables: read, written back, the options not in use left out of the record") {
  const Demo d = parse_options<Demo>("demo", {{"x", "0.25"}, {"on", "yes"}, {"taps", "f3, pre2"}, {"mode", "b"}});
  CHECK(d.x == 0.25);
  CHECK(d.n == 3);
  CHECK(d.on);
  CHECK(d.taps == std::vector<std::string>{"f3", "pre2"});
  CHECK(option_params(d) == Params{{"x", "0.25"}, {"n", "3"}, {"on", "true"}, {"mode", "b"}, {"taps", "f3,pre2"},
                                   {"only_b", "7"}});
  CHECK_FALSE(option_params(Demo{}).count("only_b"));  // mode=a does not read it
  const std::vector<OptionInfo> rows = option_infos<Demo>();
  REQUIRE(rows.size() == 6);
  CHECK(rows[4].key == "taps");
  CHECK(rows[4].type == "list");
  CHECK(rows[4].default_value == "f1,f2");
  CHECK(rows[5].help == "mode=b only");
  CHECK_THROWS_WITH_SUBSTR(parse_options<Demo>("demo", {{"x", "half"}}),
                           "demo: parameter x=half is not a number; write it like x=0.5");
  CHECK_THROWS_WITH_SUBSTR(parse_options<Demo>("demo", {{"n", "3.5"}}), "n=3.5 is not an integer; write it like n=3");
  CHECK_THROWS_WITH_SUBSTR(parse_options<Demo>("demo", {{"on", "2"}}), "on=2 is not a boolean; use on=true or on=false");
  CHECK_THROWS_WITH_SUBSTR(parse_options<Demo>("demo", {{"y", "1"}, {"z", "2"}}),
                           "demo: unknown parameters y, z; the parameters of demo are: mode, n, on, only_b, taps, x");
}

TEST_CASE("distill_loss: w_ce * CE once, in front of the method's own terms") {
  Generator gen(27);
  const int64_t B = 4, K = 5;
  Tensor zs = randn({B, K}, gen), zt = randn({B, K}, gen), y = random_labels(B, K, gen);
  nn::ModelOutput s, t;
  s.logits = zs;
  t.logits = zt;
  BatchInfo b;
  b.labels = y;
  b.epoch = 20;
  for (const std::string m : {"kd", "dkd", "dgkd"}) {
    CAPTURE(m);
    auto d = create_distiller(m, m == "dgkd" ? Params{{"drop_num", "0"}} : Params{}, {});
    LossBreakdown own = d->loss(s, t, b);  // the method's terms: never a "ce" part
    for (const auto& [name, v] : own.parts) CHECK(name != "ce");
    std::vector<std::string> order;
    d->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
    LossBreakdown l = distill_loss(*d, s, t, b);
    const double w_ce = d->ce_weight(b).value();
    const double ce = cross_entropy(zs, y).item();
    CHECK(l.parts.front().first == "ce");
    CHECK(l.parts.front().second.item() == doctest::Approx(w_ce * ce).epsilon(1e-6));
    CHECK(l.parts.size() == own.parts.size() + 1);
    CHECK(l.total.item() == doctest::Approx(w_ce * ce + own.total.item()).epsilon(1e-6));
    REQUIRE(order.size() >= 2);
    CHECK(order[order.size() - 2] == "ce");  // shown last, after the method's steps
    CHECK(order.back() == "loss");
  }
  CHECK(create_distiller("kd", {}, {})->ce_weight(b).value() == 0.1);             // KD's official weight
  CHECK(create_distiller("dgkd", {{"lambda", "0.7"}}, {})->ce_weight(b).value() == doctest::Approx(0.3));  // 1 - lambda
}

TEST_CASE("output losses: error messages for bad inputs") {
  Generator gen(20);
  Tensor zs = randn({3, 4}, gen), zt = randn({3, 4}, gen), y = from_vector(std::vector<int64_t>{0, 3, 1}, {3});
  CHECK_THROWS_WITH_SUBSTR(kd_loss(zs, randn({3, 5}, gen), y, {}),
                           "kd: teacher logits have shape (3, 5) but student logits have shape (3, 4)");
  CHECK_THROWS_WITH_SUBSTR(kd_loss(zs, zt, from_vector(std::vector<int64_t>{0, 4, 1}, {3}), {}),
                           "kd: label 4 of sample 1 is out of range for K = 4 classes");
  CHECK_THROWS_WITH_SUBSTR(kd_loss(zs, zt, from_vector(std::vector<int64_t>{0, 1}, {2}), {}),
                           "labels have shape (2,) but the logits have shape (3, 4)");
  CHECK_THROWS_WITH_SUBSTR(kd_loss(zs, zt, from_vector(std::vector<float>{0, 1, 2}, {3}), {}), "labels must be int64");
  CHECK_THROWS_WITH_SUBSTR(kd_loss(randn({3}, gen), zt, y, {}), "student logits must be (B, K)");
  Tensor z2 = randn({3, 2}, gen), y2 = from_vector(std::vector<int64_t>{0, 1, 1}, {3});
  CHECK_THROWS_WITH_SUBSTR(dkd_loss(z2, z2, y2, {}, 20), "DKD needs K >= 3");
  CHECK_THROWS_WITH_SUBSTR(dkd_loss(zs, zt, y, {}, 0), "epochs are counted from 1");
  CHECK_THROWS_WITH_SUBSTR(wkd_l_loss(zs, zt, y, Tensor(), {}, 1, 240), "no category cost matrix");
  CHECK_THROWS_WITH_SUBSTR(wkd_l_loss(zs, zt, y, zeros({5, 5}), {}, 1, 240), "the cost matrix has shape (5, 5)");
  CHECK_THROWS_WITH_SUBSTR(wkd_l_loss(zs, zt, y, zeros({4, 4}), {}, 200, 0), "total_epochs");
  Generator g(1);
  CHECK_THROWS_WITH_SUBSTR(dgkd_draw_kept(1, 1, g), "drop_num=1 with 1 guide(s)");
  CHECK_THROWS_WITH_SUBSTR(dgkd_loss(zs, {zt, randn({2, 4}, gen)}, y, {true, true}, {}), "dgkd (assistant1)");
  auto d = create_distiller("wkd_l", {}, {});
  CHECK_THROWS_WITH_SUBSTR(run(*d, zs, zt, y), "--set cost_matrix=PATH");
}

// ============================================================================ DGKD's stochastic dropping

TEST_CASE("dgkd: drop_num guides dropped uniformly per batch, reproducibly from the seed") {
  Generator gen(21);
  Tensor zs = randn({4, 5}, gen), zt = randn({4, 5}, gen), y = random_labels(4, 5, gen);
  DistillerContext ctx;
  ctx.seed = 7;
  auto d1 = create_distiller("dgkd", {}, ctx), d2 = create_distiller("dgkd", {}, ctx);
  auto& g1 = dynamic_cast<DgkdDistiller&>(*d1);
  auto& g2 = dynamic_cast<DgkdDistiller&>(*d2);
  const V assistants = {randn({4, 5}, gen), randn({4, 5}, gen)};
  std::vector<int> dropped(3, 0);
  const int N = 600;
  for (int i = 0; i < N; ++i) {
    LossBreakdown l1 = run(*d1, zs, zt, y, 1, 240, assistants);
    run(*d2, zs, zt, y, 1, 240, assistants);
    CHECK(g1.last_kept() == g2.last_kept());
    int kept = 0;
    double sum_parts = 0;
    for (size_t gi = 0; gi < 3; ++gi) {
      kept += g1.last_kept()[gi];
      if (!g1.last_kept()[gi]) {
        ++dropped[gi];
        CHECK(part(l1, "kd_" + dgkd_guide_name(gi)) == 0.0);
      }
    }
    for (const auto& [n, v] : l1.parts) sum_parts += v.item();
    CHECK(kept == 2);
    CHECK(l1.total.item() == doctest::Approx(sum_parts));
  }
  for (int c : dropped) CHECK(std::abs(c - N / 3) < 60);  // ~1/3 each (binomial sd ~ 11.5)
  // drop_num = 0 keeps all
  auto d0 = create_distiller("dgkd", {{"drop_num", "0"}}, ctx);
  run(*d0, zs, zt, y, 1, 240, assistants);
  CHECK(dynamic_cast<DgkdDistiller&>(*d0).last_kept() == std::vector<bool>{true, true, true});
}

// ============================================================================ explain

TEST_CASE("explain: intermediates come in equation order, named as in the paper") {
  Generator gen(22);
  Tensor zs = randn({2, 5}, gen), zt = randn({2, 5}, gen), y = random_labels(2, 5, gen);
  Recorder rec;  // DKD's steps, then add_cross_entropy's ce and loss (what distill_loss shows)
  add_cross_entropy(dkd_loss(zs, zt, y, {}, 20, rec.fn()), zs, y, 1.0, rec.fn());
  CHECK(rec.order == std::vector<std::string>{"log_ps", "log_pt", "gt_mask", "log_bs", "bt", "tckd_b", "TCKD",
                                              "log_p_hat_s", "p_hat_t", "nckd_b", "NCKD", "warmup_factor", "ce", "loss"});
  Recorder w;
  add_cross_entropy(wkd_l_loss(zs, zt, y, random_cost(5, gen), {}, 1, 240, w.fn()), zs, y, 1.0, w.fn());
  CHECK(w.order == std::vector<std::string>{"D_sharpened", "log_ps", "pt_y", "L_target", "qs", "qt", "M", "Kmat", "u",
                                            "v", "transport_plan", "sinkhorn_iterations", "marginal_error", "wd_b", "WD",
                                            "gamma_e", "ce", "loss"});
  CHECK(w.seen.at("M").shape() == Shape{2, 4, 4});
  CHECK(w.seen.at("sinkhorn_iterations").item() == 10);
}

// ============================================================================ a few optimisation steps

TEST_CASE("output losses: a few gradient steps on the student logits lower each loss") {
  Generator gen(23);
  const int64_t B = 6, K = 5;
  Tensor zt = mul(randn({B, K}, gen), 2.0), y = random_labels(B, K, gen);
  Tensor a1 = mul(randn({B, K}, gen), 1.5), D = random_cost(K, gen);
  std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> losses = {
      {"kd", [&](const Tensor& z) { return kd_loss(z, zt, y, {}).total; }},
      {"dkd", [&](const Tensor& z) { return dkd_loss(z, zt, y, {}, 20).total; }},
      {"dgkd", [&](const Tensor& z) { return dgkd_loss(z, {zt, a1}, y, {true, true}, {}).total; }},
      {"wkd_l",
       [&](const Tensor& z) {
         WkdLOptions o;
         o.gamma = 50;
         return wkd_l_loss(z, zt, y, D, o, 1, 240).total;
       }},
  };
  for (auto& [name, f] : losses) {
    CAPTURE(name);
    Tensor z = randn({B, K}, gen);
    const double first = f(z).item();
    for (int step = 0; step < 30; ++step) {
      Tensor zl = z.detach().clone().requires_grad_();
      f(zl).backward();
      z = sub(zl.detach(), mul(zl.grad(), 0.5));
    }
    CHECK(f(z).item() < 0.8 * first);
  }
}
