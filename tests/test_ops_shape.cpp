// Shape and indexing ops (engine/ops/shape.cpp) and the view methods of Tensor
// (engine/ops/views.cpp): golden values from PyTorch (tests/reference/gen_shape.py), gradcheck,
// errors.
#include "test_util.h"

using namespace kd;
using kdtest::json;

static Shape shape_of(const json& p, const char* key) { return p[key].get<Shape>(); }

TEST_CASE("shape: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"cat", [](const V& x, const json& p) { return V{cat(x, p["dim"].get<int64_t>())}; }},
      {"stack", [](const V& x, const json& p) { return V{stack(x, p["dim"].get<int64_t>())}; }},
      {"split", [](const V& x, const json& p) { return split(x[0], p["size"].get<int64_t>(), p["dim"].get<int64_t>()); }},
      {"chunk", [](const V& x, const json& p) { return chunk(x[0], p["chunks"].get<int64_t>(), p["dim"].get<int64_t>()); }},
      {"index_select", [](const V& x, const json& p) { return V{index_select(x[0], p["dim"].get<int64_t>(), x[1])}; }},
      {"gather", [](const V& x, const json& p) { return V{gather(x[0], p["dim"].get<int64_t>(), x[1])}; }},
      {"scatter", [](const V& x, const json& p) { return V{scatter(x[0], p["dim"].get<int64_t>(), x[1], x[2])}; }},
      {"scatter_add", [](const V& x, const json& p) { return V{scatter_add(x[0], p["dim"].get<int64_t>(), x[1], x[2])}; }},
      {"one_hot", [](const V& x, const json& p) { return V{one_hot(x[0], p["k"].get<int64_t>())}; }},
      {"pad", [](const V& x, const json& p) {
         return V{pad(x[0], p["pads"].get<std::vector<int64_t>>(), p["value"].get<double>())};
       }},
      {"reshape", [](const V& x, const json& p) { return V{x[0].reshape(shape_of(p, "shape"))}; }},
      {"reshape_t0", [](const V& x, const json& p) { return V{x[0].t().reshape(shape_of(p, "shape"))}; }},
      {"permute", [](const V& x, const json& p) { return V{x[0].permute(shape_of(p, "dims")).contiguous()}; }},
      {"transpose", [](const V& x, const json& p) { return V{x[0].transpose(p["d0"].get<int64_t>(), p["d1"].get<int64_t>())}; }},
      {"slice", [](const V& x, const json& p) {
         return V{x[0].slice(p["dim"].get<int64_t>(), p["start"].get<int64_t>(), p["end"].get<int64_t>(), p["step"].get<int64_t>())};
       }},
      {"select", [](const V& x, const json& p) { return V{x[0].select(p["dim"].get<int64_t>(), p["index"].get<int64_t>())}; }},
      {"expand", [](const V& x, const json& p) { return V{x[0].expand(shape_of(p, "shape"))}; }},
      {"flatten", [](const V& x, const json& p) { return V{x[0].flatten(p["s"].get<int64_t>(), p["e"].get<int64_t>())}; }},
      {"squeeze_unsqueeze", [](const V& x, const json&) { return V{x[0].squeeze(1).unsqueeze(0)}; }},
  };
  CHECK(kdtest::run_golden_file("golden_shape.json", table) >= 32);
}

TEST_CASE("shape: gradcheck of the shape and indexing ops") {
  Generator gen(4);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  SUBCASE("cat and stack") {
    V in{leaf(randn({2, 3}, gen)), leaf(randn({2, 1}, gen)), leaf(randn({3, 2}, gen))};
    CHECK_GRADCHECK([](const V& x) { return cat({x[0], x[1]}, 1); }, in);
    CHECK_GRADCHECK([](const V& x) { return cat({x[0], x[2].t(), x[0]}, -1); }, in);  // non-contiguous, repeated
    CHECK_GRADCHECK([](const V& x) { return cat({x[0], x[2].t()}, 0); }, in);
    CHECK_GRADCHECK([](const V& x) { return stack({x[0], x[2].t()}, 1); }, in);
    CHECK_GRADCHECK([](const V& x) { return stack({x[1], x[1] * 2.0}, 0); }, in);
  }
  SUBCASE("split and chunk") {
    V in{leaf(randn({5, 3}, gen))};
    // weight every piece differently so each one's gradient is checked
    CHECK_GRADCHECK([](const V& x) {
      std::vector<Tensor> p = split(x[0], 2, 0);
      return cat({p[0] * 1.0, p[1] * 2.0, p[2] * 3.0}, 0);
    }, in);
    CHECK_GRADCHECK([](const V& x) {
      std::vector<Tensor> p = chunk(x[0].t(), 2, 1);  // (3, 3) and (3, 2) of a non-contiguous view
      return sum(p[0], {1}) - sum(p[1] * p[1], {1});
    }, in);
  }
  SUBCASE("index_select and gather") {
    V in{leaf(randn({4, 3}, gen))};
    Tensor idx = from_vector(std::vector<int64_t>{2, 0, 2, 3}, {4});
    CHECK_GRADCHECK([&](const V& x) { return index_select(x[0], 0, idx); }, in);
    CHECK_GRADCHECK([&](const V& x) { return index_select(x[0], 1, idx.slice(0, 1, 3)); }, in);
    CHECK_GRADCHECK([&](const V& x) { return index_select(x[0].t(), 1, idx); }, in);
    Tensor gidx = from_vector(std::vector<int64_t>{0, 2, 2, 1, 0, 0}, {2, 3});
    CHECK_GRADCHECK([&](const V& x) { return gather(x[0], 1, gidx); }, in);
    CHECK_GRADCHECK([&](const V& x) { return gather(x[0], 0, gidx.t()); }, in);       // non-contiguous index
    CHECK_GRADCHECK([&](const V& x) { return gather(x[0].t(), 1, gidx.slice(1, 0, 2)); }, in);
  }
  SUBCASE("scatter and scatter_add") {
    V in{leaf(randn({3, 4}, gen)), leaf(randn({3, 2}, gen)), leaf(randn({4, 3}, gen))};
    Tensor idx = from_vector(std::vector<int64_t>{3, 0, 1, 2, 0, 1}, {3, 2});
    CHECK_GRADCHECK([&](const V& x) { return scatter(x[0], 1, idx, x[1]); }, in);
    CHECK_GRADCHECK([&](const V& x) { return scatter(x[0], 1, idx, x[2]); }, in);  // src larger than index
    CHECK_GRADCHECK([&](const V& x) { return scatter_add(x[0], 1, idx, x[1]); }, in);
    Tensor rep = from_vector(std::vector<int64_t>{1, 1, 1, 1, 2, 2}, {2, 3});  // repeated targets
    CHECK_GRADCHECK([&](const V& x) { return scatter_add(x[0].t(), 1, rep, x[1].t()); }, in);
    CHECK_GRADCHECK([&](const V& x) { return scatter_add(x[0], 0, rep.slice(1, 0, 2), x[2]); }, in);
  }
  SUBCASE("pad") {
    V in{leaf(randn({2, 3, 4}, gen))};
    CHECK_GRADCHECK([](const V& x) { return pad(x[0], {1, 2}); }, in);
    CHECK_GRADCHECK([](const V& x) { return pad(x[0], {0, 1, 2, 0, 1, 1}, 3.0); }, in);
    CHECK_GRADCHECK([](const V& x) { return pad(x[0], {-1, 1, 1, -2}); }, in);
    CHECK_GRADCHECK([](const V& x) { return pad(x[0].transpose(0, 2), {1, 1}); }, in);
  }
}

TEST_CASE("shape: gradcheck of the view methods of Tensor") {
  Generator gen(5);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  V in{leaf(randn({2, 3, 4}, gen))};
  V col{leaf(randn({3, 1}, gen))};
  // multiply by a non-constant tensor so every output element carries a distinct weight
  CHECK_GRADCHECK([](const V& x) { return x[0].reshape({4, -1}); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].transpose(0, 2).reshape({-1}); }, in);  // copies
  CHECK_GRADCHECK([](const V& x) { return x[0].view({6, 4}); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].permute({1, 2, 0}); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].transpose(-1, 0); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].select(0, 1).t(); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].slice(2, 0, 4, 3); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].slice(1, -2, 10).slice(2, 1, 4, 2); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].select(-1, -1); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].unsqueeze(1).unsqueeze(-1); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].flatten(); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].flatten(0, 1); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].permute({2, 0, 1}).contiguous(); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].transpose(1, 2).clone(); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].clone(); }, in);
  CHECK_GRADCHECK([](const V& x) { return x[0].expand({2, 3, 5}); }, col);
  CHECK_GRADCHECK([](const V& x) { return x[0].expand({-1, 4}).t(); }, col);
  CHECK_GRADCHECK([](const V& x) { return x[0].squeeze(1); }, col);
  CHECK_GRADCHECK([](const V& x) { return x[0].squeeze(0); }, col);  // size 3: a no-op, as PyTorch
  CHECK_GRADCHECK([](const V& x) { return x[0].t().squeeze(0).unsqueeze(1); }, col);
}

TEST_CASE("shape: results and edge cases") {
  Tensor a = from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK(to_float_vector(cat({a, a}, 0)) == std::vector<float>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5});
  CHECK(stack({a, a}, 2).shape() == Shape{2, 3, 2});
  CHECK(split(a, 2, 1).size() == 2);
  CHECK(split(a, 2, 1)[1].shape() == Shape{2, 1});
  CHECK(chunk(a, 3, 1).size() == 3);
  CHECK(chunk(arange(0, 5, 1, DType::f32), 4, 0).size() == 3);  // ceil(5/4) = 2 -> pieces 2, 2, 1 (as PyTorch)
  CHECK(chunk(zeros({0}), 3, 0).size() == 3);
  // integer tensors go through cat, index_select, gather and pad too
  Tensor labels = from_vector(std::vector<int64_t>{4, 5, 6}, {3});
  CHECK(to_int_vector(cat({labels, labels}, 0)) == std::vector<int64_t>{4, 5, 6, 4, 5, 6});
  CHECK(to_int_vector(index_select(labels, 0, from_vector(std::vector<int64_t>{2, 2, 0}, {3}))) ==
        std::vector<int64_t>{6, 6, 4});
  CHECK(to_int_vector(pad(labels, {1, 0}, -1)) == std::vector<int64_t>{-1, 4, 5, 6});
  // one_hot: (N) -> (N, K) float32, and -1 infers K
  Tensor oh = one_hot(from_vector(std::vector<int64_t>{2, 0}, {2}), 3);
  CHECK(oh.dtype() == DType::f32);
  CHECK(to_float_vector(oh) == std::vector<float>{0, 0, 1, 1, 0, 0});
  CHECK(one_hot(from_vector(std::vector<int64_t>{2, 4}, {2}), -1).shape() == Shape{2, 5});
  // scatter is out of place
  Tensor s = scatter(a, 1, from_vector(std::vector<int64_t>{2, 0}, {2, 1}), full({2, 1}, 9.0));
  CHECK(to_float_vector(s) == std::vector<float>{0, 1, 9, 9, 4, 5});
  CHECK(to_float_vector(a) == std::vector<float>{0, 1, 2, 3, 4, 5});
  // index tensors get no gradient, and the scatter gradient to `a` is masked at scattered positions
  Tensor x = a.clone().detach().requires_grad_();
  Tensor src = ones({2, 1}).requires_grad_();
  Tensor idx = from_vector(std::vector<int64_t>{2, 0}, {2, 1});
  sum(scatter(x, 1, idx, src)).backward();
  CHECK(to_float_vector(x.grad()) == std::vector<float>{1, 1, 0, 0, 1, 1});
  CHECK(to_float_vector(src.grad()) == std::vector<float>{1, 1});
  CHECK_FALSE(idx.grad().defined());
  // pad: a crop to nothing and a 0-d tensor with no pads
  CHECK(pad(a, {-3, 0}).shape() == Shape{2, 0});
  CHECK(pad(scalar_tensor(2.0), {}).item() == 2.0);
  // 0-d tensors through the view methods, as PyTorch
  Tensor sc = scalar_tensor(3.0);
  CHECK(sc.squeeze(0).dim() == 0);
  CHECK(sc.unsqueeze(0).shape() == Shape{1});
  CHECK(sc.transpose(0, -1).dim() == 0);
  CHECK(sc.flatten().shape() == Shape{1});
  CHECK(sc.reshape({1, 1}).shape() == Shape{1, 1});
}

TEST_CASE("shape: errors name the problem") {
  Tensor a = zeros({2, 3});
  Tensor i64 = from_vector(std::vector<int64_t>{0, 3}, {2});
  CHECK_THROWS_WITH_SUBSTR(cat({a, zeros({3, 2})}, 0), "(3, 2)");
  CHECK_THROWS_WITH_SUBSTR(cat({a, zeros({3, 2})}, 0), "(2, 3)");
  CHECK_THROWS_WITH_SUBSTR(cat({a, zeros({2, 3, 1})}, 0), "must match");
  CHECK_THROWS_WITH_SUBSTR(cat({}, 0), "at least one");
  CHECK_THROWS_WITH_SUBSTR(cat({a, zeros({2, 3}, DType::i64)}, 0), "dtype");
  CHECK_THROWS_WITH_SUBSTR(stack({a, zeros({3, 2})}, 0), "equal shape");
  CHECK_THROWS_WITH_SUBSTR(split(a, 0, 1), "split_size must be positive");
  CHECK_THROWS_WITH_SUBSTR(chunk(a, 0, 1), "must be positive");
  CHECK_THROWS_WITH_SUBSTR(index_select(a, 1, i64), "index 3 is out of range for dim 1 of size 3");
  CHECK_THROWS_WITH_SUBSTR(index_select(a, 1, zeros({2})), "int64");
  CHECK_THROWS_WITH_SUBSTR(index_select(a, 1, zeros({1, 2}, DType::i64)), "1-D");
  CHECK_THROWS_WITH_SUBSTR(gather(a, 0, from_vector(std::vector<int64_t>{0, -1}, {1, 2})),
                           "index -1 is out of range for dim 0 of size 2");
  CHECK_THROWS_WITH_SUBSTR(gather(a, 0, i64), "as many dims");
  CHECK_THROWS_WITH_SUBSTR(gather(a, 0, zeros({1, 4}, DType::i64)), "larger than the input");
  CHECK_THROWS_WITH_SUBSTR(gather(a, 1, zeros({1, 2}, DType::u8)), "int64");
  CHECK_THROWS_WITH_SUBSTR(scatter(a, 1, from_vector(std::vector<int64_t>{5}, {1, 1}), ones({1, 1})),
                           "index 5 is out of range for dim 1 of size 3");
  CHECK_THROWS_WITH_SUBSTR(scatter(a, 1, zeros({1, 2}, DType::i64), ones({1, 1})), "larger than src");
  CHECK_THROWS_WITH_SUBSTR(scatter_add(a, 1, zeros({2}, DType::i64), ones({2})), "same number of dims");
  CHECK_THROWS_WITH_SUBSTR(scatter_add(a, 1, zeros({1, 1}, DType::i64), ones({1, 1}, DType::i64)), "dtype");
  CHECK_THROWS_WITH_SUBSTR(one_hot(from_vector(std::vector<int64_t>{0, 7}, {2}), 5), "label 7 is out of range for 5 classes");
  CHECK_THROWS_WITH_SUBSTR(one_hot(from_vector(std::vector<int64_t>{-1}, {1}), 5), "label -1");
  CHECK_THROWS_WITH_SUBSTR(one_hot(zeros({2}), 5), "int64");
  CHECK_THROWS_WITH_SUBSTR(pad(a, {1}), "pairs");
  CHECK_THROWS_WITH_SUBSTR(pad(a, {1, 1, 1, 1, 1, 1}), "3 pairs of pads for a tensor with 2 dims");
  CHECK_THROWS_WITH_SUBSTR(pad(a, {-2, -2}), "negative size");
  // the view methods
  CHECK_THROWS_WITH_SUBSTR(a.reshape({4, -1}), "cannot infer");
  CHECK_THROWS_WITH_SUBSTR(a.t().view({6}), "contiguous");
  CHECK_THROWS_WITH_SUBSTR(a.permute({0, 0}), "appears twice");
  CHECK_THROWS_WITH_SUBSTR(a.select(1, 3), "out of range");
  CHECK_THROWS_WITH_SUBSTR(a.expand({4, 3, 2}), "cannot be expanded");
  CHECK_THROWS_WITH_SUBSTR(a.slice(0, 0, 2, 0), "step must be positive");
  CHECK_THROWS_WITH_SUBSTR(scalar_tensor(1.0).select(0, 0), "0-d");
  CHECK_THROWS_WITH_SUBSTR(scalar_tensor(1.0).slice(0, 0, 1), "0-d");
  CHECK_THROWS_WITH_SUBSTR(scalar_tensor(1.0).transpose(0, 1), "out of range");
}
