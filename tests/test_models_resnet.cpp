// CIFAR ResNets (nn/models/resnet.cpp) against PyTorch (tests/reference/gen_models_resnet.py):
// state-dict layout, parameter counts, eval/train taps, gradients and BatchNorm statistics.
#include <cmath>

#include "model_golden.h"
#include "nn/models/resnet.h"

using namespace kd;
using kdtest::json;

static const char* kResNets[] = {"resnet8",  "resnet14",  "resnet20",  "resnet32",  "resnet44",
                                 "resnet56", "resnet110", "resnet8x4", "resnet32x4"};

TEST_CASE("resnet: every model is registered") {
  // (each one is built, and its type name checked, by the state-dict test below)
  std::vector<std::string> names = nn::model_names();
  for (const char* n : kResNets) {
    INFO(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  }
  for (const auto& e : nn::model_registry())
    if (std::find(std::begin(kResNets), std::end(kResNets), e.name) != std::end(kResNets))
      CHECK(!e.description.empty());
}

TEST_CASE("resnet: state-dict names, shapes and parameter counts equal PyTorch's") {
  json fx = kdtest::load_model_fixture("golden_models_resnet.json");
  CHECK(fx.at("models").size() == 10);
  for (const auto& [key, info] : fx.at("models").items()) {
    std::string name;
    nn::ModelConfig cfg = kdtest::config_for_key(key, &name);
    auto m = nn::create_model(name, cfg);
    CHECK(m->type_name() == name);
    kdtest::check_state_layout(*m, info, key);
  }
}

TEST_CASE("resnet: resnet56 with 10 classes has the keys of the shared CIFAR-10 teacher") {
  // gen_models_resnet.py asserts that "resnet56_c10" equals the safetensors header of
  // ../shared/teachers/cifar10_resnet56.safetensors (344 tensors); here the C++ model matches it.
  json fx = kdtest::load_model_fixture("golden_models_resnet.json");
  const json& info = fx.at("models").at("resnet56_c10");
  CHECK(info.at("state").size() == 344);
  nn::ModelConfig cfg;
  cfg.num_classes = 10;
  auto m = nn::create_model("resnet56", cfg);
  kdtest::check_state_layout(*m, info, "resnet56_c10");
  CHECK(m->parameter("layer2.0.downsample.0.weight").shape() == Shape{32, 16, 1, 1});
  CHECK(m->parameter("fc.weight").shape() == Shape{10, 64});
}

TEST_CASE("resnet: outputs, taps, gradients and BN statistics match PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_resnet.json");
  for (const json& run : fx.at("runs")) {
    SUBCASE(run.at("name").get<std::string>().c_str()) { kdtest::check_model_run(run); }
  }
}

TEST_CASE("resnet: feature taps follow the contract (resnet8x4 on 32x32)") {
  auto m = nn::create_model("resnet8x4");
  m->eval();
  NoGradGuard no_grad;
  Generator gen(3);
  nn::ModelOutput o = m->forward(randn({2, 3, 32, 32}, gen));
  REQUIRE(o.feats.size() == 4);
  REQUIRE(o.preact_feats.size() == 4);
  CHECK(o.feats[0].shape() == Shape{2, 32, 32, 32});
  CHECK(o.feats[1].shape() == Shape{2, 64, 32, 32});
  CHECK(o.feats[2].shape() == Shape{2, 128, 16, 16});
  CHECK(o.feats[3].shape() == Shape{2, 256, 8, 8});
  CHECK(o.pooled.shape() == Shape{2, 256});
  CHECK(o.logits.shape() == Shape{2, 100});
  for (int i = 0; i < 4; ++i) {
    CHECK(o.preact_feats[i].shape() == o.feats[i].shape());
    CHECK(min(o.feats[i]).item() >= 0.0);  // after the ReLU
  }
  CHECK(o.preact_feats[0].is_same(o.feats[0]));  // the stem has no pre-activation tap
  CHECK(min(o.preact_feats[3]).item() < 0.0);    // before the ReLU
  // feats = relu(preact_feats); pooled = spatial mean of f3
  CHECK(kdtest::allclose(o.feats[3], relu(o.preact_feats[3])).ok);
  CHECK(kdtest::allclose(o.pooled, mean(o.feats[3], {2, 3}), 1e-5, 1e-6).ok);
}

TEST_CASE("resnet: one-channel 28x28 inputs with 10 classes") {
  nn::ModelConfig cfg;
  cfg.in_channels = 1;
  cfg.image_size = 28;
  cfg.num_classes = 10;
  auto m = nn::create_model("resnet20", cfg);
  CHECK(m->parameter("conv1.weight").shape() == Shape{16, 1, 3, 3});
  Generator gen(4);
  nn::ModelOutput o = m->forward(randn({3, 1, 28, 28}, gen));
  CHECK(o.logits.shape() == Shape{3, 10});
  CHECK(o.feats[3].shape() == Shape{3, 64, 7, 7});
}

TEST_CASE("resnet: mdistiller's initialisation from the config seed") {
  nn::ModelConfig cfg;
  cfg.seed = 7;
  auto a = nn::create_model("resnet20", cfg);
  auto b = nn::create_model("resnet20", cfg);
  cfg.seed = 8;
  auto c = nn::create_model("resnet20", cfg);
  // same seed, same weights; another seed, other weights
  for (auto& [n, t] : a->named_parameters()) CHECK_MESSAGE(kdtest::allclose(t, b->parameter(n), 0, 0).ok, n);
  CHECK_FALSE(kdtest::allclose(a->parameter("layer2.1.conv1.weight"), c->parameter("layer2.1.conv1.weight")).ok);
  for (auto& [n, t] : a->named_parameters()) {
    INFO(n);
    if (t.dim() == 4) {  // conv: kaiming_normal(fan_out): mean 0, std sqrt(2 / (out * kh * kw))
      const double want = std::sqrt(2.0 / (double)(t.size(0) * t.size(2) * t.size(3)));
      const double std = std::sqrt(var(t).item());
      if (t.numel() >= 2000) CHECK(std::fabs(std / want - 1.0) < 0.1);
      CHECK(std::fabs(mean(t).item()) < 4.0 * want / std::sqrt((double)t.numel()) + 1e-6);
    } else if (n.rfind("fc.", 0) == 0) {  // PyTorch's default Linear init: U(-1/sqrt(64), 1/sqrt(64))
      CHECK(max(abs(t)).item() <= 1.0 / 8.0 + 1e-6);
      CHECK(max(abs(t)).item() > 0.0);
    } else if (n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0) {  // BN weight 1
      CHECK(min(t).item() == 1.0);
      CHECK(max(t).item() == 1.0);
    } else {  // BN bias 0
      CHECK(max(abs(t)).item() == 0.0);
    }
  }
}

TEST_CASE("resnet: errors name the problem") {
  auto m = nn::create_model("resnet8");
  Generator gen(5);
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 1, 32, 32}, gen)), "expected input (B, 3, H, W), got (2, 1, 32, 32)");
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({3, 32, 32}, gen)), "in_channels");
  nn::ModelConfig cfg;
  CHECK_THROWS_WITH_SUBSTR(nn::CifarResNet("resnet9", 9, {16, 16, 32, 64}, cfg), "depth 6n+2");
}
