// Reductions: golden values from PyTorch (tests/reference/gen_reduce.py), gradcheck, errors.
#include <cmath>

#include "test_util.h"

using namespace kd;
using kdtest::json;

static std::vector<int64_t> dims_of(const json& p, const char* key) { return p[key].get<std::vector<int64_t>>(); }

static double p_of(const json& p) {
  if (p["p"].is_string()) return INFINITY;  // the script writes "inf"
  return p["p"].get<double>();
}

TEST_CASE("reduce: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  auto var_fn = [](const Tensor& a, const json& p) {
    return var(a, dims_of(p, "dims"), p["unbiased"].get<bool>(), p["keepdim"].get<bool>());
  };
  auto lse_fn = [](const Tensor& a, const json& p) { return logsumexp(a, dims_of(p, "dim"), p["keepdim"].get<bool>()); };
  auto norm_fn = [](const Tensor& a, const json& p) {
    return norm(a, p_of(p), dims_of(p, "dims"), p["keepdim"].get<bool>());
  };
  auto max_fn = [](const Tensor& a, const json& p) {
    ValuesIndices r = max(a, p["dim"].get<int64_t>(), p["keepdim"].get<bool>());
    return V{r.values, r.indices};
  };
  kdtest::GoldenTable table = {
      {"sum", [](const V& x, const json& p) { return V{sum(x[0], dims_of(p, "dims"), p["keepdim"].get<bool>())}; }},
      {"mean", [](const V& x, const json& p) { return V{mean(x[0], dims_of(p, "dims"), p["keepdim"].get<bool>())}; }},
      {"var", [=](const V& x, const json& p) { return V{var_fn(x[0], p)}; }},
      {"var_t0", [=](const V& x, const json& p) { return V{var_fn(x[0].t(), p)}; }},
      {"logsumexp", [=](const V& x, const json& p) { return V{lse_fn(x[0], p)}; }},
      {"logsumexp_t0", [=](const V& x, const json& p) { return V{lse_fn(x[0].t(), p)}; }},
      {"norm", [=](const V& x, const json& p) { return V{norm_fn(x[0], p)}; }},
      {"norm_t0", [=](const V& x, const json& p) { return V{norm_fn(x[0].t(), p)}; }},
      {"max_dim", [=](const V& x, const json& p) { return max_fn(x[0], p); }},
      {"max_dim_t0", [=](const V& x, const json& p) { return max_fn(x[0].t(), p); }},
      {"min_dim", [](const V& x, const json& p) {
         ValuesIndices r = min(x[0], p["dim"].get<int64_t>(), p["keepdim"].get<bool>());
         return V{r.values, r.indices};
       }},
      {"max_all", [](const V& x, const json&) { return V{max(x[0])}; }},
      {"min_all", [](const V& x, const json&) { return V{min(x[0])}; }},
      {"argmax", [](const V& x, const json& p) { return V{argmax(x[0], p["dim"].get<int64_t>(), p["keepdim"].get<bool>())}; }},
      {"argmin", [](const V& x, const json& p) { return V{argmin(x[0], p["dim"].get<int64_t>(), p["keepdim"].get<bool>())}; }},
  };
  CHECK(kdtest::run_golden_file("golden_reduce.json", table) >= 33);
}

TEST_CASE("reduce: gradcheck over dims, keepdim and non-contiguous inputs") {
  Generator gen(3);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  V x{leaf(randn({2, 3, 4}, gen))};
  V xt{leaf(randn({4, 3}, gen))};  // used transposed (non-contiguous)
  SUBCASE("sum and mean") {
    CHECK_GRADCHECK([](const V& v) { return sum(v[0]); }, x);
    CHECK_GRADCHECK([](const V& v) { return sum(v[0], {0, -1}, true); }, x);
    CHECK_GRADCHECK([](const V& v) { return mean(v[0], {1}); }, x);
    CHECK_GRADCHECK([](const V& v) { return mean(v[0].t(), {0}, true); }, xt);
  }
  SUBCASE("var") {
    CHECK_GRADCHECK([](const V& v) { return var(v[0]); }, x);
    CHECK_GRADCHECK([](const V& v) { return var(v[0], {1}, false); }, x);
    CHECK_GRADCHECK([](const V& v) { return var(v[0], {0, 2}, true, true); }, x);
    CHECK_GRADCHECK([](const V& v) { return var(v[0].t(), {-1}); }, xt);
  }
  SUBCASE("logsumexp") {
    CHECK_GRADCHECK([](const V& v) { return logsumexp(v[0], {1}); }, x);
    CHECK_GRADCHECK([](const V& v) { return logsumexp(v[0], {0, 2}, true); }, x);
    CHECK_GRADCHECK([](const V& v) { return logsumexp(v[0].t(), {0}); }, xt);
    CHECK_GRADCHECK([](const V& v) { return logsumexp(v[0], {}); }, x);
  }
  SUBCASE("norm") {
    for (double p : {2.0, 1.0, 3.0, 0.5, 1.5}) {
      INFO("p = " << p);
      CHECK_GRADCHECK([p](const V& v) { return norm(v[0], p); }, x);
      CHECK_GRADCHECK([p](const V& v) { return norm(v[0], p, {-1}, true); }, x);
      CHECK_GRADCHECK([p](const V& v) { return norm(v[0].t(), p, {0}); }, xt);
    }
    CHECK_GRADCHECK([](const V& v) { return norm(v[0], INFINITY, {1}); }, x);
  }
  SUBCASE("max and min") {
    // random normals have no ties, so finite differences are meaningful
    CHECK_GRADCHECK([](const V& v) { return max(v[0], 1).values; }, x);
    CHECK_GRADCHECK([](const V& v) { return min(v[0], -1, true).values; }, x);
    CHECK_GRADCHECK([](const V& v) { return max(v[0].t(), 0).values; }, xt);
    CHECK_GRADCHECK([](const V& v) { return max(v[0]); }, x);
    CHECK_GRADCHECK([](const V& v) { return min(v[0].t()); }, xt);
  }
}

TEST_CASE("reduce: logsumexp is stable for large and -inf inputs") {
  Tensor a = from_vector(std::vector<float>{1000.f, 1000.f, -1000.f}, {3});
  CHECK(logsumexp(a, {0}).item() == doctest::Approx(1000.0 + std::log(2.0)));
  Tensor neg_inf = full({2}, -INFINITY);
  CHECK(std::isinf(logsumexp(neg_inf, {0}).item()));
  CHECK(logsumexp(neg_inf, {0}).item() < 0);
}

TEST_CASE("reduce: norm at zero has gradient 0, not NaN") {
  Tensor z = zeros({2, 3}).requires_grad_();
  Tensor n = norm(z);
  CHECK(n.item() == 0.0);
  n.backward();
  for (float v : to_float_vector(z.grad())) CHECK(v == 0.f);
  Tensor z2 = zeros({3}).requires_grad_();
  norm(z2, 0.5).backward();
  for (float v : to_float_vector(z2.grad())) CHECK(v == 0.f);
}

TEST_CASE("reduce: max/min ties and shapes") {
  Tensor a = from_vector(std::vector<float>{1, 5, 5, 2, 0, 0}, {2, 3}).requires_grad_();
  ValuesIndices r = max(a, 1);
  CHECK(to_int_vector(r.indices) == std::vector<int64_t>{1, 0});  // first occurrence
  CHECK(r.indices.dtype() == DType::i64);
  r.values.backward(ones({2}));
  CHECK(to_float_vector(a.grad()) == std::vector<float>{0, 1, 0, 1, 0, 0});  // only the selected index
  a.zero_grad();
  max(a).backward();  // the max 5 appears twice: each gets half
  CHECK(to_float_vector(a.grad()) == std::vector<float>{0, 0.5f, 0.5f, 0, 0, 0});
  a.zero_grad();
  min(a).backward();
  CHECK(to_float_vector(a.grad()) == std::vector<float>{0, 0, 0, 0, 0.5f, 0.5f});
  CHECK(max(a).dim() == 0);
  CHECK(argmin(a, 1, true).shape() == Shape{2, 1});
  CHECK(to_int_vector(argmin(a, 1)) == std::vector<int64_t>{0, 1});
  CHECK(to_int_vector(argmax(a, 0)) == std::vector<int64_t>{1, 0, 0});
  CHECK(max(a, -2, true).values.shape() == Shape{1, 3});
  // NaN propagates, as PyTorch
  Tensor nan = from_vector(std::vector<float>{1, NAN, 3}, {3});
  CHECK(std::isnan(max(nan).item()));
  CHECK(max(nan, 0).indices.item() == 1);
  // var of a dims list with keepdim
  CHECK(var(zeros({2, 3, 4}), {0, -1}, true, true).shape() == Shape{1, 3, 1});
  CHECK(var(zeros({2, 3, 4}), {0, -1}).shape() == Shape{3});
}

TEST_CASE("reduce: errors name the problem") {
  Tensor a = zeros({2, 3});
  CHECK_THROWS_WITH_SUBSTR(sum(a, {2}), "out of range");
  CHECK_THROWS_WITH_SUBSTR(var(a, {1, -1}), "listed twice");
  CHECK_THROWS_WITH_SUBSTR(norm(a, 0.0), "p must be positive");
  CHECK_THROWS_WITH_SUBSTR(norm(a, -1.0), "p must be positive");
  CHECK_THROWS_WITH_SUBSTR(max(zeros({0})), "empty tensor");
  CHECK_THROWS_WITH_SUBSTR(max(zeros({2, 0}), 1), "size 0");
  CHECK_THROWS_WITH_SUBSTR(logsumexp(zeros({2}, DType::i64), {0}), "needs float32");
  CHECK_THROWS_WITH_SUBSTR(argmax(a, 3), "out of range");
}
