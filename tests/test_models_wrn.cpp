// CIFAR Wide ResNets (nn/models/wrn.cpp) against PyTorch (tests/reference/gen_models_wrn.py):
// state-dict layout, parameter counts, eval/train taps, gradients and BatchNorm statistics.
#include <cmath>

#include "model_golden.h"
#include "nn/models/wrn.h"

using namespace kd;
using kdtest::json;

static const char* kWrns[] = {"wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"};

TEST_CASE("wrn: every model is registered") {
  // (each one is built, and its type name checked, by the state-dict test below)
  std::vector<std::string> names = nn::model_names();
  for (const char* n : kWrns) {
    INFO(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  }
  for (const auto& e : nn::model_registry())
    if (std::find(std::begin(kWrns), std::end(kWrns), e.name) != std::end(kWrns)) CHECK(!e.description.empty());
}

TEST_CASE("wrn: state-dict names, shapes and parameter counts equal PyTorch's") {
  json fx = kdtest::load_model_fixture("golden_models_wrn.json");
  CHECK(fx.at("models").size() == 4);
  for (const auto& [key, info] : fx.at("models").items()) {
    std::string name;
    nn::ModelConfig cfg = kdtest::config_for_key(key, &name);
    auto m = nn::create_model(name, cfg);
    CHECK(m->type_name() == name);
    kdtest::check_state_layout(*m, info, key);
  }
  // mdistiller's names: the projection shortcut only where the width changes
  auto m = nn::create_model("wrn_40_2");
  CHECK(m->parameter("block1.layer.0.convShortcut.weight").shape() == Shape{32, 16, 1, 1});
  CHECK(m->parameter("block3.layer.0.convShortcut.weight").shape() == Shape{128, 64, 1, 1});
  CHECK_THROWS_WITH_SUBSTR(m->parameter("block1.layer.1.convShortcut.weight"), "block1.layer.1.convShortcut.weight");
  CHECK_THROWS(nn::create_model("wrn_16_1")->parameter("block1.layer.0.convShortcut.weight"));
}

TEST_CASE("wrn: outputs, taps, gradients and BN statistics match PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_wrn.json");
  for (const json& run : fx.at("runs")) {
    SUBCASE(run.at("name").get<std::string>().c_str()) { kdtest::check_model_run(run); }
  }
}

TEST_CASE("wrn: mdistiller's taps (wrn_16_2 on 32x32)") {
  auto m = nn::create_model("wrn_16_2");
  m->eval();
  NoGradGuard no_grad;
  Generator gen(3);
  nn::ModelOutput o = m->forward(randn({2, 3, 32, 32}, gen));
  auto& w = static_cast<nn::WideResNet&>(*m);
  REQUIRE(o.feats.size() == 4);
  CHECK(o.feats[0].shape() == Shape{2, 16, 32, 32});
  CHECK(o.feats[1].shape() == Shape{2, 32, 32, 32});
  CHECK(o.feats[2].shape() == Shape{2, 64, 16, 16});
  CHECK(o.feats[3].shape() == Shape{2, 128, 8, 8});
  CHECK(o.pooled.shape() == Shape{2, 128});
  CHECK(o.logits.shape() == Shape{2, 100});
  // feats are the raw residual sums (they go negative); preact_feats are the following BN's output
  CHECK(min(o.feats[3]).item() < 0.0);
  CHECK(o.preact_feats[0].is_same(o.feats[0]));
  CHECK(kdtest::allclose(o.preact_feats[1], w.block2->block(0).bn1->forward(o.feats[1])).ok);
  CHECK(kdtest::allclose(o.preact_feats[3], w.bn1->forward(o.feats[3])).ok);
  CHECK(kdtest::allclose(o.pooled, mean(relu(o.preact_feats[3]), {2, 3}), 1e-5, 1e-6).ok);
}

TEST_CASE("wrn: training mode runs the tapped BatchNorms twice, as mdistiller") {
  auto m = nn::create_model("wrn_16_1");
  m->train();
  Generator gen(4);
  m->forward(randn({2, 3, 32, 32}, gen));
  auto& w = static_cast<nn::WideResNet&>(*m);
  CHECK(w.block1->block(0).bn1->num_batches_tracked.item() == 1);
  CHECK(w.block2->block(0).bn1->num_batches_tracked.item() == 2);
  CHECK(w.block3->block(0).bn1->num_batches_tracked.item() == 2);
  CHECK(w.bn1->num_batches_tracked.item() == 2);
  CHECK(w.block2->block(1).bn1->num_batches_tracked.item() == 1);
}

TEST_CASE("wrn: one-channel 28x28 inputs with 10 classes") {
  nn::ModelConfig cfg;
  cfg.in_channels = 1;
  cfg.image_size = 28;
  cfg.num_classes = 10;
  auto m = nn::create_model("wrn_16_2", cfg);
  CHECK(m->parameter("conv1.weight").shape() == Shape{16, 1, 3, 3});
  Generator gen(5);
  nn::ModelOutput o = m->forward(randn({3, 1, 28, 28}, gen));
  CHECK(o.logits.shape() == Shape{3, 10});
  CHECK(o.feats[3].shape() == Shape{3, 128, 7, 7});
}

TEST_CASE("wrn: mdistiller's initialisation from the config seed") {
  nn::ModelConfig cfg;
  cfg.seed = 7;
  auto a = nn::create_model("wrn_16_2", cfg);
  auto b = nn::create_model("wrn_16_2", cfg);
  cfg.seed = 8;
  auto c = nn::create_model("wrn_16_2", cfg);
  for (auto& [n, t] : a->named_parameters()) CHECK_MESSAGE(kdtest::allclose(t, b->parameter(n), 0, 0).ok, n);
  const std::string probe = "block2.layer.1.conv1.weight";
  CHECK_FALSE(kdtest::allclose(a->parameter(probe), c->parameter(probe)).ok);
  for (auto& [n, t] : a->named_parameters()) {
    INFO(n);
    if (t.dim() == 4) {  // conv: N(0, 2 / (kh * kw * out))
      const double want = std::sqrt(2.0 / (double)(t.size(0) * t.size(2) * t.size(3)));
      if (t.numel() >= 2000) CHECK(std::fabs(std::sqrt(var(t).item()) / want - 1.0) < 0.1);
    } else if (n == "fc.weight") {  // PyTorch's default: U(-1/sqrt(128), 1/sqrt(128))
      CHECK(max(abs(t)).item() <= 1.0 / std::sqrt(128.0) + 1e-6);
      CHECK(max(abs(t)).item() > 0.0);
    } else if (n == "fc.bias") {  // zeroed by mdistiller
      CHECK(max(abs(t)).item() == 0.0);
    } else if (n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0) {  // BN weight 1
      CHECK(min(t).item() == 1.0);
      CHECK(max(t).item() == 1.0);
    } else {  // BN bias 0
      CHECK(max(abs(t)).item() == 0.0);
    }
  }
}

TEST_CASE("wrn: errors name the problem") {
  auto m = nn::create_model("wrn_16_1");
  Generator gen(6);
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 1, 32, 32}, gen)), "expected input (B, 3, H, W), got (2, 1, 32, 32)");
  nn::ModelConfig cfg;
  CHECK_THROWS_WITH_SUBSTR(nn::WideResNet("wrn_15_1", 15, 1, cfg), "depth 6n+4");
  CHECK_THROWS_WITH_SUBSTR(nn::WideResNet("wrn_16_0", 16, 0, cfg), "widen factor");
}
