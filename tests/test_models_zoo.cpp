// Every model of the zoo declares its classifier (nn::Classifier::classifier_name()): the
// declared layer's weight is (K, C) and the logits are pooled @ W^T + b for a random input.
#include "nn/models/model.h"
#include "test_util.h"

using namespace kd;

TEST_CASE("zoo: every model's declared classifier maps pooled to the logits") {
  const int64_t K = 7;
  Generator gen(5);
  Tensor x = randn({2, 3, 32, 32}, gen);  // (B, C, H, W)
  REQUIRE(!nn::model_registry().empty());
  for (const auto& entry : nn::model_registry()) {
    CAPTURE(entry.name);
    auto model = entry.create({K, 3, 32, 1});
    model->eval();
    NoGradGuard ng;
    const nn::ModelOutput o = model->forward(x);
    const nn::ClassifierHead head = model->classifier_head();
    CHECK(head.name == model->classifier_name());
    REQUIRE(o.pooled.dim() == 2);
    CHECK(head.weight.shape() == Shape{K, o.pooled.size(1)});  // (K, C)
    REQUIRE(head.bias.defined());
    CHECK(head.bias.shape() == Shape{K});
    const Tensor logits = linear(o.pooled, head.weight, head.bias);  // (B, K)
    CHECK(max(abs(sub(logits, o.logits))).item() < 1e-4);
  }
}
