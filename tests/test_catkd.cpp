// CAT-KD (distill/feature/catkd.h): golden values and gradients from the official code
// (tests/reference/gen_catkd.py: GzyAftermath/CAT-KD's CAT_KD.py, the teacher's conversion in
// tools/train.py and the "_test" student), both from feature maps + classifier weights and from
// CAMs given directly; the invariants of the method (an FC on pooled features is the mean of its
// 1x1-conv CAMs in every CNN of the zoo; r = 1 without normalisation is the MSE of the bias-free
// logits; zero when the CAMs agree; normalisation removes the scale); gradchecks; the
// CAM-variant student (the factory zeroes and freezes the classifier bias); a few SGD steps on
// real networks; the registry, parameters, errors and --explain; `kdlab loss catkd` with the
// `cam` taps.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "distill/feature/catkd.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "nn/models/model.h"
#include "nn/safetensors.h"
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

BatchInfo batch_of(const Tensor& y) {
  BatchInfo b;
  b.labels = y;
  return b;
}

// The tail of a CNN: its input is the map before the global pooling, then the mean over (H, W)
// and a linear classifier whose weight and bias are the given tensors (so that the golden case's
// gradient lands on the case's own input tensor).
class MapHead : public nn::Classifier {
 public:
  MapHead(const Tensor& w, const Tensor& b) {
    weight = register_parameter("weight", w);
    bias = register_parameter("bias", b);
  }
  nn::ModelOutput forward(const Tensor& x) override {
    nn::ModelOutput o;
    o.pooled_map = x;                          // (B, C, H, W)
    o.pooled = mean(x, {2, 3});                // (B, C)
    o.logits = linear(o.pooled, weight, bias);  // (B, K)
    return o;
  }
  std::string type_name() const override { return "MapHead"; }
  std::string classifier_name() const override { return ""; }  // the module itself is the linear layer
  Tensor weight, bias;
};

// inputs: f_s, f_t, W_s, W_t, b_t, labels. The student is a MapHead with W_s and a random bias
// (which the factory must zero: the official student has none), the teacher a MapHead with its FC.
V run_catkd(const V& x, const json& p) {
  Generator gen(1);
  auto student = std::make_shared<MapHead>(x[2], randn({x[2].size(0)}, gen));
  auto teacher = std::make_shared<MapHead>(x[3].detach(), x[4].detach());
  DistillerContext ctx;
  ctx.student_model = student;
  ctx.teacher_model = teacher;
  {
    NoGradGuard ng;
    ctx.student_sample = student->forward(x[0].detach());
    ctx.teacher_sample = teacher->forward(x[1]);
  }
  auto d = create_distiller("catkd", params_from(p), ctx);
  CHECK(max(abs(student->bias)).item() == 0.0);
  nn::ModelOutput s = student->forward(x[0]), t;
  {
    NoGradGuard ng;
    t = teacher->forward(x[1]);
  }
  return outputs_of(distill_loss(*d, s, t, batch_of(x[5])));
}

// inputs: zs, cam_s, cam_t, labels (the `cam` taps of kdlab loss).
V run_catkd_cam(const V& x, const json& p) {
  nn::ModelOutput s, t;
  s.logits = x[0];
  s.cam = x[1];
  t.cam = x[2];
  DistillerContext ctx;
  ctx.student_sample = s;
  ctx.teacher_sample = t;
  auto d = create_distiller("catkd", params_from(p), ctx);
  return outputs_of(distill_loss(*d, s, t, batch_of(x[3])));
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

double max_abs_diff(const Tensor& a, const Tensor& b) { return max(abs(sub(a, b))).item(); }

}  // namespace

// ============================================================================ golden values

TEST_CASE("CAT-KD: golden values and gradients from the official code") {
  kdtest::GoldenTable table = {{"catkd", run_catkd}, {"catkd_cam", run_catkd_cam}};
  CHECK(kdtest::run_golden_file("catkd_losses.json", table) == 9);
}

// ============================================================================ invariants

TEST_CASE("CAT-KD: an FC on the pooled map is the spatial mean of its 1x1-conv CAMs, in every CNN of the zoo") {
  Generator gen(3);
  const int64_t K = 7;
  Tensor x = randn({2, 3, 32, 32}, gen);
  for (const std::string name :
       {"resnet8", "resnet8x4", "wrn_16_2", "vgg8", "mobilenetv2_half", "shufflenetv1", "shufflenetv2"}) {
    CAPTURE(name);
    auto model = nn::create_model(name, {K, 3, 32, 5});
    model->eval();
    NoGradGuard ng;
    nn::ModelOutput o = model->forward(x);
    REQUIRE(o.pooled_map.defined());
    REQUIRE(o.pooled_map.dim() == 4);
    // pooled_map is the map the classifier pools
    CHECK(max_abs_diff(mean(o.pooled_map, {2, 3}), o.pooled) < 1e-5);
    ClassifierParams c = find_classifier(*model, K, o.pooled_map.size(1), "model");
    REQUIRE(c.bias.defined());
    CHECK(fc_to_conv1x1(c.weight).shape() == Shape{K, o.pooled_map.size(1), 1, 1});
    Tensor cam = class_activation_maps(o.pooled_map, c.weight);  // (B, K, H, W)
    CHECK(cam.shape() == Shape{2, K, o.pooled_map.size(2), o.pooled_map.size(3)});
    // the FC's logits = the mean of the CAMs + the bias that the conversion drops
    CHECK(max_abs_diff(add(mean(cam, {2, 3}), c.bias), o.logits) < 1e-4);
  }
  auto vit = nn::create_model("vit_small_cifar", {K, 3, 32, 5});
  NoGradGuard ng;
  CHECK_FALSE(vit->forward(randn({1, 3, 32, 32}, gen)).pooled_map.defined());
}

TEST_CASE("CAT-KD with r = 1 and no normalisation is the MSE of the bias-free logits") {
  Generator gen(4);
  const int64_t B = 3, K = 5;
  Tensor fs = randn({B, 4, 4, 4}, gen), ft = randn({B, 6, 8, 8}, gen);
  Tensor ws = randn({K, 4}, gen), wt = randn({K, 6}, gen);
  Tensor y = randint(0, K, {B}, gen);
  CatKdOptions o;
  o.r = 1;
  o.beta = 3.0;
  LossBreakdown l = catkd_loss(randn({B, K}, gen), y, class_activation_maps(fs, ws), class_activation_maps(ft, wt), o);
  Tensor zs_nobias = linear(mean(fs, {2, 3}), ws), zt_nobias = linear(mean(ft, {2, 3}), wt);  // (B, K)
  CHECK(part(l, "cat") == doctest::Approx(3.0 * mse_loss(zs_nobias, zt_nobias).item()).epsilon(1e-5));
}

TEST_CASE("CAT-KD: zero when the CAMs agree; the normalised loss ignores the CAMs' scale; >= 0") {
  Generator gen(5);
  const int64_t B = 2, K = 4;
  Tensor zs = randn({B, K}, gen), y = randint(0, K, {B}, gen);
  Tensor cam = randn({B, K, 4, 4}, gen);
  for (bool norm : {false, true})
    for (int64_t r : {1, 2, 4}) {
      CAPTURE(norm);
      CAPTURE(r);
      CatKdOptions o;
      o.normalize = norm;
      o.r = r;
      LossBreakdown l = catkd_loss(zs, y, cam, cam, o);
      CHECK(part(l, "cat") == 0.0);
      CHECK(l.total.item() == 0.0);  // CAT-KD's own term (distill_loss adds the CE)
      CHECK(part(catkd_loss(zs, y, cam, randn({B, K, 8, 8}, gen), o), "cat") > 0.0);
    }
  // the teacher's maps at a coarser resolution pooled to the same r x r: equal after pooling
  Tensor fine = randn({B, K, 4, 4}, gen);
  CatKdOptions o;
  CHECK(part(catkd_loss(zs, y, fine, adaptive_avg_pool2d(fine, Int2(2, 2)), o), "cat") < 1e-12);
  // normalised: a positive scale of either side's CAMs does not change the loss
  o.normalize = true;
  Tensor ct = randn({B, K, 4, 4}, gen);
  const double base = part(catkd_loss(zs, y, cam, ct, o), "cat");
  CHECK(part(catkd_loss(zs, y, mul(cam, 7.0), mul(ct, 0.2), o), "cat") == doctest::Approx(base).epsilon(1e-5));
  // N gives unit L2 norm per r x r map
  Tensor n = normalize_cams(randn({B, K, 2, 2}, gen));
  CHECK(max_abs_diff(sum(mul(n, n), {2, 3}), add(zeros({B, K}), 1.0)) < 1e-5);
}

TEST_CASE("CAT-KD: binarised teacher CAMs are 1 above the mean absolute value of each map") {
  Tensor cam = from_vector(std::vector<float>{1, -3, 2, 4, 0, 0, 0, 8}, {1, 2, 2, 2});
  // map 0: mean |.| = 2.5 -> only 4 is above; map 1: mean |.| = 2 -> only 8
  Tensor b = binarize_cams(cam);
  CHECK(to_float_vector(b) == std::vector<float>{0, 0, 0, 1, 0, 0, 0, 1});
}

TEST_CASE("CAT-KD: gradcheck w.r.t. the student's CAMs, logits, map and classifier weight") {
  Generator gen(6);
  const int64_t B = 2, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zs = leaf(randn({B, K}, gen));
  for (bool norm : {false, true})
    for (int64_t r : {1, 2, 3}) {
      CAPTURE(norm);
      CAPTURE(r);
      CatKdOptions o;
      o.normalize = norm;
      o.r = r;
      o.beta = 2.0;
      Tensor cs = leaf(randn({B, K, 5, 5}, gen)), ct = randn({B, K, 4, 4}, gen);
      CHECK_GRADCHECK([&](const V& x) { return catkd_loss(x[0], y, x[1], ct, o).total; }, V{zs, cs});
    }
  Tensor map = leaf(randn({B, 4, 3, 3}, gen)), w = leaf(randn({K, 4}, gen));
  Tensor ct = randn({B, K, 3, 3}, gen);
  CatKdOptions o;
  CHECK_GRADCHECK([&](const V& x) { return catkd_loss(zs, y, class_activation_maps(x[0], x[1]), ct, o).total; },
                  V{map, w});
}

TEST_CASE("CAT-KD: the CAM-variant student (classifier bias zeroed and frozen) and its training") {
  Generator gen(7);
  const int64_t K = 4, B = 6;
  auto student = nn::create_model("resnet8", {K, 3, 16, 1});
  auto teacher = nn::create_model("resnet14", {K, 3, 16, 2});
  teacher->eval();
  teacher->freeze();
  Tensor x = randn({B, 3, 16, 16}, gen), y = randint(0, K, {B}, gen);
  DistillerContext ctx;
  ctx.num_classes = K;
  ctx.student_model = student;
  ctx.teacher_model = teacher;
  {
    NoGradGuard ng;
    ctx.student_sample = student->forward(x);
    ctx.teacher_sample = teacher->forward(x);
  }
  ClassifierParams c = find_classifier(*student, K, 64, "student");
  CHECK(c.weight_name == "fc.weight");
  CHECK(c.bias_name == "fc.bias");

  SUBCASE("student_bias=true keeps the bias trainable") {
    NoGradGuard ng;
    c.bias.fill_(0.5);
    create_distiller("catkd", {{"student_bias", "true"}}, ctx);
    CHECK(c.bias.requires_grad());
    CHECK(min(c.bias).item() == 0.5);
  }
  SUBCASE("by default the bias is zeroed and frozen; the logits are the mean of the CAMs; CAT alone trains W_s") {
    auto d = create_distiller("catkd", {{"ce_weight", "0"}, {"beta", "1"}}, ctx);
    CHECK(d->named_parameters().empty());  // no helper: the student's own classifier makes the CAMs
    CHECK_FALSE(c.bias.requires_grad());
    CHECK(max(abs(c.bias)).item() == 0.0);
    const Tensor w0 = c.weight.detach().clone();
    std::vector<double> l_cat;
    for (int step = 0; step < 8; ++step) {
      student->zero_grad();
      nn::ModelOutput s = student->forward(x), t;
      {
        NoGradGuard ng;
        t = teacher->forward(x);
      }
      if (step == 0) {
        auto* cd = dynamic_cast<CatKdDistiller*>(d.get());
        REQUIRE(cd != nullptr);
        Tensor cam = cd->cams_of(s, c.weight, "student");
        CHECK(max_abs_diff(mean(cam, {2, 3}), s.logits) < 1e-4);  // bias-free: logits = mean of the CAMs
      }
      LossBreakdown l = distill_loss(*d, s, t, batch_of(y));
      l_cat.push_back(part(l, "cat"));
      l.total.backward();
      REQUIRE(c.weight.grad().defined());
      CHECK_FALSE(c.bias.grad().defined());
      NoGradGuard ng;
      for (auto& [n, p] : student->named_parameters())
        if (p.requires_grad() && p.grad().defined()) p.copy_(sub(p, mul(p.grad(), 0.05)));
    }
    CHECK(l_cat.back() < 0.7 * l_cat.front());
    CHECK(max_abs_diff(c.weight, w0) > 1e-4);
    CHECK(max(abs(c.bias)).item() == 0.0);
  }
}

TEST_CASE("CAT-KD: registry row, defaults, parameters, errors and --explain") {
  bool found = false;
  for (const auto& e : distiller_registry())
    if (e.name == "catkd") {
      found = true;
      CHECK(e.family == "feature");
    }
  CHECK(found);
  auto d = create_distiller("catkd", {}, {});
  CHECK(d->needs().feats);
  CHECK(d->params() == Params{{"beta", "15"},
                              {"r", "2"},
                              {"normalize", "false"},
                              {"ce_weight", "1"},
                              {"binarize", "false"},
                              {"student_bias", "false"}});
  CHECK_THROWS_WITH_AS(create_distiller("catkd", {{"resolution", "2"}}, {}), doctest::Contains("unknown parameter"),
                       Error);
  CHECK_THROWS_WITH_AS(create_distiller("catkd", {{"r", "0"}}, {}), doctest::Contains("r must be >= 1"), Error);

  Generator gen(8);
  const int64_t B = 2, K = 3;
  Tensor y = randint(0, K, {B}, gen);
  nn::ModelOutput s, t;
  s.logits = randn({B, K}, gen);
  s.pooled_map = randn({B, 4, 4, 4}, gen);
  t.pooled_map = randn({B, 5, 4, 4}, gen);
  // no CAMs and no networks: the error says how to give them
  CHECK_THROWS_WITH_AS(d->loss(s, t, batch_of(y)), doctest::Contains("cam=FILE.npy"), Error);
  // a network without a spatial map (ViT)
  {
    auto vit = nn::create_model("vit_small_cifar", {K, 3, 32, 1});
    auto cnn = nn::create_model("resnet8", {K, 3, 32, 2});
    DistillerContext ctx;
    ctx.num_classes = K;
    ctx.student_model = cnn;
    ctx.teacher_model = vit;
    NoGradGuard ng;
    ctx.student_sample = cnn->forward(randn({1, 3, 32, 32}, gen));
    ctx.teacher_sample = vit->forward(randn({1, 3, 32, 32}, gen));
    CHECK_THROWS_WITH_AS(create_distiller("catkd", {}, ctx), doctest::Contains("not a ViT"), Error);
  }
  // CAMs whose class count differs from the logits'
  s.cam = randn({B, K + 1, 4, 4}, gen);
  t.cam = randn({B, K + 1, 4, 4}, gen);
  CHECK_THROWS_WITH_AS(d->loss(s, t, batch_of(y)), doctest::Contains("must be (B, K, H, W)"), Error);

  // --explain: the intermediates in equation order
  s.cam = randn({B, K, 4, 4}, gen);
  t.cam = randn({B, K, 8, 8}, gen);
  std::vector<std::string> order;
  auto e = create_distiller("catkd", {{"normalize", "true"}, {"binarize", "true"}}, {});
  e->explain = [&](const std::string& n, const Tensor&) { order.push_back(n); };
  distill_loss(*e, s, t, batch_of(y));
  CHECK(order == std::vector<std::string>{"cam_s", "cam_t", "cam_t_binary", "P_cam_s", "P_cam_t", "N_cam_s", "N_cam_t",
                                          "L_cat", "ce", "loss"});
}

// ============================================================================ kdlab loss

#ifdef KDLAB_BIN
TEST_CASE("kdlab loss catkd: the cam taps give the official code's loss and gradient") {
  const json golden = kdtest::golden_case("catkd_losses.json", "catkd_cam_r4_normalized");
  const json* c = &golden;
  V x;
  for (const json& ij : c->at("inputs")) x.push_back(kdtest::tensor_from_json(ij));
  const std::string dir = kdtest::temp_path("catkd_cli");
  std::filesystem::create_directories(dir);
  save_npy(dir + "/zs.npy", x[0]);
  save_npy(dir + "/cs.npy", x[1]);
  save_npy(dir + "/ct.npy", x[2]);
  save_npy(dir + "/y.npy", x[3]);
  save_npy(dir + "/zt.npy", zeros(x[0].shape()));  // not read by catkd
  const std::string cmd = std::string(KDLAB_BIN) + " loss catkd --student-logits " + dir + "/zs.npy --teacher-logits " +
                          dir + "/zt.npy --labels " + dir + "/y.npy --student-feat cam=" + dir +
                          "/cs.npy --teacher-feat cam=" + dir + "/ct.npy --set beta=600 --set r=4 --set normalize=true " +
                          "--json --grad-out " + dir + "/g.safetensors";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  REQUIRE(pclose(p) == 0);
  json j = json::parse(out);
  const double golden_total = c->at("outputs")[0].at("data")[0].get<double>();
  CHECK(j["loss"].get<double>() == doctest::Approx(golden_total).epsilon(1e-5));
  CHECK(j["parts"]["cat"].get<double>() == doctest::Approx(c->at("outputs")[2].at("data")[0].get<double>()).epsilon(1e-5));
  // the golden gradients are for the upstream gradient grad_outputs[0]; kdlab loss uses 1
  const double go = c->at("grad_outputs")[0].at("data")[0].get<double>();
  auto grads = nn::to_map(nn::load_safetensors(dir + "/g.safetensors").tensors);
  REQUIRE(grads.count("cam") == 1);
  REQUIRE(grads.count("logits") == 1);
  kdtest::Closeness g_cam =
      kdtest::allclose(mul(grads.at("cam"), go), kdtest::tensor_from_json(c->at("grads")[1]), 1e-4, 1e-6);
  CHECK_MESSAGE(g_cam.ok, g_cam.msg);
  kdtest::Closeness g_z =
      kdtest::allclose(mul(grads.at("logits"), go), kdtest::tensor_from_json(c->at("grads")[0]), 1e-4, 1e-6);
  CHECK_MESSAGE(g_z.ok, g_z.msg);
}
#endif
