// CIFAR VGGs with BatchNorm (nn/models/vgg.cpp) against PyTorch (tests/reference/gen_models_vgg.py):
// state-dict layout, parameter counts, eval/train taps, gradients and BatchNorm statistics.
#include <cmath>

#include "model_golden.h"
#include "nn/models/vgg.h"

using namespace kd;
using kdtest::json;

static const char* kVggs[] = {"vgg8", "vgg11", "vgg13"};

TEST_CASE("vgg: every model is registered") {
  // (each one is built, and its type name checked, by the state-dict test below)
  std::vector<std::string> names = nn::model_names();
  for (const char* n : kVggs) {
    INFO(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  }
  for (const auto& e : nn::model_registry())
    if (std::find(std::begin(kVggs), std::end(kVggs), e.name) != std::end(kVggs)) CHECK(!e.description.empty());
}

TEST_CASE("vgg: state-dict names, shapes and parameter counts equal PyTorch's") {
  json fx = kdtest::load_model_fixture("golden_models_vgg.json");
  CHECK(fx.at("models").size() == 3);
  for (const auto& [key, info] : fx.at("models").items()) {
    std::string name;
    nn::ModelConfig cfg = kdtest::config_for_key(key, &name);
    auto m = nn::create_model(name, cfg);
    CHECK(m->type_name() == name);
    kdtest::check_state_layout(*m, info, key);
  }
  auto m = nn::create_model("vgg13");
  CHECK(m->parameter("block0.3.weight").shape() == Shape{64, 64, 3, 3});  // second conv after conv-BN-ReLU
  CHECK(m->parameter("block0.4.weight").shape() == Shape{64});           // its BN
  CHECK(m->parameter("classifier.weight").shape() == Shape{100, 512});
}

TEST_CASE("vgg: outputs, taps, gradients and BN statistics match PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_vgg.json");
  for (const json& run : fx.at("runs")) {
    SUBCASE(run.at("name").get<std::string>().c_str()) { kdtest::check_model_run(run); }
  }
}

TEST_CASE("vgg: five feature taps (vgg8 on 32x32 and 64x64)") {
  auto m = nn::create_model("vgg8");
  m->eval();
  NoGradGuard no_grad;
  Generator gen(3);
  nn::ModelOutput o = m->forward(randn({2, 3, 32, 32}, gen));
  REQUIRE(o.feats.size() == 5);
  REQUIRE(o.preact_feats.size() == 5);
  CHECK(o.feats[0].shape() == Shape{2, 64, 32, 32});
  CHECK(o.feats[1].shape() == Shape{2, 128, 16, 16});
  CHECK(o.feats[2].shape() == Shape{2, 256, 8, 8});
  CHECK(o.feats[3].shape() == Shape{2, 512, 4, 4});
  CHECK(o.feats[4].shape() == Shape{2, 512, 4, 4});
  CHECK(o.pooled.shape() == Shape{2, 512});
  CHECK(o.logits.shape() == Shape{2, 100});
  CHECK(o.preact_feats[0].is_same(o.feats[0]));
  for (int i = 1; i < 5; ++i) {
    CHECK(min(o.preact_feats[i]).item() < 0.0);
    CHECK(kdtest::allclose(o.feats[i], relu(o.preact_feats[i])).ok);
  }
  CHECK(kdtest::allclose(o.pooled, mean(o.feats[4], {2, 3}), 1e-5, 1e-6).ok);
  // mdistiller applies pool3 only to 64x64 inputs (Tiny-ImageNet)
  nn::ModelOutput big = m->forward(randn({1, 3, 64, 64}, gen));
  CHECK(big.feats[3].shape() == Shape{1, 512, 8, 8});
  CHECK(big.feats[4].shape() == Shape{1, 512, 4, 4});
}

TEST_CASE("vgg: one-channel 28x28 inputs with 10 classes") {
  nn::ModelConfig cfg;
  cfg.in_channels = 1;
  cfg.image_size = 28;
  cfg.num_classes = 10;
  auto m = nn::create_model("vgg8", cfg);
  CHECK(m->parameter("block0.0.weight").shape() == Shape{64, 1, 3, 3});
  Generator gen(5);
  nn::ModelOutput o = m->forward(randn({3, 1, 28, 28}, gen));
  CHECK(o.logits.shape() == Shape{3, 10});
  CHECK(o.feats[4].shape() == Shape{3, 512, 3, 3});
}

TEST_CASE("vgg: mdistiller's initialisation from the config seed") {
  nn::ModelConfig cfg;
  cfg.seed = 7;
  {  // same seed, same weights; another seed, other weights (on a narrow VGG: cheaper to build)
    const std::vector<std::vector<int64_t>> narrow = {{8}, {16}, {16, 16}, {32}, {32}};
    nn::CifarVGG a("vgg_narrow", narrow, cfg), b("vgg_narrow", narrow, cfg);
    nn::ModelConfig other = cfg;
    other.seed = 8;
    nn::CifarVGG c("vgg_narrow", narrow, other);
    for (auto& [n, t] : a.named_parameters()) CHECK_MESSAGE(kdtest::allclose(t, b.parameter(n), 0, 0).ok, n);
    CHECK_FALSE(kdtest::allclose(a.parameter("block2.3.weight"), c.parameter("block2.3.weight")).ok);
  }
  auto a = nn::create_model("vgg8", cfg);
  nn::NamedTensors params = a->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& n = params[i].first;
    const Tensor& t = params[i].second;
    INFO(n);
    if (t.dim() == 4) {  // conv: N(0, 2 / (kh * kw * out)), bias 0 (the next entry)
      const double want = std::sqrt(2.0 / (double)(t.size(0) * t.size(2) * t.size(3)));
      CHECK(std::fabs(std::sqrt(var(t).item()) / want - 1.0) < 0.1);
      REQUIRE(i + 1 < params.size());
      CHECK(max(abs(params[i + 1].second)).item() == 0.0);
      ++i;
    } else if (n == "classifier.weight") {  // N(0, 0.01^2)
      CHECK(std::fabs(std::sqrt(var(t).item()) / 0.01 - 1.0) < 0.05);
    } else if (n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0) {  // BN weight 1
      CHECK(min(t).item() == 1.0);
      CHECK(max(t).item() == 1.0);
    } else {  // BN bias and classifier bias 0
      CHECK(max(abs(t)).item() == 0.0);
    }
  }
}

TEST_CASE("vgg: errors name the problem") {
  auto m = nn::create_model("vgg8");
  Generator gen(6);
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 1, 32, 32}, gen)), "expected input (B, 3, H, W), got (2, 1, 32, 32)");
  nn::ModelConfig cfg;
  CHECK_THROWS_WITH_SUBSTR(nn::CifarVGG("vgg_bad", {{64}, {128}}, cfg), "5 blocks");
  CHECK_THROWS_WITH_SUBSTR(nn::CifarVGG("vgg_bad", {{64}, {}, {256}, {512}, {512}}, cfg), "at least one conv");
}
