// Elementwise ops: golden values from PyTorch (tests/reference/gen_elementwise.py) and gradcheck.
#include <cstring>
#include <limits>

#include "test_util.h"

using namespace kd;
using kdtest::json;

static std::optional<double> opt_num(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<double>();
}

TEST_CASE("elementwise: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"add", [](const V& x, const json&) { return V{add(x[0], x[1])}; }},
      {"sub", [](const V& x, const json&) { return V{sub(x[0], x[1])}; }},
      {"mul", [](const V& x, const json&) { return V{mul(x[0], x[1])}; }},
      {"div", [](const V& x, const json&) { return V{div(x[0], x[1])}; }},
      {"maximum", [](const V& x, const json&) { return V{maximum(x[0], x[1])}; }},
      {"minimum", [](const V& x, const json&) { return V{minimum(x[0], x[1])}; }},
      {"add_scalar", [](const V& x, const json& p) { return V{x[0] + p["s"].get<double>()}; }},
      {"mul_scalar", [](const V& x, const json& p) { return V{x[0] * p["s"].get<double>()}; }},
      {"div_scalar", [](const V& x, const json& p) { return V{x[0] / p["s"].get<double>()}; }},
      {"rsub_scalar", [](const V& x, const json& p) { return V{p["s"].get<double>() - x[0]}; }},
      {"neg", [](const V& x, const json&) { return V{-x[0]}; }},
      {"pow_scalar", [](const V& x, const json& p) { return V{pow(x[0], p["e"].get<double>())}; }},
      {"pow", [](const V& x, const json&) { return V{pow(x[0], x[1])}; }},
      {"exp", [](const V& x, const json&) { return V{exp(x[0])}; }},
      {"log", [](const V& x, const json&) { return V{log(x[0])}; }},
      {"sqrt", [](const V& x, const json&) { return V{sqrt(x[0])}; }},
      {"rsqrt", [](const V& x, const json&) { return V{rsqrt(x[0])}; }},
      {"abs", [](const V& x, const json&) { return V{abs(x[0])}; }},
      {"clamp", [](const V& x, const json& p) { return V{clamp(x[0], opt_num(p["lo"]), opt_num(p["hi"]))}; }},
      {"relu", [](const V& x, const json&) { return V{relu(x[0])}; }},
      {"relu6", [](const V& x, const json&) { return V{relu6(x[0])}; }},
      {"sigmoid", [](const V& x, const json&) { return V{sigmoid(x[0])}; }},
      {"tanh", [](const V& x, const json&) { return V{tanh(x[0])}; }},
      {"gelu", [](const V& x, const json& p) { return V{gelu(x[0], p["tanh"].get<bool>())}; }},
      {"where", [](const V& x, const json&) { return V{where(x[0], x[1], x[2])}; }},
      {"masked_fill", [](const V& x, const json& p) { return V{masked_fill(x[0], x[1], p["v"].get<double>())}; }},
      {"eq", [](const V& x, const json&) { return V{eq(x[0], x[1])}; }},
      {"lt", [](const V& x, const json&) { return V{lt(x[0], x[1])}; }},
      {"ge", [](const V& x, const json&) { return V{ge(x[0], x[1])}; }},
      {"mul_t0", [](const V& x, const json&) { return V{mul(x[0].t(), x[1])}; }},
  };
  CHECK(kdtest::run_golden_file("golden_elementwise.json", table) >= 30);
}

TEST_CASE("elementwise: gradcheck with broadcasting and non-contiguous inputs") {
  Generator gen(1);
  auto pos = [&](Shape s) { return add(rand(s, gen), 0.5).detach(); };
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  SUBCASE("binary") {
    V in{leaf(randn({2, 1, 3}, gen)), leaf(randn({4, 1}, gen))};
    CHECK_GRADCHECK([](const V& x) { return add(x[0], x[1]); }, in);
    CHECK_GRADCHECK([](const V& x) { return sub(x[0], x[1]); }, in);
    CHECK_GRADCHECK([](const V& x) { return mul(x[0], x[1]); }, in);
    V d{leaf(randn({2, 1, 3}, gen)), leaf(pos({4, 1}))};
    CHECK_GRADCHECK([](const V& x) { return div(x[0], x[1]); }, d);
    V pw{leaf(pos({2, 3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return pow(x[0], x[1]); }, pw);
    V mm{leaf(randn({3, 4}, gen)), leaf(randn({3, 4}, gen))};
    CHECK_GRADCHECK([](const V& x) { return maximum(x[0], x[1]) + minimum(x[0], x[1]) * 2.0; }, mm);
  }
  SUBCASE("non-contiguous") {
    V in{leaf(randn({3, 4}, gen)), leaf(randn({4, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return mul(x[0].t(), x[1]); }, in);
    CHECK_GRADCHECK([](const V& x) { return exp(x[0].slice(1, 0, 4, 2)); }, in);
  }
  SUBCASE("unary") {
    V r{leaf(randn({3, 5}, gen))};
    V p{leaf(pos({3, 5}))};
    for (auto f : std::vector<std::function<Tensor(const Tensor&)>>{
             [](const Tensor& a) { return exp(a); }, [](const Tensor& a) { return tanh(a); },
             [](const Tensor& a) { return sigmoid(a); }, [](const Tensor& a) { return gelu(a); },
             [](const Tensor& a) { return gelu(a, true); }, [](const Tensor& a) { return neg(a); },
             [](const Tensor& a) { return pow(a, 3.0); }, [](const Tensor& a) { return pow(a, 2.0); },
             [](const Tensor& a) { return pow(a, 1.0); }, [](const Tensor& a) { return 2.0 - a * 3.0 + 1.0; },
             [](const Tensor& a) { return relu(a); }, [](const Tensor& a) { return abs(a); },
             [](const Tensor& a) { return relu6(a * 4.0); }, [](const Tensor& a) { return clamp(a, -0.5, 0.5); }})
      CHECK_GRADCHECK([&](const V& x) { return f(x[0]); }, r);
    for (auto f : std::vector<std::function<Tensor(const Tensor&)>>{
             [](const Tensor& a) { return log(a); }, [](const Tensor& a) { return sqrt(a); },
             [](const Tensor& a) { return rsqrt(a); }, [](const Tensor& a) { return pow(a, -1.5); },
             [](const Tensor& a) { return 1.0 / 1.0 + a / 2.0; }})
      CHECK_GRADCHECK([&](const V& x) { return f(x[0]); }, p);
  }
  SUBCASE("where and masked_fill") {
    Tensor mask = gt(randn({3, 4}, gen), 0.0);
    V in{leaf(randn({3, 4}, gen)), leaf(randn({4}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return where(mask, x[0], x[1]); }, in);
    CHECK_GRADCHECK([&](const V& x) { return masked_fill(x[0], mask, 2.0); }, in);
  }
}

TEST_CASE("elementwise: pow's shortcuts for x^2 and x^1 give libm's values bit for bit") {
  // pow(x, 2) computes x * x and pow(x, 1) copies; both must equal (float)std::pow((double)x, e),
  // including signed zeros, subnormals, overflow to inf, inf and NaN.
  std::vector<float> v = {0.f, -0.f, 1.f, -1.f, 3.f, -2.5f, 1e-20f, -1e-23f, 1e-40f, 3e19f, -2e20f, 3.4e38f,
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), 0.1f, 1.0000001f, 65535.9f};
  Generator gen(11);
  Tensor r = randn({1000}, gen) * 100.0;
  for (int64_t i = 0; i < r.numel(); ++i) v.push_back(r.data<float>()[i]);
  Tensor x = from_vector(v, {(int64_t)v.size()});
  for (double e : {2.0, 1.0}) {
    Tensor y = pow(x, e);
    for (size_t i = 0; i < v.size(); ++i) {
      const float want = (float)std::pow((double)v[i], e), got = y.data<float>()[i];
      if (std::isnan(want)) CHECK(std::isnan(got));
      else CHECK(std::memcmp(&want, &got, sizeof(float)) == 0);
    }
  }
}

TEST_CASE("elementwise: errors name the problem") {
  Tensor a = zeros({2, 3}), b = zeros({4});
  CHECK_THROWS_WITH_SUBSTR(add(a, b), "cannot be broadcast");
  CHECK_THROWS_WITH_SUBSTR(add(a, zeros({2, 3}, DType::i64)), "needs float32");
  CHECK_THROWS_WITH_SUBSTR(where(zeros({2, 3}), a, a), "uint8");
  CHECK_THROWS_WITH_SUBSTR(clamp(a, 1.0, 0.0), "larger than max");
}
