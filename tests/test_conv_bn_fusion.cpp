// conv -> batch norm (-> ReLU) folded into one convolution for inference (nn::conv_bn,
// kd::conv2d_inference): the folded form must give the unfused chain's values, on both backends,
// on awkward shapes (channels not a multiple of 8 or 16, batch 1, stride 2, groups and depthwise,
// 1x1 kernels, non-square maps, a convolution with its own bias, a batch norm without affine
// parameters), and whole zoo models in eval mode must give the same logits and features with the
// folding on and off. Where a gradient is needed, or the batch norm trains, conv_bn must be
// exactly the unfused chain (same values, same gradients, running statistics updated).
//
// Tolerance: folding changes the rounding (W * s is rounded once, then summed; the chain sums,
// then scales), so single layers agree to rtol 1e-5 + 1e-5 * max|y|, whole models (up to 56
// layers) to rtol 1e-4 + 1e-4 * max|y|.
#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "nn/layers.h"
#include "nn/models/model.h"
#include "test_util.h"

using namespace kd;
using backend::Backend;
using kdtest::BackendScope;

namespace {

class FusionScope {
 public:
  explicit FusionScope(bool on) : prev_(nn::conv_bn_fusion()) { nn::set_conv_bn_fusion(on); }
  ~FusionScope() { nn::set_conv_bn_fusion(prev_); }
  FusionScope(const FusionScope&) = delete;
  FusionScope& operator=(const FusionScope&) = delete;

 private:
  bool prev_;
};

std::vector<Backend> backends() {
  std::vector<Backend> b{Backend::cpu};
  if (backend::onednn_available()) b.push_back(Backend::onednn);
  return b;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : to_float_vector(t)) m = std::max(m, (double)std::fabs(v));
  return m;
}

void check_close(const Tensor& got, const Tensor& want, const std::string& what, double rtol) {
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  const kdtest::Closeness c = kdtest::allclose(got, want, rtol, rtol * std::max(1.0, max_abs(want)));
  INFO(what << ": " << c.msg);
  CHECK(c.ok);
}

// A batch norm with running statistics and affine parameters far from their initial values, so
// that folding them has something to do.
void randomise(nn::BatchNorm& bn, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t C = bn.running_mean.numel();
  bn.running_mean.copy_(randn({C}, gen));
  bn.running_var.copy_(rand({C}, gen) * 2.0 + 0.1);
  if (bn.weight.defined()) bn.weight.copy_(randn({C}, gen));
  if (bn.bias.defined()) bn.bias.copy_(randn({C}, gen));
}

struct Case {
  const char* name;
  Shape x;  // (B, Cin, H, W)
  int64_t cout, k, stride, groups;
  bool conv_bias, affine;
};

const Case kCases[] = {
    {"3x3 same, channels 5 -> 7", {2, 5, 9, 7}, 7, 3, 1, 1, false, true},
    {"batch 1, stride 2, 17 -> 19", {1, 17, 8, 11}, 19, 3, 2, 1, false, true},
    {"1x1, with conv bias", {3, 6, 5, 5}, 10, 1, 1, 1, true, true},
    {"groups 2", {2, 6, 6, 6}, 4, 3, 1, 2, false, true},
    {"depthwise stride 2", {2, 12, 9, 9}, 12, 3, 2, 12, false, true},
    {"batch norm without affine", {2, 4, 6, 5}, 9, 3, 1, 1, true, false},
};

}  // namespace

TEST_CASE("conv_bn folded in eval mode equals the unfused conv -> batch norm -> relu") {
  for (const Case& c : kCases) {
    for (Backend b : backends()) {
      for (bool relu : {false, true}) {
        INFO(c.name << ", backend " << backend::backend_name(b) << ", relu " << relu);
        BackendScope scope(b);
        Generator gen(11);
        nn::Conv2d conv(c.x[1], c.cout, c.k, gen, c.stride, c.k / 2, 1, c.groups, c.conv_bias);
        nn::BatchNorm bn(c.cout, 1e-5, 0.1, c.affine);
        randomise(bn, gen);
        conv.eval();
        bn.eval();
        Tensor x = randn(c.x, gen);
        NoGradGuard no_grad;
        Tensor want = bn.forward(conv.forward(x));
        if (relu) want = kd::relu(want);
        Tensor got;
        {
          FusionScope on(true);
          got = nn::conv_bn(conv, bn, x, relu);
        }
        check_close(got, want, "folded vs chain", 1e-5);
        if (relu) {
          const std::vector<float> v = to_float_vector(got);
          CHECK(*std::min_element(v.begin(), v.end()) >= 0.f);
        }
        // the switch: folding off gives the chain bit for bit
        FusionScope off(false);
        check_close(nn::conv_bn(conv, bn, x, relu), want, "fusion off", 0.0);
      }
    }
  }
}

TEST_CASE("conv2d_inference with relu equals relu(conv2d) on every backend; refuses inputs that need a gradient") {
  for (Backend b : backends()) {
    INFO("backend " << backend::backend_name(b));
    BackendScope scope(b);
    Generator gen(5);
    Tensor x = randn({2, 7, 10, 6}, gen), w = randn({9, 7, 3, 3}, gen), bias = randn({9}, gen);
    {
      NoGradGuard no_grad;
      Tensor want = kd::relu(conv2d(x, w, bias, 2, 1));
      check_close(conv2d_inference(x, w, bias, 2, 1, 1, 1, true), want, "relu fused", 1e-5);
      check_close(conv2d_inference(x, w, bias, 2, 1, 1, 1, false), conv2d(x, w, bias, 2, 1), "no relu", 1e-6);
    }
    Tensor wg = w.detach().clone().requires_grad_();
    CHECK_THROWS_WITH_AS(conv2d_inference(x, wg, bias, 1, 1, 1, 1, true),
                         doctest::Contains("call it under NoGradGuard"), Error);
    // shape errors are conv2d's
    NoGradGuard no_grad;
    CHECK_THROWS_WITH_AS(conv2d_inference(randn({2, 5, 8, 8}, gen), w, bias, 1, 1, 1, 1, true),
                         doctest::Contains("expects 7 input channels"), Error);
  }
}

TEST_CASE("conv_bn while training (or when a gradient is needed) is exactly the unfused chain") {
  for (Backend b : backends()) {
    INFO("backend " << backend::backend_name(b));
    BackendScope scope(b);
    for (bool train_mode : {true, false}) {
      INFO("batch norm in " << (train_mode ? "training" : "eval") << " mode, gradients on");
      Generator gen(3);
      nn::Conv2d conv_a(6, 8, 3, gen, 1, 1, 1, 1, false);
      nn::BatchNorm bn_a(8);
      Generator gen2(3);
      nn::Conv2d conv_b(6, 8, 3, gen2, 1, 1, 1, 1, false);
      nn::BatchNorm bn_b(8);
      if (!train_mode) bn_a.eval(), bn_b.eval(), conv_a.eval(), conv_b.eval();
      Tensor x = randn({3, 6, 5, 7}, gen);
      Tensor got = nn::conv_bn(conv_a, bn_a, x, true);
      Tensor want = kd::relu(bn_b.forward(conv_b.forward(x)));
      check_close(got, want, "forward", 0.0);
      REQUIRE(got.requires_grad());
      Tensor gy = randn(got.shape(), gen);
      got.backward(gy);
      want.backward(gy);
      check_close(conv_a.weight.grad(), conv_b.weight.grad(), "conv weight gradient", 0.0);
      check_close(bn_a.weight.grad(), bn_b.weight.grad(), "bn weight gradient", 0.0);
      if (train_mode) {
        check_close(bn_a.running_mean, bn_b.running_mean, "running mean updated", 0.0);
        CHECK(max_abs(bn_a.running_mean) > 0);
      }
    }
  }
}

TEST_CASE("zoo models in eval mode: the same logits and features with the folding on and off") {
  for (const char* name : {"resnet20", "resnet8x4", "wrn_16_2", "mobilenetv2", "vgg8", "shufflenetv1", "shufflenetv2"}) {
    for (Backend b : backends()) {
      INFO(name << ", backend " << backend::backend_name(b));
      BackendScope scope(b);
      nn::ModelConfig cfg;
      cfg.num_classes = 10;
      auto model = nn::create_model(name, cfg);
      Generator gen(9);
      // non-trivial running statistics everywhere (a fresh model's are 0 and 1)
      for (auto& [mname, m] : model->named_modules())
        if (auto* bn = dynamic_cast<const nn::BatchNorm*>(m)) randomise(const_cast<nn::BatchNorm&>(*bn), gen);
      model->eval();
      Tensor x = randn({2, 3, 32, 32}, gen);
      NoGradGuard no_grad;
      nn::ModelOutput fused, plain;
      {
        FusionScope on(true);
        fused = model->forward(x);
      }
      {
        FusionScope off(false);
        plain = model->forward(x);
      }
      check_close(fused.logits, plain.logits, "logits", 1e-4);
      REQUIRE(fused.feats.size() == plain.feats.size());
      for (size_t i = 0; i < fused.feats.size(); ++i)
        check_close(fused.feats[i], plain.feats[i], fmt::format("feature {}", i), 1e-4);
      for (size_t i = 0; i < fused.preact_feats.size(); ++i)
        check_close(fused.preact_feats[i], plain.preact_feats[i], fmt::format("pre-activation feature {}", i), 1e-4);
    }
  }
}

TEST_CASE("channels-last inference: oneDNN convolutions return channels-last; add and relu keep it; values and gradients as contiguous") {
  auto channels_last = [](const Tensor& t) {
    return t.dim() == 4 && t.strides()[1] == 1 && t.strides()[3] == t.size(1) && !t.is_contiguous();
  };
  Generator gen(21);
  // a (2, 6, 5, 7) tensor stored as (2, 5, 7, 6)
  Tensor a = randn({2, 5, 7, 6}, gen).permute({0, 3, 1, 2}), b = randn({2, 5, 7, 6}, gen).permute({0, 3, 1, 2});
  REQUIRE(channels_last(a));
  Tensor ac = a.contiguous(), bc = b.contiguous();
  {
    NoGradGuard no_grad;
    Tensor s = a + b, r = kd::relu(a), m = a * b;
    CHECK(channels_last(s));
    CHECK(channels_last(r));
    check_close(s, ac + bc, "add", 0.0);
    check_close(r, kd::relu(ac), "relu", 0.0);
    check_close(m, ac * bc, "mul", 0.0);
    // mixed layouts: a contiguous result, the same values
    Tensor mixed = a + bc;
    CHECK(mixed.is_contiguous());
    check_close(mixed, ac + bc, "channels-last + contiguous", 0.0);
  }
  // gradients through channels-last leaves
  Tensor x = a.detach().requires_grad_(), xc = ac.detach().requires_grad_();
  Tensor y = kd::relu(x * x + x), yc = kd::relu(xc * xc + xc);
  Tensor gy = randn(y.shape(), gen);
  y.backward(gy);
  yc.backward(gy);
  check_close(y, yc, "forward with gradients on", 0.0);
  check_close(x.grad(), xc.grad(), "gradient", 0.0);

  if (!backend::onednn_available()) return;
  BackendScope scope(Backend::onednn);
  NoGradGuard no_grad;
  Tensor img = randn({4, 16, 8, 8}, gen), w1 = randn({16, 16, 3, 3}, gen), w2 = randn({32, 16, 3, 3}, gen);
  Tensor h = conv2d_inference(img, w1, Tensor(), 1, 1, 1, 1, true);
  CHECK(channels_last(h));  // what oneDNN picks for these shapes on this CPU (acdb)
  Tensor h2 = conv2d_inference(h, w2, Tensor(), 2, 1, 1, 1, false);  // a channels-last input read in place
  Tensor want;
  {
    BackendScope cpu(Backend::cpu);
    want = conv2d(kd::relu(conv2d(img, w1, Tensor(), 1, 1)), w2, Tensor(), 2, 1);
  }
  check_close(h2, want, "two channels-last convolutions vs the reference", 1e-5);
}
