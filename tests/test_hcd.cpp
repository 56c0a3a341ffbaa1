// HCD (distill/feature/hcd.h): golden values and gradients from an independent PyTorch
// implementation of the paper's equations (tests/reference/gen_hcd.py), with the helper weights
// the script writes (tests/fixtures/hcd/*.safetensors): the loss, its parts, the gradients w.r.t.
// the student's logits and stage maps, and w.r.t. every projector and mapper parameter. The
// orthogonality loss: its gradient is not zero, and the masking order that fills the target entry
// before normalising would make it a constant; invariants (one sub-logit: no OL; identical
// sub-logits: S = 1; orthogonal ones: 0; the target entry and each sub-logit's scale do not
// matter; shift invariance of the fused KD); gradchecks; the registry, the helpers' shapes,
// parameters, errors and --explain; a ViT teacher and a resnet8 student, step by step and through
// the training loop (with and without the teacher cache); `kdlab loss hcd` with feature taps and
// helper weights, --explain and --explain-dir.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "distill/feature/hcd.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "nn/models/model.h"
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

BatchInfo batch_of(const Tensor& y) {
  BatchInfo b;
  b.labels = y;
  return b;
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

double max_abs(const Tensor& t) { return max(abs(t)).item(); }

// The student output with the tap "f<i>" of every layer given, and the teacher's pooled feature.
nn::ModelOutput student_with(const std::vector<std::string>& layers, const V& maps, const Tensor& logits) {
  nn::ModelOutput o;
  o.logits = logits;
  o.feats.resize(4);
  for (size_t l = 0; l < layers.size(); ++l) o.feats[(size_t)(layers[l][1] - '0')] = maps[l];
  return o;
}

nn::ModelOutput teacher_with(const Tensor& pooled, const Tensor& logits) {
  nn::ModelOutput o;
  o.logits = logits;
  o.pooled = pooled;
  return o;
}

// The golden case run through the registry, with the script's helper weights loaded (strictly:
// every parameter and BatchNorm buffer). inputs: zs, zt, labels, f_t, the stage maps.
V run_hcd(const V& x, const json& p, std::shared_ptr<Distiller>* made = nullptr) {
  const std::vector<std::string> layers = split_taps(p["layers"].get<std::string>(), "hcd");
  const V maps(x.begin() + 4, x.end());
  REQUIRE(maps.size() == layers.size());
  DistillerContext ctx;
  ctx.num_classes = x[0].size(1);
  ctx.seed = 9;
  ctx.student_sample = student_with(layers, maps, x[0]);
  ctx.teacher_sample = teacher_with(x[3], x[1]);
  auto d = create_distiller("hcd", params_from(p, {"helper_weights"}), ctx);
  nn::LoadReport rep =
      d->load_state_dict(nn::load_safetensors(kdtest::fixture_path(p["helper_weights"].get<std::string>())).tensors,
                         /*strict=*/true);
  CHECK_MESSAGE(rep.ok(), rep.to_string());
  if (made) *made = d;
  return outputs_of(distill_loss(*d, student_with(layers, maps, x[0]), teacher_with(x[3], x[1]), batch_of(x[2])));
}

// Correlated sub-logits (B, n, K): one vector per sample plus noise, so that some cosines exceed 0.5.
Tensor correlated_sub_logits(int64_t B, int64_t n, int64_t K, Generator& gen, double noise = 0.6) {
  Tensor base = randn({B, 1, K}, gen);
  return add(base.expand({B, n, K}), mul(randn({B, n, K}, gen), noise)).contiguous();
}

// The masking order to avoid: the target entry filled with -1e6 BEFORE the normalisation.
Tensor cosines_fill_before_normalise(const Tensor& z, const Tensor& y) {
  Tensor target = target_mask(y, z.size(2)).unsqueeze(1).expand(z.shape()).contiguous();  // (B, n, K) u8
  Tensor u = normalize(masked_fill(z, target, -1e6), 2.0, 2);
  return bmm(u, u.transpose(1, 2).contiguous());
}

}  // namespace

// ============================================================================ golden values

TEST_CASE("HCD: golden values and gradients from the PyTorch reference") {
  kdtest::GoldenTable table = {{"hcd", [](const V& x, const json& p) { return run_hcd(x, p); }}};
  CHECK(kdtest::run_golden_file("hcd_losses.json", table) == 4);
}

TEST_CASE("HCD: every projector and mapper parameter gets the reference's gradient") {
  std::ifstream f(kdtest::fixture_path("hcd_losses.json"));
  REQUIRE(f.good());
  json doc = json::parse(f);
  int checked = 0;
  for (const json& c : doc.at("cases")) {
    CAPTURE(c.at("name").get<std::string>());
    V x;
    for (const json& ij : c.at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
    std::shared_ptr<Distiller> d;
    V out = run_hcd(x, c.at("params"), &d);
    CHECK(dynamic_cast<HcdDistiller&>(*d).proj_dim() == c.at("D").get<int64_t>());
    out[0].backward(kdtest::tensor_from_json(c.at("grad_outputs")[0]));
    std::map<std::string, Tensor> params = nn::to_map(d->named_parameters());
    CHECK(c.at("param_grads").size() == params.size());  // every helper parameter is trained
    for (const auto& [name, g] : c.at("param_grads").items()) {
      CAPTURE(name);
      REQUIRE(params.count(name) == 1);
      REQUIRE(params[name].grad().defined());
      kdtest::Closeness cl = kdtest::allclose(params[name].grad(), kdtest::tensor_from_json(g), 1e-3, 1e-5);
      CHECK_MESSAGE(cl.ok, cl.msg);
    }
    ++checked;
  }
  CHECK(checked == 4);
}

// ============================================================================ the orthogonality loss

TEST_CASE("HCD OL: its gradient is not zero; filling the target entry before normalising makes it a constant") {
  Generator gen(3);
  const int64_t B = 3, n = 4, K = 6;
  Tensor y = randint(0, K, {B}, gen);
  Tensor z = leaf(correlated_sub_logits(B, n, K, gen));
  for (const char* mask : {"exclude", "after"}) {
    CAPTURE(mask);
    z.zero_grad();
    Tensor l = orthogonality_loss(sub_logit_cosines(z, y, mask), 0.5);
    CHECK(l.item() > 1e-3);
    l.backward();
    REQUIRE(z.grad().defined());
    CHECK(max_abs(z.grad()) > 1e-3);  // OL moves the sub-logits apart
  }
  // The trap: u_j = normalize(z_j with z_j[y] = -1e6) is -e_y for every j, so S = 1 everywhere
  // and L_ol = (1 - 0.5)^2 = 0.25 whatever the sub-logits are, with no gradient.
  Tensor z2 = leaf(randn({B, n, K}, gen));  // independent sub-logits: the real OL is small here
  for (const Tensor& zz : {z, z2}) {
    zz.zero_grad();
    Tensor S_wrong = cosines_fill_before_normalise(zz, y);
    CHECK(min(S_wrong).item() > 1.0 - 1e-6);
    Tensor l_wrong = orthogonality_loss(S_wrong, 0.5);
    CHECK(l_wrong.item() == doctest::Approx(0.25).epsilon(1e-6));
    l_wrong.backward();
    CHECK(max_abs(zz.grad()) < 1e-7);
  }
  CHECK(orthogonality_loss(sub_logit_cosines(z2, y), 0.5).item() < 0.25);  // the real one sees the difference
}

TEST_CASE("HCD OL invariants: n = 1, identical and orthogonal sub-logits, the target entry, the scale") {
  Generator gen(5);
  const int64_t B = 2, K = 5;
  Tensor y = from_vector(std::vector<int64_t>{1, 4}, {B});
  SUBCASE("one sub-logit: no pair, no loss") {
    Tensor S = sub_logit_cosines(randn({B, 1, K}, gen), y);
    CHECK(S.shape() == Shape{B, 1, 1});
    CHECK(orthogonality_loss(S, 0.5).item() == 0.0);
    CHECK(orthogonality_loss(S, -1.0).item() == 0.0);
  }
  SUBCASE("identical sub-logits: S = 1 everywhere, L_ol = (1 - theta)^2") {
    Tensor z = randn({B, 1, K}, gen).expand({B, 3, K}).contiguous();
    Tensor S = sub_logit_cosines(z, y);
    CHECK(max_abs(sub(S, ones({B, 3, 3}))) < 1e-6);
    CHECK(orthogonality_loss(S, 0.5).item() == doctest::Approx(0.25).epsilon(1e-5));
    CHECK(orthogonality_loss(S, 0.2).item() == doctest::Approx(0.64).epsilon(1e-5));
    // masked after the normalisation, S[i, j] = 1 - u[y]^2 < 1: not a cosine of the non-target part
    Tensor S_after = sub_logit_cosines(z, y, "after");
    CHECK(max(S_after).item() < 1.0 - 1e-4);
  }
  SUBCASE("sub-logits whose non-target parts are orthogonal: S = I, L_ol = 0 for any theta >= 0") {
    // sample 0 (target 1): classes {0}, {2, 3} and {4}; sample 1 (target 4): {0}, {1}, {2, 3}
    Tensor z = from_vector(std::vector<float>{1, 7, 0, 0, 0,   0, -3, 2, 2, 0,   0, 5, 0, 0, -1,  //
                                              2, 0, 0, 0, 9,   0, 1, 0, 0, 4,    0, 0, 1, -1, 8},
                           {B, 3, K});
    Tensor S = sub_logit_cosines(z, y);
    CHECK(max_abs(sub(S, from_vector(std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1}, {1, 3, 3}).expand({B, 3, 3})))
          < 1e-6);
    CHECK(orthogonality_loss(S, 0.0).item() == 0.0);
  }
  SUBCASE("the target entry does not enter S, and S ignores each sub-logit's positive scale") {
    Tensor z = correlated_sub_logits(B, 3, K, gen);
    Tensor S = sub_logit_cosines(z, y);
    Tensor bumped = add(z, mul(target_mask(y, K).to(DType::f32).unsqueeze(1), 50.0));  // target entries + 50
    CHECK(max_abs(sub(sub_logit_cosines(bumped, y), S)) < 1e-6);
    Tensor scaled = mul(z, from_vector(std::vector<float>{0.5f, 3.0f, 10.0f}, {1, 3, 1}));
    CHECK(max_abs(sub(sub_logit_cosines(scaled, y), S)) < 1e-5);
    CHECK(max(S).item() <= 1.0 + 1e-6);
    CHECK(min(S).item() >= -1.0 - 1e-6);
  }
}

TEST_CASE("HCD: gradcheck of OL (both masks) and of the whole loss w.r.t. the shared and student logits") {
  Generator gen(13);
  const int64_t B = 2, n = 3, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor z = leaf(correlated_sub_logits(B, n, K, gen, 0.8));
  for (const char* mask : {"exclude", "after"}) {
    CAPTURE(mask);
    // theta 0.1: the pairs sit away from the ReLU's kink
    CHECK_GRADCHECK([&](const V& v) { return orthogonality_loss(sub_logit_cosines(v[0], y, mask), 0.1); }, V{z});
  }
  Tensor zs = leaf(randn({B, K}, gen)), zt = randn({B, K}, gen);
  Tensor s1 = leaf(correlated_sub_logits(B, n, K, gen).reshape({B, n * K})),
         s2 = leaf(correlated_sub_logits(B, n, K, gen).reshape({B, n * K}));
  for (const char* direction : {"student", "teacher"}) {
    CAPTURE(direction);
    HcdOptions o;
    o.k = n;
    o.T = 2.0;
    o.margin = 0.1;
    o.sub_kd = direction;
    o.label_smoothing = 0.1;
    CHECK_GRADCHECK(
        [&](const V& v) { return hcd_loss(v[0], zt, y, {v[1], v[2]}, {"f1", "f2"}, o).total; }, V{zs, s1, s2});
  }
}

TEST_CASE("HCD: the parts add up; the fused KD's invariants; a detached target trains the student only") {
  Generator gen(17);
  const int64_t B = 3, n = 2, K = 5;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen)), zt = randn({B, K}, gen);
  Tensor shared = leaf(randn({B, n * K}, gen));
  HcdOptions o;
  o.k = n;
  LossBreakdown l = hcd_loss(zs, zt, y, {shared}, {"f1"}, o);
  double sum_parts = 0;
  for (auto& [name, v] : l.parts) sum_parts += v.item();
  CHECK(l.total.item() == doctest::Approx(sum_parts).epsilon(1e-6));
  CHECK(l.parts.size() == 4);  // kd, sub_ce, sub_kd, ol: distill_loss adds the CE

  // sub_kd=teacher: sub-logits constant over the classes fuse to z_t + c, whose softmax is the
  // teacher's: the fused KD is 0
  {
    HcdOptions t = o;
    t.sub_kd = "teacher";
    Tensor flat = randn({B, n, 1}, gen).expand({B, n, K}).reshape({B, n * K});
    CHECK(part(hcd_loss(zs, zt, y, {flat}, {"f1"}, t), "sub_kd") == doctest::Approx(0.0).epsilon(1e-6));
  }
  // sub_kd=student without fusion: sub-logits equal to the student's logits give 0
  {
    HcdOptions s = o;
    s.fuse_weight = 0.0;
    Tensor copies = zs.detach().unsqueeze(1).expand({B, n, K}).reshape({B, n * K});
    CHECK(part(hcd_loss(zs, zt, y, {copies}, {"f1"}, s), "sub_kd") == doctest::Approx(0.0).epsilon(1e-6));
  }
  // the sum over stages is twice one stage repeated; the mean is the same as one stage
  {
    HcdOptions m = o;
    const double one = part(hcd_loss(zs, zt, y, {shared}, {"f1"}, m), "sub_ce");
    CHECK(part(hcd_loss(zs, zt, y, {shared, shared}, {"f1", "f2"}, m), "sub_ce") == doctest::Approx(2 * one));
    m.stage_reduce = "mean";
    CHECK(part(hcd_loss(zs, zt, y, {shared, shared}, {"f1", "f2"}, m), "sub_ce") == doctest::Approx(one));
  }
  // detach_fused: the fused KD no longer reaches the shared logits, only the student's logits
  {
    HcdOptions d = o;
    d.ce_weight = d.kd_weight = d.sub_ce_weight = d.ol_weight = 0.0;
    d.detach_fused = true;
    zs.zero_grad();
    shared.zero_grad();
    hcd_loss(zs, zt, y, {shared}, {"f1"}, d).total.backward();
    CHECK(max_abs(zs.grad()) > 1e-4);
    CHECK((!shared.grad().defined() || max_abs(shared.grad()) == 0.0));
    d.detach_fused = false;
    zs.zero_grad();
    shared.zero_grad();
    hcd_loss(zs, zt, y, {shared}, {"f1"}, d).total.backward();
    CHECK(max_abs(shared.grad()) > 1e-4);  // without the stop-gradient both sides move
  }
  // the chunking: sub-logit j is columns [j K, (j+1) K)
  Tensor z_sub = split_sub_logits(shared.detach(), n);
  CHECK(z_sub.at({1, 1, 2}) == shared.detach().at({1, K + 2}));
}

// ============================================================================ registry, helpers, errors

TEST_CASE("HCD: registry row, OFA's projectors by stage size, defaults, errors and --explain") {
  bool found = false;
  for (const auto& e : distiller_registry())
    if (e.name == "hcd") {
      found = true;
      CHECK(e.family == "feature");
    }
  CHECK(found);
  Generator gen(23);
  const int64_t B = 2, K = 5, Ct = 12;
  // a CIFAR ResNet-like student: 16 ch 32x32, 32 ch 16x16, 64 ch 8x8; a ViT-like teacher (B, 12)
  V maps{randn({B, 16, 32, 32}, gen), randn({B, 32, 16, 16}, gen), randn({B, 64, 8, 8}, gen)};
  Tensor zs = randn({B, K}, gen), zt = randn({B, K}, gen), f_t = randn({B, Ct}, gen);
  Tensor y = randint(0, K, {B}, gen);
  DistillerContext ctx;
  ctx.num_classes = K;
  ctx.student_sample = student_with({"f1", "f2", "f3"}, maps, zs);
  ctx.teacher_sample = teacher_with(f_t, zt);
  auto d = create_distiller("hcd", {}, ctx);
  auto& h = dynamic_cast<HcdDistiller&>(*d);
  CHECK(d->needs().pooled);
  CHECK_FALSE(d->needs().feats);
  CHECK(d->needs().cacheable());  // logits and pooled: the teacher cache serves HCD
  CHECK(h.proj_dim() == 64);      // max(64 channels of f3, Ct = 12)
  CHECK(h.projector_kind(0) == "sepconv x2");
  CHECK(h.projector_kind(1) == "sepconv x1");
  CHECK(h.projector_kind(2) == "conv1x1");
  std::map<std::string, Tensor> p = nn::to_map(d->named_parameters());
  CHECK(p.at("proj_f1.0.op.0.weight").shape() == Shape{16, 1, 3, 3});   // depthwise, stride 2
  CHECK(p.at("proj_f1.1.op.5.weight").shape() == Shape{64, 32, 1, 1});  // the last block to D
  CHECK(p.at("proj_f3.0.weight").shape() == Shape{64, 64, 1, 1});
  CHECK(p.at("cfm_f1.0.weight").shape() == Shape{Ct, 64 + Ct});         // hidden = Ct
  CHECK(p.at("cfm_f1.2.weight").shape() == Shape{4 * K, Ct});            // n K shared logits
  CHECK(max_abs(p.at("cfm_f1.0.bias")) == 0.0);                          // OFA's init: Linear bias 0
  CHECK(d->params() == Params{{"layers", "f1,f2,f3"},  {"k", "4"},          {"T", "1"},
                              {"ce_weight", "1"},      {"kd_weight", "1"},  {"sub_ce_weight", "1"},
                              {"sub_kd_weight", "1"},  {"ol_weight", "1"},  {"margin", "0.5"},
                              {"ol_mask", "exclude"},  {"ol_on", "sub"},    {"sub_kd", "student"},
                              {"detach_fused", "false"}, {"fuse_weight", "1"}, {"stage_reduce", "sum"},
                              {"cfm", "mlp"},          {"cfm_hidden", "0"}, {"proj_dim", "0"},
                              {"label_smoothing", "0"}});
  CHECK(create_distiller("hcd", d->params(), ctx)->params() == d->params());  // params() reads back
  auto fc = create_distiller("hcd", {{"cfm", "fc"}, {"k", "2"}, {"layers", "f2,f3"}}, ctx);
  std::map<std::string, Tensor> pf = nn::to_map(fc->named_parameters());
  CHECK(pf.at("cfm_f2.0.weight").shape() == Shape{2 * K, 64 + Ct});
  CHECK(pf.count("cfm_f2.2.weight") == 0);
  CHECK(pf.count("proj_f1.0.weight") == 0);

  // errors name the fix
  CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {{"n", "4"}}, ctx), "unknown parameter");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {{"ol_mask", "before"}}, ctx), "ol_mask=exclude");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {{"sub_kd", "both"}}, ctx), "sub_kd=student");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {{"k", "0"}}, ctx), "k must be >= 1");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {{"layers", "f4"}}, ctx), "no feature tap 'f4'");
  {
    DistillerContext no_pooled = ctx;
    no_pooled.teacher_sample.pooled = Tensor();
    CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {}, no_pooled), "--teacher-feat pooled=FILE.npy");
    DistillerContext tokens = ctx;  // a ViT student's token taps
    tokens.student_sample.feats[1] = randn({B, 17, 8}, gen);
    CHECK_THROWS_WITH_SUBSTR(create_distiller("hcd", {}, tokens), "not a (B, C, H, W) map");
  }
  CHECK_THROWS_WITH_SUBSTR(d->loss(student_with({"f1", "f2", "f3"}, maps, zs), teacher_with(Tensor(), zt), batch_of(y)),
                           "pooled");
  CHECK_THROWS_WITH_SUBSTR(
      d->loss(student_with({"f1", "f2", "f3"}, maps, zs), teacher_with(randn({B, Ct + 1}, gen), zt), batch_of(y)),
      "Ct = 12");

  // --explain: the intermediates in the equation's order
  std::vector<std::string> order;
  auto e = create_distiller("hcd", {{"layers", "f2,f3"}}, ctx);
  e->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
  LossBreakdown l = distill_loss(*e, student_with({"f1", "f2", "f3"}, maps, zs), teacher_with(f_t, zt), batch_of(y));
  CHECK(order == std::vector<std::string>{"f_t",        "f2.f_s",      "f2.f_cat",    "f2.z_shared", "f3.f_s",
                                          "f3.f_cat",   "f3.z_shared", "f2.z_sub",    "f2.z_hat",    "f2.L_sub_ce",
                                          "f2.L_sub_kd", "f2.S",       "f2.L_ol",     "f3.z_sub",    "f3.z_hat",
                                          "f3.L_sub_ce", "f3.L_sub_kd", "f3.S",       "f3.L_ol",     "L_kd",
                                          "ce",         "loss"});
  std::vector<std::string> names;
  for (auto& [n, v] : l.parts) names.push_back(n);
  CHECK(names == std::vector<std::string>{"ce", "kd", "sub_ce", "sub_kd", "ol"});
}

// ============================================================================ ViT teacher, CNN student

TEST_CASE("HCD: a ViT teacher and a resnet8 student, a few SGD steps on tiny images") {
  Generator gen(29);
  const int64_t K = 4, B = 6;
  auto student = nn::create_model("resnet8", {K, 3, 8, 1});
  auto teacher = nn::create_model("vit_small_cifar", {K, 3, 8, 2});  // patch 4: 4 tokens + the class token
  teacher->eval();
  teacher->freeze();
  Tensor x = randn({B, 3, 8, 8}, gen), y = randint(0, K, {B}, gen);
  DistillerContext ctx;
  ctx.num_classes = K;
  ctx.seed = 4;
  {
    NoGradGuard ng;
    ctx.student_sample = student->forward(x);
    ctx.teacher_sample = teacher->forward(x);
  }
  CHECK(ctx.teacher_sample.pooled.shape() == Shape{B, 192});  // the ViT's normed class token
  auto d = create_distiller("hcd", {}, ctx);
  auto& h = dynamic_cast<HcdDistiller&>(*d);
  CHECK(h.teacher_dim() == 192);
  CHECK(h.proj_dim() == 192);  // max(64, 192)
  std::vector<Tensor> params;
  for (auto& [n, p] : student->named_parameters()) params.push_back(p);
  for (auto& [n, p] : d->named_parameters()) params.push_back(p);
  std::vector<double> totals, ols;
  for (int step = 0; step < 6; ++step) {
    for (Tensor& p : params) p.zero_grad();
    nn::ModelOutput s = student->forward(x), t;
    {
      NoGradGuard ng;
      t = teacher->forward(x);
    }
    LossBreakdown l = distill_loss(*d, s, t, batch_of(y));
    totals.push_back(l.total.item());
    ols.push_back(part(l, "ol"));
    l.total.backward();
    if (step == 0)
      for (auto& [n, p] : d->named_parameters()) {
        CAPTURE(n);
        CHECK(p.grad().defined());  // every helper is on the loss's path
      }
    NoGradGuard ng;
    for (Tensor& p : params)
      if (p.grad().defined()) p.copy_(sub(p, mul(p.grad(), 0.05)));
  }
  for (double v : totals) CHECK(std::isfinite(v));
  CHECK(totals.back() < totals.front());
}

TEST_CASE("HCD through kdlab distill's loop: ViT teacher, resnet8 student, helpers trained and checkpointed") {
  // a ViT teacher with its initial weights (the loop only needs its outputs)
  const std::string teacher_path = kdtest::temp_path("hcd_vit_teacher") + ".safetensors";
  {
    auto vit = nn::create_model("vit_small_cifar", {4, 3, 32, 5});
    nn::save_safetensors(teacher_path, vit->state_dict());
  }
  train::TrainConfig c = kdtest::tiny_config();
  c.method = "hcd";
  c.teacher = "vit_small_cifar";
  c.teacher_weights = teacher_path;
  c.epochs = 2;
  c.train_limit = 64;
  c.test_limit = 32;
  train::apply_distill_override("k=2", c);
  const std::string dir = kdtest::temp_path("hcd_run");
  DistillSetup setup;
  train::Run run = prepare_distill_run(c, dir, "test", setup);
  nn::NamedTensors helpers = setup.distiller->named_parameters();
  CHECK(!helpers.empty());
  CHECK(run.extra_params.size() == helpers.size());  // the helpers are optimised with the student
  const Tensor w0 = nn::to_map(setup.distiller->state_dict()).at("cfm_f1.0.weight").clone().detach();
  train::RunSummary s = train::run_training(run, false);
  CHECK_FALSE(s.interrupted);
  std::vector<json> m = kdtest::read_metrics(dir);
  REQUIRE(m.size() == 2);
  for (const char* p : {"loss_ce", "loss_kd", "loss_sub_ce", "loss_sub_kd", "loss_ol"}) {
    CAPTURE(p);
    REQUIRE(m[1].contains(p));
    CHECK(std::isfinite(m[1][p].get<double>()));
  }
  std::map<std::string, Tensor> ckpt = nn::to_map(nn::load_safetensors(dir + "/checkpoint.safetensors").tensors);
  for (auto& [n, p] : setup.distiller->state_dict()) {
    CAPTURE(n);
    REQUIRE(ckpt.count("distiller." + n) == 1);
  }
  CHECK(max_abs(sub(ckpt.at("distiller.cfm_f1.0.weight"), w0)) > 1e-6);  // the mapper moved

  // HCD reads the teacher's logits and pooled feature only: the teacher cache serves it
  c.teacher_cache = true;
  c.teacher_cache_views = 2;
  c.epochs = 1;
  const std::string cached = kdtest::temp_path("hcd_run_cached");
  DistillSetup setup2;
  train::Run run2 = prepare_distill_run(c, cached, "test", setup2);
  REQUIRE(setup2.cache != nullptr);
  CHECK(setup2.cache->has_pooled());
  CHECK_FALSE(train::run_training(run2, false).interrupted);
  std::vector<json> m2 = kdtest::read_metrics(cached);
  REQUIRE(m2.size() == 1);
  CHECK(std::isfinite(m2[0]["loss_sub_kd"].get<double>()));
}

// ============================================================================ kdlab loss

#ifdef KDLAB_BIN
TEST_CASE("kdlab loss hcd: stage taps, the teacher's pooled feature and helper weights give the reference") {
  const json golden = kdtest::golden_case("hcd_losses.json", "hcd_defaults_three_stages");
  const json* c = &golden;
  V x;
  for (const json& ij : c->at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
  const std::string dir = kdtest::temp_path("hcd_cli");
  fs::create_directories(dir);
  save_npy(dir + "/zs.npy", x[0]);
  save_npy(dir + "/zt.npy", x[1]);
  save_npy(dir + "/y.npy", x[2]);
  save_npy(dir + "/ft.npy", x[3]);
  for (int i = 1; i <= 3; ++i) save_npy(dir + "/f" + std::to_string(i) + ".npy", x[3 + (size_t)i]);
  const std::string inputs = " loss hcd --student-logits " + dir + "/zs.npy --teacher-logits " + dir +
                             "/zt.npy --labels " + dir + "/y.npy --student-feat f1=" + dir + "/f1.npy --student-feat f2=" +
                             dir + "/f2.npy --student-feat f3=" + dir + "/f3.npy --teacher-feat pooled=" + dir +
                             "/ft.npy --helper-weights " +
                             kdtest::fixture_path(c->at("params").at("helper_weights").get<std::string>());
  auto run = [](const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    CHECK(pclose(p) == 0);
    return out;
  };
  json j = json::parse(run(std::string(KDLAB_BIN) + inputs + " --json --grad-out " + dir + "/grads"));
  CHECK(j["loss"].get<double>() == doctest::Approx(c->at("outputs")[0].at("data")[0].get<double>()).epsilon(1e-5));
  int i = 1;
  for (const char* p : {"ce", "kd", "sub_ce", "sub_kd", "ol"})
    CHECK(j["parts"][p].get<double>() ==
          doctest::Approx(c->at("outputs")[(size_t)i++].at("data")[0].get<double>()).epsilon(1e-5));
  // the golden gradients are for the upstream gradient grad_outputs[0]; kdlab loss uses 1
  const double go = c->at("grad_outputs")[0].at("data")[0].get<double>();
  const std::vector<std::pair<std::string, size_t>> grads{{"logits", 0}, {"f1", 4}, {"f2", 5}, {"f3", 6}};
  for (const auto& [name, index] : grads) {
    CAPTURE(name);
    kdtest::Closeness cl = kdtest::allclose(mul(load_npy(dir + "/grads/" + name + ".npy"), go),
                                            kdtest::tensor_from_json(c->at("grads")[index]), 1e-3, 1e-5);
    CHECK_MESSAGE(cl.ok, cl.msg);
  }
  // --explain prints the steps; --explain-dir writes each one whole
  const std::string text = run(std::string(KDLAB_BIN) + inputs + " --explain --explain-dir " + dir + "/explain");
  CHECK(text.find("f2.L_ol") != std::string::npos);
  json idx = json::parse(std::ifstream(dir + "/explain/explain.json"));
  std::vector<std::string> names;
  for (const json& e : idx) names.push_back(e["name"].get<std::string>());
  CHECK(names.front() == "f_t");
  CHECK(names.back() == "loss");
  CHECK(std::find(names.begin(), names.end(), "f3.S") != names.end());
  CHECK(load_npy(dir + "/explain/f1.z_sub.npy").shape() == Shape{3, 4, 5});
}
#endif
