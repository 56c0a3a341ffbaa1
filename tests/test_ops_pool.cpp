// Pooling: golden values and gradients from PyTorch (tests/reference/gen_pool.py), gradcheck,
// and error messages.
#include <algorithm>
#include <cmath>
#include <random>

#include "test_util.h"

using namespace kd;
using kdtest::json;

static Int2 int2(const json& j) { return Int2(j.at(0).get<int64_t>(), j.at(1).get<int64_t>()); }
static std::optional<Int2> opt_int2(const json& j) {
  if (j.is_null()) return std::nullopt;
  return int2(j);
}

TEST_CASE("pool: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"max_pool2d",
       [](const V& x, const json& p) {
         return V{max_pool2d(x[0], int2(p["kernel"]), opt_int2(p["stride"]), int2(p["padding"]),
                             p["ceil_mode"].get<bool>())};
       }},
      {"avg_pool2d",
       [](const V& x, const json& p) {
         return V{avg_pool2d(x[0], int2(p["kernel"]), opt_int2(p["stride"]), int2(p["padding"]),
                             p["ceil_mode"].get<bool>(), p["count_include_pad"].get<bool>())};
       }},
      {"adaptive_avg_pool2d", [](const V& x, const json& p) { return V{adaptive_avg_pool2d(x[0], int2(p["size"]))}; }},
  };
  CHECK(kdtest::run_golden_file("golden_pool.json", table) >= 19);
}

TEST_CASE("pool: output sizes follow PyTorch's ceil_mode rule") {
  Tensor x = zeros({1, 1, 5, 5});
  CHECK(max_pool2d(x, 2, 2, 1, false).shape() == Shape{1, 1, 3, 3});
  CHECK(max_pool2d(x, 2, 2, 1, true).shape() == Shape{1, 1, 3, 3});  // a 4th window would start in the right padding
  CHECK(max_pool2d(x, 2, 2, 0, true).shape() == Shape{1, 1, 3, 3});  // the 3rd window starts inside the input
  CHECK(max_pool2d(x, 2, 2, 0, false).shape() == Shape{1, 1, 2, 2});
  CHECK(avg_pool2d(zeros({1, 1, 6, 6}), 3, 2, 1, true).shape() == Shape{1, 1, 4, 4});
  CHECK(adaptive_avg_pool2d(zeros({2, 3, 7, 5}), 1).shape() == Shape{2, 3, 1, 1});
  // a NaN wins the max, as in PyTorch
  Tensor n = from_vector(std::vector<float>{1, NAN, 3, 2}, {1, 1, 2, 2});
  CHECK(std::isnan(max_pool2d(n, 2).item()));
  // global average of a constant plane
  CHECK(adaptive_avg_pool2d(full({1, 1, 3, 5}, 2.5), 1).item() == doctest::Approx(2.5));
}

// Distinct values 0.1 apart in a seeded random order: no window has a near tie for its max
// under the finite-difference step.
static Tensor shuffled_values(const Shape& shape, uint32_t seed) {
  std::vector<float> v(shape_numel(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * (float)i - 1.f;
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  return from_vector(v, shape).requires_grad_();
}

TEST_CASE("pool: gradcheck") {
  using V = std::vector<Tensor>;
  SUBCASE("max_pool2d") {
    V in{shuffled_values({2, 2, 5, 6}, 1)};
    CHECK_GRADCHECK([](const V& x) { return max_pool2d(x[0], 2); }, in);
    CHECK_GRADCHECK([](const V& x) { return max_pool2d(x[0], 3, 2, 1); }, in);
    CHECK_GRADCHECK([](const V& x) { return max_pool2d(x[0], 3, 2, 1, true); }, in);
    CHECK_GRADCHECK([](const V& x) { return max_pool2d(x[0], Int2(2, 3), Int2(1, 2), Int2(1, 0), true); }, in);
    CHECK_GRADCHECK([](const V& x) { return max_pool2d(x[0].transpose(2, 3), 2, 1); }, in);  // non-contiguous
  }
  Generator gen(12);
  V in{randn({2, 2, 5, 6}, gen).requires_grad_()};
  SUBCASE("avg_pool2d") {
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0], 2); }, in);
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0], 3, 2, 1, false, true); }, in);
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0], 3, 2, 1, false, false); }, in);
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0], 3, 2, 1, true, true); }, in);
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0], 3, 2, 1, true, false); }, in);
    CHECK_GRADCHECK([](const V& x) { return avg_pool2d(x[0].transpose(2, 3), Int2(3, 2), Int2(2, 1), Int2(1, 0)); }, in);
  }
  SUBCASE("adaptive_avg_pool2d") {
    CHECK_GRADCHECK([](const V& x) { return adaptive_avg_pool2d(x[0], 1); }, in);
    CHECK_GRADCHECK([](const V& x) { return adaptive_avg_pool2d(x[0], Int2(3, 4)); }, in);  // overlapping windows
    CHECK_GRADCHECK([](const V& x) { return adaptive_avg_pool2d(x[0], Int2(2, 3)); }, in);
    CHECK_GRADCHECK([](const V& x) { return adaptive_avg_pool2d(x[0].slice(3, 0, 6, 2), Int2(2, 2)); }, in);
  }
}

TEST_CASE("pool: errors name the problem") {
  Tensor x = zeros({1, 2, 4, 4});
  CHECK_THROWS_WITH_SUBSTR(max_pool2d(zeros({2, 4, 4}), 2), "must be 4-D (B, C, H, W), got shape (2, 4, 4)");
  CHECK_THROWS_WITH_SUBSTR(max_pool2d(x, 2, 2, 2),
                           "padding (2, 2) must be non-negative and at most half the kernel size (2, 2)");
  CHECK_THROWS_WITH_SUBSTR(avg_pool2d(x, 3, 1, 2), "at most half the kernel size");
  CHECK_THROWS_WITH_SUBSTR(max_pool2d(zeros({1, 1, 2, 2}), 3), "output size <= 0");
  CHECK_THROWS_WITH_SUBSTR(avg_pool2d(zeros({1, 1, 2, 5}), Int2(3, 1)), "output size <= 0");
  CHECK_THROWS_WITH_SUBSTR(max_pool2d(x, 0), "kernel size must be positive");
  CHECK_THROWS_WITH_SUBSTR(avg_pool2d(x, 2, 0), "stride must be positive");
  CHECK_THROWS_WITH_SUBSTR(adaptive_avg_pool2d(x, Int2(0, 2)), "output size must be positive");
  CHECK_THROWS_WITH_SUBSTR(adaptive_avg_pool2d(x.to(DType::i64), 1), "float32");
}
