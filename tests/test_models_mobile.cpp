// Mobile CIFAR models (nn/models/mobilenetv2.cpp, shufflenet.cpp) against PyTorch
// (tests/reference/gen_models_mobile.py): state-dict layout, parameter counts, eval/train taps,
// gradients and BatchNorm statistics; plus channel shuffle, the tap contract, init and errors.
#include <cmath>

#include "model_golden.h"
#include "nn/init.h"
#include "nn/models/mobilenetv2.h"
#include "nn/models/shufflenet.h"

using namespace kd;
using kdtest::json;

static const char* kMobile[] = {"mobilenetv2", "mobilenetv2_half", "shufflenetv1", "shufflenetv2"};

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TEST_CASE("mobile: every model is registered and builds with the default config") {
  std::vector<std::string> names = nn::model_names();
  for (const char* n : kMobile) {
    INFO(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
    auto m = nn::create_model(n);
    CHECK(m->type_name() == n);
  }
}

TEST_CASE("mobile: state-dict names, shapes and parameter counts equal PyTorch's") {
  json fx = kdtest::load_model_fixture("golden_models_mobile.json");
  CHECK(fx.at("models").size() == 4);
  for (const auto& [key, info] : fx.at("models").items()) {
    std::string name;
    nn::ModelConfig cfg = kdtest::config_for_key(key, &name);
    kdtest::check_state_layout(*nn::create_model(name, cfg), info, key);
  }
  // the published sizes (CIFAR-100 heads): MobileNetV2 x0.5 0.81M, ShuffleV1 0.95M, ShuffleV2 1.36M
  CHECK(nn::create_model("mobilenetv2_half")->num_parameters() == 812836);
  CHECK(nn::create_model("shufflenetv1")->num_parameters() == 949258);
  CHECK(nn::create_model("shufflenetv2")->num_parameters() == 1355528);
}

TEST_CASE("mobile: outputs, taps, gradients and BN statistics match PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_mobile.json");
  CHECK(fx.at("runs").size() == 7);
  for (const json& run : fx.at("runs")) {
    SUBCASE(run.at("name").get<std::string>().c_str()) { kdtest::check_model_run(run); }
  }
}

// Gradients are checked where they are well conditioned (see gen_models_mobile.py): whole models
// in eval mode and single blocks in train mode, against float64 PyTorch. At batch 2 with
// train-mode BN the whole-model gradients are chaotic (1e-6 input changes move them by percents).
TEST_CASE("mobile: eval-mode gradients of every parameter and of the input match float64 PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_mobile.json");
  int checked = 0;
  for (const json& run : fx.at("runs")) {
    if (!run.contains("eval_grads")) continue;
    const std::string name = run.at("name").get<std::string>();
    SUBCASE(name.c_str()) {
      const json& eg = run.at("eval_grads");
      const double rtol = eg.at("rtol").get<double>();
      nn::ModelConfig cfg;
      cfg.num_classes = run.at("num_classes").get<int64_t>();
      cfg.in_channels = run.at("in_channels").get<int64_t>();
      auto model = nn::create_model(run.at("model").get<std::string>(), cfg);
      kdtest::det_fill(*model);
      model->eval();
      Tensor x = kdtest::det_input(kdtest::shape_from_json(run.at("input_shape"))).requires_grad_();
      nn::ModelOutput o = model->forward(x);
      Tensor w = from_vector(kdtest::det_uniform(99, o.logits.numel()), o.logits.shape());
      sum(o.logits * w).backward();
      const nn::NamedTensors params = model->named_parameters();
      const json& grads = eg.at("params");
      REQUIRE(params.size() == grads.size());
      for (size_t i = 0; i < params.size(); ++i) {
        REQUIRE(params[i].first == grads[i][0].get<std::string>());
        kdtest::check_fp(params[i].second.grad(), grads[i][1], rtol, name + " eval grad of " + params[i].first);
      }
      kdtest::check_fp(x.grad(), eg.at("input"), rtol, name + " eval grad of the input");
    }
    ++checked;
  }
  CHECK(checked == 3);
}

// Builds one block of the given kind as the generator does and returns its output and preact
// (undefined for blocks without one).
static std::pair<Tensor, Tensor> run_block(nn::Module& m, const std::string& kind, const Tensor& x) {
  if (kind == "inverted_residual") return {static_cast<nn::InvertedResidual&>(m).forward(x), Tensor()};
  if (kind == "v1_bottleneck") {
    nn::ShuffleOutput o = static_cast<nn::ShuffleV1Bottleneck&>(m).forward(x);
    return {o.out, o.preact};
  }
  if (kind == "v2_basic") {
    nn::ShuffleOutput o = static_cast<nn::ShuffleV2BasicBlock&>(m).forward(x);
    return {o.out, o.preact};
  }
  return {static_cast<nn::ShuffleV2DownBlock&>(m).forward(x), Tensor()};
}

static std::shared_ptr<nn::Module> make_block(const std::string& kind, const std::vector<int64_t>& a, Generator& gen) {
  if (kind == "inverted_residual") return std::make_shared<nn::InvertedResidual>(a[0], a[1], a[2], a[3], gen);
  if (kind == "v1_bottleneck") return std::make_shared<nn::ShuffleV1Bottleneck>(a[0], a[1], a[2], a[3], gen);
  if (kind == "v2_basic") return std::make_shared<nn::ShuffleV2BasicBlock>(a[0], gen);
  REQUIRE(kind == "v2_down");
  return std::make_shared<nn::ShuffleV2DownBlock>(a[0], a[1], gen);
}

TEST_CASE("mobile: single blocks in train mode match float64 PyTorch (outputs and all gradients)") {
  json fx = kdtest::load_model_fixture("golden_models_mobile.json");
  const json& blocks = fx.at("blocks");
  CHECK(blocks.size() == 7);
  for (const json& b : blocks) {
    const std::string name = b.at("name").get<std::string>(), kind = b.at("kind").get<std::string>();
    SUBCASE(name.c_str()) {
      const double rtol = b.at("rtol").get<double>();
      Generator gen(0);
      auto m = make_block(kind, b.at("args").get<std::vector<int64_t>>(), gen);
      kdtest::det_fill(*m);
      m->train();
      Tensor x = kdtest::det_input(kdtest::shape_from_json(b.at("input_shape"))).requires_grad_();
      auto [out, preact] = run_block(*m, kind, x);
      kdtest::check_fp(out, b.at("out"), rtol, name + " output");
      if (b.contains("preact")) kdtest::check_fp(preact, b.at("preact"), rtol, name + " preact");
      Tensor w = from_vector(kdtest::det_uniform(99, out.numel()), out.shape());
      sum(out * w).backward();
      const nn::NamedTensors params = m->named_parameters();
      const json& grads = b.at("grads");
      REQUIRE(params.size() == grads.size());
      for (size_t i = 0; i < params.size(); ++i) {
        REQUIRE(params[i].first == grads[i][0].get<std::string>());
        kdtest::check_fp(params[i].second.grad(), grads[i][1], rtol, name + " grad of " + params[i].first);
      }
      kdtest::check_fp(x.grad(), b.at("input_grad"), rtol, name + " grad of the input");
    }
  }
}

TEST_CASE("mobile: channel shuffle") {
  // 6 channels in 3 groups of 2: output channel j*3 + i is input channel i*2 + j
  Tensor x = arange(0, 6 * 2, 1, DType::f32).reshape({1, 6, 1, 2});
  Tensor y = nn::channel_shuffle(x, 3);
  const int64_t want[] = {0, 2, 4, 1, 3, 5};
  for (int64_t c = 0; c < 6; ++c) {
    CHECK(y.at({0, c, 0, 0}) == 2.0 * want[c]);
    CHECK(y.at({0, c, 0, 1}) == 2.0 * want[c] + 1);
  }
  CHECK(kdtest::allclose(nn::channel_shuffle(x, 1), x, 0, 0).ok);  // one group: identity
  // shuffling with g and then with C/g restores the order
  CHECK(kdtest::allclose(nn::channel_shuffle(y, 2), x, 0, 0).ok);

  Generator gen(2);
  using V = std::vector<Tensor>;
  V in{randn({2, 4, 2, 3}, gen).requires_grad_()};
  CHECK_GRADCHECK([](const V& v) { return nn::channel_shuffle(v[0], 2); }, in);
  V nc{randn({2, 3, 6, 2}, gen).requires_grad_()};  // non-contiguous (B, 6, 3, 2) view
  CHECK_GRADCHECK([](const V& v) { return nn::channel_shuffle(v[0].transpose(1, 2), 3) * 2.0; }, nc);

  CHECK_THROWS_WITH_SUBSTR(nn::channel_shuffle(randn({1, 5, 2, 2}, gen), 2), "5 channels cannot be split into 2 groups");
  CHECK_THROWS_WITH_SUBSTR(nn::channel_shuffle(randn({5, 2, 2}, gen), 2), "expects (B, C, H, W), got (5, 2, 2)");
}

TEST_CASE("mobile: mobilenetv2_half feature taps follow mdistiller") {
  auto m = nn::create_model("mobilenetv2_half");
  m->eval();
  NoGradGuard no_grad;
  Generator gen(3);
  nn::ModelOutput o = m->forward(randn({2, 3, 32, 32}, gen));
  REQUIRE(o.feats.size() == 5);
  REQUIRE(o.preact_feats.size() == 5);
  CHECK(o.feats[0].shape() == Shape{2, 16, 16, 16});
  CHECK(o.feats[1].shape() == Shape{2, 12, 16, 16});
  CHECK(o.feats[2].shape() == Shape{2, 16, 8, 8});
  CHECK(o.feats[3].shape() == Shape{2, 48, 4, 4});
  CHECK(o.feats[4].shape() == Shape{2, 160, 2, 2});
  CHECK(o.pooled.shape() == Shape{2, 1280});
  CHECK(o.logits.shape() == Shape{2, 100});
  for (int i = 0; i < 5; ++i) CHECK(o.preact_feats[i].is_same(o.feats[i]));
  CHECK(min(o.feats[0]).item() >= 0.0);  // the stem ends in a ReLU
  CHECK(min(o.feats[4]).item() < 0.0);   // the blocks end in BN
  // mobilenetv2 (width 1.0): 32-24-32-96-320 channels, 1280 pooled
  auto w1 = nn::create_model("mobilenetv2");
  w1->eval();
  nn::ModelOutput o1 = w1->forward(randn({1, 3, 32, 32}, gen));
  CHECK(o1.feats[0].shape() == Shape{1, 32, 16, 16});
  CHECK(o1.feats[3].shape() == Shape{1, 96, 4, 4});
  CHECK(o1.feats[4].shape() == Shape{1, 320, 2, 2});
  CHECK(o1.pooled.shape() == Shape{1, 1280});
}

TEST_CASE("mobile: shufflenet feature taps follow mdistiller") {
  Generator gen(4);
  Tensor x = randn({2, 3, 32, 32}, gen);
  NoGradGuard no_grad;
  SUBCASE("shufflenetv1") {
    auto m = nn::create_model("shufflenetv1");
    m->eval();
    nn::ModelOutput o = m->forward(x);
    REQUIRE(o.feats.size() == 4);
    CHECK(o.feats[0].shape() == Shape{2, 24, 32, 32});
    CHECK(o.feats[1].shape() == Shape{2, 240, 16, 16});
    CHECK(o.feats[2].shape() == Shape{2, 480, 8, 8});
    CHECK(o.feats[3].shape() == Shape{2, 960, 4, 4});
    CHECK(o.pooled.shape() == Shape{2, 960});
    CHECK(o.preact_feats[0].is_same(o.feats[0]));
    for (int i = 1; i < 4; ++i) CHECK(kdtest::allclose(o.feats[i], relu(o.preact_feats[i]), 0, 0).ok);
    CHECK(kdtest::allclose(o.pooled, mean(o.feats[3], {2, 3}), 1e-5, 1e-6).ok);
  }
  SUBCASE("shufflenetv2") {
    auto m = nn::create_model("shufflenetv2");
    m->eval();
    nn::ModelOutput o = m->forward(x);
    REQUIRE(o.feats.size() == 4);
    CHECK(o.feats[0].shape() == Shape{2, 24, 32, 32});
    CHECK(o.feats[1].shape() == Shape{2, 116, 16, 16});
    CHECK(o.feats[2].shape() == Shape{2, 232, 8, 8});
    CHECK(o.feats[3].shape() == Shape{2, 464, 4, 4});
    CHECK(o.pooled.shape() == Shape{2, 1024});
    CHECK(o.preact_feats[0].is_same(o.feats[0]));
    // mdistiller's preact is the block's concatenation before the ReLU and before the shuffle
    for (int i = 1; i < 4; ++i) {
      CHECK(o.preact_feats[i].shape() == o.feats[i].shape());
      CHECK(min(o.preact_feats[i]).item() < 0.0);
      CHECK(kdtest::allclose(o.feats[i], nn::channel_shuffle(relu(o.preact_feats[i]), 2), 0, 0).ok);
    }
  }
}

TEST_CASE("mobile: one-channel 28x28 inputs with 10 classes") {
  nn::ModelConfig cfg;
  cfg.in_channels = 1;
  cfg.image_size = 28;
  cfg.num_classes = 10;
  Generator gen(5);
  Tensor x = randn({2, 1, 28, 28}, gen);
  NoGradGuard no_grad;
  for (const char* n : kMobile) {
    INFO(n);
    auto m = nn::create_model(n, cfg);
    m->eval();
    nn::ModelOutput o = m->forward(x);
    CHECK(o.logits.shape() == Shape{2, 10});
    CHECK(o.feats.back().size(2) == (std::string(n).rfind("mobile", 0) == 0 ? 2 : 4));
  }
  CHECK(nn::create_model("mobilenetv2_half", cfg)->parameter("conv1.0.weight").shape() == Shape{16, 1, 3, 3});
  CHECK(nn::create_model("shufflenetv2", cfg)->parameter("conv1.weight").shape() == Shape{24, 1, 1, 1});
}

TEST_CASE("mobile: initialisation from the config seed") {
  nn::ModelConfig cfg;
  cfg.seed = 7;
  for (const char* n : kMobile) {
    INFO(n);
    auto a = nn::create_model(n, cfg);
    auto b = nn::create_model(n, cfg);
    cfg.seed = 8;
    auto c = nn::create_model(n, cfg);
    cfg.seed = 7;
    bool all_same = true, any_diff = false;
    for (auto& [pn, t] : a->named_parameters()) {
      all_same = all_same && kdtest::allclose(t, b->parameter(pn), 0, 0).ok;
      any_diff = any_diff || !kdtest::allclose(t, c->parameter(pn), 0, 0).ok;
    }
    CHECK(all_same);
    CHECK(any_diff);
  }
  SUBCASE("mobilenetv2: mdistiller's N(0, 2/(k*k*out)) convs, N(0, 0.01) classifier, BN 1/0") {
    auto m = nn::create_model("mobilenetv2", cfg);
    for (auto& [n, t] : m->named_parameters()) {
      INFO(n);
      if (t.dim() == 4) {
        const double want = std::sqrt(2.0 / (double)(t.size(0) * t.size(2) * t.size(3)));
        if (t.numel() >= 4000) CHECK(std::fabs(std::sqrt(var(t).item()) / want - 1.0) < 0.1);
      } else if (n == "classifier.0.weight") {
        CHECK(std::fabs(std::sqrt(var(t).item()) / 0.01 - 1.0) < 0.05);
      } else if (ends_with(n, "weight")) {
        CHECK(min(t).item() == 1.0);
        CHECK(max(t).item() == 1.0);
      } else {  // BN and classifier biases
        CHECK(max(abs(t)).item() == 0.0);
      }
    }
  }
  SUBCASE("shufflenets: PyTorch's default U(+-1/sqrt(fan_in)), BN 1/0") {
    for (const char* name : {"shufflenetv1", "shufflenetv2"}) {
      auto m = nn::create_model(name, cfg);
      for (auto& [n, t] : m->named_parameters()) {
        INFO(name << " " << n);
        if (t.dim() >= 2) {
          const double bound = 1.0 / std::sqrt((double)nn::init::fan_in(t));
          CHECK(max(abs(t)).item() <= bound + 1e-6);
          if (t.numel() >= 2000) CHECK(max(abs(t)).item() > 0.9 * bound);
        } else if (n == "linear.bias") {
          const double bound = 1.0 / std::sqrt((double)m->parameter("linear.weight").size(1));  // 1/sqrt(in)
          CHECK(max(abs(t)).item() <= bound + 1e-6);
          CHECK(max(abs(t)).item() > 0.0);
        } else if (ends_with(n, "weight")) {
          CHECK(min(t).item() == 1.0);
          CHECK(max(t).item() == 1.0);
        } else {
          CHECK(max(abs(t)).item() == 0.0);
        }
      }
    }
  }
}

TEST_CASE("mobile: errors name the problem") {
  Generator gen(6);
  for (const char* n : kMobile) {
    INFO(n);
    auto m = nn::create_model(n);
    CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 1, 32, 32}, gen)), "expected input (B, 3, H, W), got (2, 1, 32, 32)");
    CHECK_THROWS_WITH_SUBSTR(m->forward(randn({3, 32, 32}, gen)), "in_channels");
  }
  nn::ModelConfig cfg;
  CHECK_THROWS_WITH_SUBSTR(nn::MobileNetV2("bad", 0, 1.0, cfg), "expansion ratio must be >= 1");
  CHECK_THROWS_WITH_SUBSTR(nn::ShuffleNetV2("bad", {116, 232, 464}, {3, 7, 3}, cfg), "needs 4 widths");
}
