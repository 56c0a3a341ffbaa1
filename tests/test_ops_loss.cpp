// Losses: golden values from PyTorch (tests/reference/gen_loss.py) for every reduction, label
// smoothing, class weights, ignore_index, log_target and pos_weight; gradcheck; error messages.
#include <cmath>

#include "test_util.h"

using namespace kd;
using kdtest::json;
using V = std::vector<Tensor>;

static Reduction reduction_of(const json& p) {
  const std::string r = p.at("reduction");
  if (r == "none") return Reduction::None;
  if (r == "sum") return Reduction::Sum;
  if (r == "batchmean") return Reduction::BatchMean;
  return Reduction::Mean;
}

static CrossEntropyOptions ce_options(Reduction r, double label_smoothing = 0.0) {
  CrossEntropyOptions opt;
  opt.reduction = r;
  opt.label_smoothing = label_smoothing;
  return opt;
}

TEST_CASE("loss: golden values and gradients from PyTorch") {
  kdtest::GoldenTable table = {
      {"cross_entropy",
       [](const V& x, const json& p) {
         CrossEntropyOptions opt;
         opt.reduction = reduction_of(p);
         opt.label_smoothing = p["label_smoothing"].get<double>();
         opt.weight = x[2];
         opt.ignore_index = p["ignore_index"].get<int64_t>();
         return V{cross_entropy(x[0], x[1], opt)};
       }},
      {"nll_loss",
       [](const V& x, const json& p) {
         return V{nll_loss(x[0], x[1], reduction_of(p), x[2], p["ignore_index"].get<int64_t>())};
       }},
      {"mse_loss", [](const V& x, const json& p) { return V{mse_loss(x[0], x[1], reduction_of(p))}; }},
      {"smooth_l1_loss",
       [](const V& x, const json& p) { return V{smooth_l1_loss(x[0], x[1], reduction_of(p), p["beta"].get<double>())}; }},
      {"huber_loss",
       [](const V& x, const json& p) { return V{huber_loss(x[0], x[1], reduction_of(p), p["delta"].get<double>())}; }},
      {"kl_div",
       [](const V& x, const json& p) { return V{kl_div(x[0], x[1], reduction_of(p), p["log_target"].get<bool>())}; }},
      {"bce_with_logits",
       [](const V& x, const json& p) { return V{binary_cross_entropy_with_logits(x[0], x[1], reduction_of(p), x[2])}; }},
  };
  CHECK(kdtest::run_golden_file("golden_loss.json", table) == 60);
}

TEST_CASE("loss: gradcheck") {
  Generator gen(5);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  Tensor target = from_vector(std::vector<int64_t>{0, 2, 1, 2}, {4});
  Tensor w = from_vector(std::vector<float>{0.5f, 2.0f, 1.5f}, {3});
  SUBCASE("cross_entropy and nll_loss") {
    V in{leaf(randn({4, 3}, gen))};
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      CrossEntropyOptions opt;
      opt.reduction = r;
      CHECK_GRADCHECK([&](const V& x) { return cross_entropy(x[0], target, opt); }, in);
      opt.label_smoothing = 0.2;
      opt.weight = w;
      CHECK_GRADCHECK([&](const V& x) { return cross_entropy(x[0], target, opt); }, in);
      opt.ignore_index = 2;
      CHECK_GRADCHECK([&](const V& x) { return cross_entropy(x[0], target, opt); }, in);
      CHECK_GRADCHECK([&](const V& x) { return nll_loss(log_softmax(x[0], 1), target, r, w, 1); }, in);
    }
    // non-contiguous logits
    V t{leaf(randn({3, 4}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return cross_entropy(x[0].t(), target, ce_options(Reduction::Mean, 0.1)); }, t);
  }
  SUBCASE("regression losses, both inputs") {
    V in{leaf(mul(randn({3, 4}, gen), 2.0).detach()), leaf(mul(randn({3, 4}, gen), 2.0).detach())};
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      CHECK_GRADCHECK([&](const V& x) { return mse_loss(x[0], x[1], r); }, in);
      CHECK_GRADCHECK([&](const V& x) { return smooth_l1_loss(x[0], x[1], r, 0.7); }, in);
      CHECK_GRADCHECK([&](const V& x) { return smooth_l1_loss(x[0], x[1], r, 0.0); }, in);
      CHECK_GRADCHECK([&](const V& x) { return huber_loss(x[0], x[1], r, 1.3); }, in);
    }
    V t{leaf(randn({4, 3}, gen)), leaf(randn({3, 4}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return mse_loss(x[0].t(), x[1]); }, t);
  }
  SUBCASE("kl_div, both inputs") {
    V in{leaf(log_softmax(randn({3, 5}, gen), 1).detach()), leaf(softmax(randn({3, 5}, gen), 1).detach())};
    V lt{leaf(log_softmax(randn({3, 5}, gen), 1).detach()), leaf(log_softmax(randn({3, 5}, gen), 1).detach())};
    for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::BatchMean}) {
      CHECK_GRADCHECK([&](const V& x) { return kl_div(x[0], x[1], r); }, in);
      CHECK_GRADCHECK([&](const V& x) { return kl_div(x[0], x[1], r, true); }, lt);
    }
    // the usual distillation form, through log_softmax / softmax of non-contiguous logits
    V logits{leaf(randn({5, 3}, gen)), leaf(randn({5, 3}, gen))};
    CHECK_GRADCHECK([&](const V& x) {
      return kl_div(log_softmax(x[0].t(), 1), softmax(x[1].t(), 1), Reduction::BatchMean);
    }, logits);
  }
  SUBCASE("binary_cross_entropy_with_logits, logits, target and pos_weight") {
    V in{leaf(mul(randn({3, 4}, gen), 2.0).detach()), leaf(rand({3, 4}, gen)),
         leaf(add(rand({4}, gen), 0.5).detach())};
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      CHECK_GRADCHECK([&](const V& x) { return binary_cross_entropy_with_logits(x[0], x[1], r, x[2]); }, in);
      CHECK_GRADCHECK([&](const V& x) { return binary_cross_entropy_with_logits(x[0], x[1], r); }, in);
    }
    V t{leaf(randn({4, 3}, gen)), leaf(rand({3, 4}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return binary_cross_entropy_with_logits(x[0].t(), x[1]); }, t);
  }
}

TEST_CASE("loss: edge cases") {
  // every label ignored: the mean is 0/0 = NaN, as PyTorch
  Tensor logits = zeros({2, 3});
  Tensor ign = from_vector(std::vector<int64_t>{-100, -100}, {2});
  CHECK(std::isnan(cross_entropy(logits, ign).item()));
  CHECK(cross_entropy(logits, ign, ce_options(Reduction::Sum)).item() == 0.0);
  // uniform logits: the loss is log K whatever the label
  Tensor t = from_vector(std::vector<int64_t>{0, 2}, {2});
  CHECK(cross_entropy(logits, t).item() == doctest::Approx(std::log(3.0)));
  // kl_div of a distribution with itself is 0, zeros in the target included
  Tensor p = from_vector(std::vector<float>{0.5f, 0.5f, 0.f}, {1, 3});
  Tensor lp = from_vector(std::vector<float>{std::log(0.5f), std::log(0.5f), -1e9f}, {1, 3});
  CHECK(kl_div(lp, p, Reduction::Sum).item() == doctest::Approx(0.0));
  // extreme logits stay finite
  Tensor x = from_vector(std::vector<float>{-200, 200}, {2});
  Tensor y = from_vector(std::vector<float>{1, 0}, {2});
  CHECK(binary_cross_entropy_with_logits(x, y, Reduction::None).at({0}) == doctest::Approx(200.0));
}

TEST_CASE("loss: errors name the problem") {
  Tensor logits = zeros({4, 3});
  Tensor t = from_vector(std::vector<int64_t>{0, 1, 2, 1}, {4});
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, zeros({4})), "int64 class labels");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, zeros({3}, DType::i64)), "target of shape (3,) does not match logits of shape (4, 3)");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 3, 1, 1}, {4})),
                           "target label 3 is out of range for K = 3");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, from_vector(std::vector<int64_t>{0, -1, 1, 1}, {4})),
                           "target label -1 is out of range");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, t, ce_options(Reduction::BatchMean)), "only valid for kl_div");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, t, ce_options(Reduction::Mean, 1.5)), "label_smoothing must be in [0, 1]");
  CrossEntropyOptions bad_w;
  bad_w.weight = ones({4});
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(logits, t, bad_w), "class weight has shape (4,)");
  CHECK_THROWS_WITH_SUBSTR(cross_entropy(zeros({4}), t), "must be (B, K)");
  CHECK_THROWS_WITH_SUBSTR(nll_loss(logits, t, Reduction::BatchMean), "only valid for kl_div");
  CHECK_THROWS_WITH_SUBSTR(mse_loss(zeros({2, 3}), zeros({3, 2})), "input shape (2, 3) and target shape (3, 2)");
  CHECK_THROWS_WITH_SUBSTR(mse_loss(zeros({2}), zeros({2}), Reduction::BatchMean), "only valid for kl_div");
  CHECK_THROWS_WITH_SUBSTR(smooth_l1_loss(zeros({2}), zeros({2}), Reduction::Mean, -1.0), "beta must be >= 0");
  CHECK_THROWS_WITH_SUBSTR(huber_loss(zeros({2}), zeros({2}), Reduction::Mean, 0.0), "delta must be > 0");
  CHECK_THROWS_WITH_SUBSTR(kl_div(zeros({2, 3}), zeros({2, 4})), "input shape (2, 3) and target shape (2, 4)");
  CHECK_THROWS_WITH_SUBSTR(binary_cross_entropy_with_logits(zeros({2, 3}), zeros({2, 3}), Reduction::BatchMean),
                           "only valid for kl_div");
  CHECK_THROWS_WITH_SUBSTR(binary_cross_entropy_with_logits(zeros({2, 3}), zeros({2, 3}), Reduction::Mean, ones({2})),
                           "pos_weight of shape (2,) does not broadcast");
  CHECK_THROWS_WITH_SUBSTR(binary_cross_entropy_with_logits(zeros({2, 3}), zeros({2, 3}, DType::i64)),
                           "target must be float32");
}
