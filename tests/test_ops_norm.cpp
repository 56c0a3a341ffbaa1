// batch_norm, layer_norm, dropout: golden values from PyTorch (tests/reference/gen_norm.py),
// gradcheck, dropout statistics, and error messages.
#include <cmath>

#include "test_util.h"

using namespace kd;
using kdtest::json;
using V = std::vector<Tensor>;

TEST_CASE("norm: golden values and gradients from PyTorch") {
  kdtest::GoldenTable table = {
      {"batch_norm",
       [](const V& x, const json& p) {
         Tensor y = batch_norm(x[0], x[1], x[2], x[3], x[4], p["training"].get<bool>(), p["momentum"].get<double>(),
                               p["eps"].get<double>());
         // the running statistics after the call (updated in place in training mode)
         if (x[3].defined()) return V{y, x[3], x[4]};
         return V{y};
       }},
      {"layer_norm",
       [](const V& x, const json& p) {
         return V{layer_norm(x[0], p["normalized_shape"].get<Shape>(), x[1], x[2], p["eps"].get<double>())};
       }},
  };
  CHECK(kdtest::run_golden_file("golden_norm.json", table) == 13);
}

TEST_CASE("batch_norm: gradcheck") {
  Generator gen(3);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  auto pos = [&](Shape s) { return add(rand(s, gen), 0.5).detach(); };
  SUBCASE("training, 2-D and 4-D, with and without affine") {
    V in2{leaf(randn({5, 3}, gen)), leaf(pos({3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, in2);
    V in4{leaf(randn({2, 3, 2, 2}, gen)), leaf(pos({3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true); }, in4);
    V plain{leaf(randn({3, 2, 4}, gen))};
    CHECK_GRADCHECK([](const V& x) { return batch_norm(x[0], Tensor(), Tensor(), Tensor(), Tensor(), true); }, plain);
  }
  SUBCASE("training with running statistics (updated on every call, output unaffected)") {
    Tensor rm = zeros({3}), rv = ones({3});
    V in{leaf(randn({4, 3, 2}, gen)), leaf(pos({3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return batch_norm(x[0], x[1], x[2], rm, rv, true, 0.2); }, in);
  }
  SUBCASE("eval") {
    Tensor rm = randn({3}, gen), rv = pos({3});
    V in{leaf(randn({2, 3, 2, 2}, gen)), leaf(pos({3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([&](const V& x) { return batch_norm(x[0], x[1], x[2], rm, rv, false); }, in);
  }
  SUBCASE("non-contiguous input (NHWC memory permuted to NCHW)") {
    V in{leaf(randn({2, 2, 2, 3}, gen)), leaf(pos({3})), leaf(randn({3}, gen))};
    CHECK_GRADCHECK(
        [](const V& x) { return batch_norm(x[0].permute({0, 3, 1, 2}), x[1], x[2], Tensor(), Tensor(), true); }, in);
  }
}

TEST_CASE("batch_norm: running statistics follow PyTorch's momentum update") {
  // x (4, 1): mean 2.5, biased var 1.25, unbiased var 5/3
  Tensor x = from_vector(std::vector<float>{1, 2, 3, 4}, {4, 1});
  Tensor rm = zeros({1}), rv = ones({1});
  Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, 0.1);
  CHECK(rm.item() == doctest::Approx(0.25));
  CHECK(rv.item() == doctest::Approx(0.9 + 0.1 * 5.0 / 3.0));
  CHECK(y.at({0, 0}) == doctest::Approx(-1.5 / std::sqrt(1.25 + 1e-5)));
  // eval mode leaves them alone and uses them
  Tensor ye = batch_norm(x, Tensor(), Tensor(), rm, rv, false);
  CHECK(rm.item() == doctest::Approx(0.25));
  CHECK(ye.at({3, 0}) == doctest::Approx((4 - 0.25) / std::sqrt(rv.item() + 1e-5)).epsilon(1e-5));
}

TEST_CASE("layer_norm: gradcheck") {
  Generator gen(4);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  V in{leaf(randn({2, 3, 4}, gen)), leaf(add(rand({4}, gen), 0.5).detach()), leaf(randn({4}, gen))};
  CHECK_GRADCHECK([](const V& x) { return layer_norm(x[0], {4}, x[1], x[2]); }, in);
  V in2{leaf(randn({2, 3, 4}, gen)), leaf(add(rand({3, 4}, gen), 0.5).detach()), leaf(randn({3, 4}, gen))};
  CHECK_GRADCHECK([](const V& x) { return layer_norm(x[0], {3, 4}, x[1], x[2]); }, in2);
  V plain{leaf(randn({3, 5}, gen))};
  CHECK_GRADCHECK([](const V& x) { return layer_norm(x[0], {5}); }, plain);
  // non-contiguous: normalise the rows of a transposed matrix
  V t{leaf(randn({5, 3}, gen)), leaf(add(rand({5}, gen), 0.5).detach()), leaf(randn({5}, gen))};
  CHECK_GRADCHECK([](const V& x) { return layer_norm(x[0].t(), {5}, x[1], x[2]); }, t);
}

TEST_CASE("dropout") {
  Generator gen(7);
  Tensor x = add(rand({100, 100}, gen), 1.0).detach();
  SUBCASE("identity when not training or p == 0") {
    CHECK(dropout(x, 0.5, false, gen).is_same(x));
    CHECK(dropout(x, 0.0, true, gen).is_same(x));
  }
  SUBCASE("zeros a fraction p and scales the rest by 1 / (1 - p)") {
    const double p = 0.3;
    Tensor y = dropout(x, p, true, gen);
    std::vector<float> xv = to_float_vector(x), yv = to_float_vector(y);
    int64_t zeros_count = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      if (yv[i] == 0.f) ++zeros_count;
      else CHECK(yv[i] == doctest::Approx(xv[i] / (1 - p)).epsilon(1e-6));
    }
    // 10000 Bernoulli(0.3) draws: standard deviation ~46
    CHECK(std::fabs((double)zeros_count - 3000.0) < 250.0);
  }
  SUBCASE("p == 1 gives zeros") {
    Tensor y = dropout(x, 1.0, true, gen);
    CHECK(sum(abs(y)).item() == 0.0);
  }
  SUBCASE("the same seed gives the same mask; the gradient is the mask") {
    Generator g1(11), g2(11);
    Tensor a = x.clone().detach().requires_grad_();
    Tensor y1 = dropout(a, 0.5, true, g1), y2 = dropout(x, 0.5, true, g2);
    CHECK(kdtest::allclose(y1, y2, 0, 0).ok);
    sum(y1).backward();
    CHECK(kdtest::allclose(a.grad(), div(y1, x).detach(), 1e-6, 1e-6).ok);
  }
  SUBCASE("gradcheck with a fixed seed, non-contiguous input") {
    V in{randn({4, 3}, gen).requires_grad_()};
    CHECK_GRADCHECK([](const V& v) {
      Generator g(5);  // a fresh generator per call: the same mask for every finite difference
      return dropout(v[0].t(), 0.4, true, g);
    }, in);
  }
}

TEST_CASE("norm: errors name the problem") {
  Generator gen(0);
  Tensor x = randn({4, 3}, gen);
  CHECK_THROWS_WITH_SUBSTR(batch_norm(zeros({4}), Tensor(), Tensor(), Tensor(), Tensor(), true), "(B, C)");
  CHECK_THROWS_WITH_SUBSTR(batch_norm(x, ones({4}), Tensor(), Tensor(), Tensor(), true), "weight has shape (4,)");
  CHECK_THROWS_WITH_SUBSTR(batch_norm(x, Tensor(), Tensor(), zeros({3}), Tensor(), true), "both running_mean");
  CHECK_THROWS_WITH_SUBSTR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false), "eval mode");
  CHECK_THROWS_WITH_SUBSTR(batch_norm(zeros({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true),
                           "more than 1 value per channel");
  CHECK_THROWS_WITH_SUBSTR(layer_norm(x, {4}), "does not match the trailing dims");
  CHECK_THROWS_WITH_SUBSTR(layer_norm(x, {3}, ones({2})), "weight has shape (2,)");
  CHECK_THROWS_WITH_SUBSTR(layer_norm(x, {}), "normalized_shape is empty");
  CHECK_THROWS_WITH_SUBSTR(dropout(x, 1.5, true, gen), "must be in [0, 1]");
  CHECK_THROWS_WITH_SUBSTR(dropout(x, -0.1, false, gen), "must be in [0, 1]");
}
