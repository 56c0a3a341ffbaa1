// softmax, log_softmax, normalize: golden values from PyTorch (tests/reference/gen_activation.py),
// gradcheck over several dims and layouts, stability, and error messages.
#include <cmath>

#include "test_util.h"

using namespace kd;
using kdtest::json;
using V = std::vector<Tensor>;

TEST_CASE("activation: golden values and gradients from PyTorch") {
  kdtest::GoldenTable table = {
      {"softmax", [](const V& x, const json& p) { return V{softmax(x[0], p["dim"].get<int64_t>())}; }},
      {"log_softmax", [](const V& x, const json& p) { return V{log_softmax(x[0], p["dim"].get<int64_t>())}; }},
      {"softmax_t0", [](const V& x, const json& p) { return V{softmax(x[0].t(), p["dim"].get<int64_t>())}; }},
      {"log_softmax_t0", [](const V& x, const json& p) { return V{log_softmax(x[0].t(), p["dim"].get<int64_t>())}; }},
      {"normalize",
       [](const V& x, const json& p) {
         return V{normalize(x[0], p["p"].get<double>(), p["dim"].get<int64_t>(), p["eps"].get<double>())};
       }},
  };
  CHECK(kdtest::run_golden_file("golden_activation.json", table) == 16);
}

TEST_CASE("activation: gradcheck") {
  Generator gen(2);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  V x3{leaf(randn({2, 3, 4}, gen))};
  for (int64_t dim : {0, 1, 2, -1}) {
    INFO("dim " << dim);
    CHECK_GRADCHECK([dim](const V& x) { return softmax(x[0], dim); }, x3);
    CHECK_GRADCHECK([dim](const V& x) { return log_softmax(x[0], dim); }, x3);
    CHECK_GRADCHECK([dim](const V& x) { return normalize(x[0], 2.0, dim); }, x3);
  }
  V t{leaf(randn({4, 3}, gen))};
  CHECK_GRADCHECK([](const V& x) { return softmax(x[0].t(), 1); }, t);
  CHECK_GRADCHECK([](const V& x) { return log_softmax(x[0].slice(0, 0, 4, 2), 1); }, t);
  CHECK_GRADCHECK([](const V& x) { return normalize(x[0].t(), 2.0, 1); }, t);
  V r{leaf(add(rand({3, 4}, gen), 0.2).detach())};  // away from 0, where |x|^p has a kink
  CHECK_GRADCHECK([](const V& x) { return normalize(mul(x[0], -1.0), 1.0, 1); }, r);
  CHECK_GRADCHECK([](const V& x) { return normalize(x[0], 3.0, 0); }, r);
  // the clamped branch: rows with norm below eps are divided by the constant eps
  CHECK_GRADCHECK([](const V& x) { return normalize(x[0], 2.0, 1, 5.0); }, r);
}

TEST_CASE("activation: stable for extreme logits, softmax rows sum to 1") {
  Tensor x = from_vector(std::vector<float>{1000, 0, -1000, 88, 89, 90}, {2, 3});
  Tensor s = softmax(x, 1), ls = log_softmax(x, 1);
  for (float v : to_float_vector(s)) CHECK(std::isfinite(v));
  CHECK(s.at({0, 0}) == doctest::Approx(1.0));
  CHECK(ls.at({0, 2}) == doctest::Approx(-2000.0));
  CHECK(sum(s, {1}).at({1}) == doctest::Approx(1.0));
  // 0-d input: softmax is 1, log_softmax 0
  CHECK(softmax(scalar_tensor(3.0), 0).item() == 1.0);
  CHECK(log_softmax(scalar_tensor(3.0), -1).item() == 0.0);
  // a zero row with the default eps stays zero (no NaN)
  Tensor z = normalize(zeros({2, 3}));
  for (float v : to_float_vector(z)) CHECK(v == 0.f);
}

TEST_CASE("activation: errors name the problem") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH_SUBSTR(softmax(x, 2), "out of range");
  CHECK_THROWS_WITH_SUBSTR(log_softmax(zeros({2}, DType::i64), 0), "needs float32");
  CHECK_THROWS_WITH_SUBSTR(normalize(x, 0.0), "positive finite");
  CHECK_THROWS_WITH_SUBSTR(normalize(x, 2.0, -3), "out of range");
}
