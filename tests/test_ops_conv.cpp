// Convolutions: golden values and gradients from PyTorch (tests/reference/gen_conv.py), the
// im2col/col2im kernels against a direct loop, gradcheck, and error messages.
#include "engine/kernels/conv_ref.h"
#include "test_util.h"

using namespace kd;
using kdtest::json;

static Int2 int2(const json& j) { return Int2(j.at(0).get<int64_t>(), j.at(1).get<int64_t>()); }

TEST_CASE("conv: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"conv2d",
       [](const V& x, const json& p) {
         return V{conv2d(x[0], x[1], x[2], int2(p["stride"]), int2(p["padding"]), int2(p["dilation"]),
                         p["groups"].get<int64_t>())};
       }},
      {"conv2d_xt", [](const V& x, const json&) { return V{conv2d(x[0].transpose(2, 3), x[1], x[2], 1, 1)}; }},
      {"conv_transpose2d",
       [](const V& x, const json& p) {
         return V{conv_transpose2d(x[0], x[1], x[2], int2(p["stride"]), int2(p["padding"]), int2(p["output_padding"]),
                                   p["groups"].get<int64_t>(), int2(p["dilation"]))};
       }},
  };
  CHECK(kdtest::run_golden_file("golden_conv.json", table) >= 20);
}

TEST_CASE("conv: im2col + gemm equals the direct 7-loop convolution; col2im is the adjoint of im2col") {
  Generator gen(4);
  // one image and group: C=3, 5x6, kernel 2x3, stride (2, 1), padding (1, 2), dilation (1, 2)
  kernels::ConvGeometry g{3, 5, 6, 2, 3, 2, 1, 1, 2, 1, 2, 0, 0};
  g.OH = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.OW = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  const int64_t K = g.C * g.kh * g.kw, L = g.OH * g.OW;
  std::vector<float> x = to_float_vector(randn({g.C, g.H, g.W}, gen));
  std::vector<float> col(K * L);
  kernels::im2col(x.data(), g, col.data());
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j)
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t h = oh * g.sh - g.ph + i * g.dh, w = ow * g.sw - g.pw + j * g.dw;
            const float want = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x[(c * g.H + h) * g.W + w] : 0.f;
            REQUIRE(col[((c * g.kh + i) * g.kw + j) * L + oh * g.OW + ow] == want);
          }
  // <im2col(x), r> == <x, col2im(r)> for a random r
  std::vector<float> r = to_float_vector(randn({K, L}, gen));
  std::vector<float> back(x.size(), 0.f);
  kernels::col2im(r.data(), g, back.data());
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < K * L; ++i) lhs += (double)col[i] * r[i];
  for (size_t i = 0; i < x.size(); ++i) rhs += (double)x[i] * back[i];
  CHECK(lhs == doctest::Approx(rhs).epsilon(1e-5));
}

TEST_CASE("conv: conv_transpose2d is the backward-data of conv2d") {
  Generator gen(6);
  // <conv2d(x, w), y> == <x, conv_transpose2d(y, w)> with matching geometry
  Tensor x = randn({2, 4, 7, 6}, gen), w = randn({6, 2, 3, 3}, gen);
  Tensor y = conv2d(x, w, Tensor(), 2, 1, 1, 2);  // (2, 6, 4, 3)
  Tensor r = randn(y.shape(), gen);
  // 7 = (4-1)*2 - 2 + 3 + 0 ; 6 = (3-1)*2 - 2 + 3 + 1
  Tensor xt = conv_transpose2d(r, w, Tensor(), 2, 1, Int2(0, 1), 2);
  REQUIRE(xt.shape() == x.shape());
  CHECK(sum(mul(y, r)).item() == doctest::Approx(sum(mul(x, xt)).item()).epsilon(1e-4));
}

TEST_CASE("conv: gradcheck") {
  Generator gen(8);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  SUBCASE("conv2d: stride, padding, bias") {
    V in{leaf(randn({2, 2, 5, 5}, gen)), leaf(randn({3, 2, 3, 3}, gen)), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0], x[1], x[2], 2, 1); }, in);
  }
  SUBCASE("conv2d: dilation, non-square kernel and stride") {
    V in{leaf(randn({1, 2, 6, 5}, gen)), leaf(randn({2, 2, 2, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0], x[1], Tensor(), Int2(1, 2), Int2(1, 0), 2); }, in);
  }
  SUBCASE("conv2d: groups and depthwise") {
    V g2{leaf(randn({1, 4, 4, 4}, gen)), leaf(randn({2, 2, 3, 3}, gen)), leaf(randn({2}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0], x[1], x[2], 1, 1, 1, 2); }, g2);
    V dw{leaf(randn({2, 3, 4, 4}, gen)), leaf(randn({3, 1, 3, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0], x[1], Tensor(), 1, 1, 1, 3); }, dw);
  }
  SUBCASE("conv2d: 1x1 and a non-contiguous input") {
    V in{leaf(randn({2, 3, 3, 4}, gen)), leaf(randn({2, 3, 1, 1}, gen)), leaf(randn({2}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0], x[1], x[2]); }, in);
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0].transpose(2, 3), x[1], x[2], 2); }, in);
    V nc{leaf(randn({1, 4, 5, 4}, gen)), leaf(randn({2, 2, 3, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv2d(x[0].slice(1, 0, 4, 2), x[1], Tensor(), 1, 1); }, nc);
  }
  SUBCASE("conv_transpose2d: stride with output_padding, groups, dilation") {
    V in{leaf(randn({1, 2, 3, 3}, gen)), leaf(randn({2, 3, 3, 3}, gen)), leaf(randn({3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv_transpose2d(x[0], x[1], x[2], 2, 1, 1); }, in);
    V g2{leaf(randn({1, 4, 3, 2}, gen)), leaf(randn({4, 1, 2, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv_transpose2d(x[0], x[1], Tensor(), Int2(1, 2), 0, Int2(0, 1), 2); }, g2);
    V dl{leaf(randn({1, 2, 3, 3}, gen)), leaf(randn({2, 2, 2, 2}, gen))};
    CHECK_GRADCHECK([](const V& x) { return conv_transpose2d(x[0], x[1], Tensor(), 1, 0, 1, 1, 2); }, dl);
    CHECK_GRADCHECK([](const V& x) { return conv_transpose2d(x[0].transpose(2, 3), x[1], Tensor(), 2); }, dl);
  }
}

TEST_CASE("conv: errors name the problem") {
  Tensor x = zeros({1, 4, 5, 5});
  CHECK_THROWS_WITH_SUBSTR(conv2d(zeros({4, 5, 5}), zeros({2, 4, 3, 3})), "must be 4-D (B, C, H, W), got shape (4, 5, 5)");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 3, 3, 3})),
                           "the weight of shape (2, 3, 3, 3) expects 3 input channels (weight.shape[1] = 3 times groups = "
                           "1), but the input of shape (1, 4, 5, 5) has 4");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({3, 2, 3, 3}), Tensor(), 1, 0, 1, 3),
                           "input channels 4 (input shape (1, 4, 5, 5)) are not divisible by groups 3");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({3, 2, 3, 3}), Tensor(), 1, 0, 1, 2),
                           "output channels 3 (weight shape (3, 2, 3, 3)) are not divisible by groups 2");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 7, 3})), "output size <= 0");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 3, 3}), Tensor(), 1, 0, 3), "output size <= 0");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 3, 3}), zeros({3})), "bias must have shape (2)");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 3, 3}), Tensor(), 0), "stride must be positive");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 3, 3}), Tensor(), 1, -1), "padding must be non-negative");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x, zeros({2, 4, 3, 3}), Tensor(), 1, 0, 1, 0), "groups must be at least 1");
  CHECK_THROWS_WITH_SUBSTR(conv2d(x.to(DType::i64), zeros({2, 4, 3, 3})), "float32");
  CHECK_THROWS_WITH_SUBSTR(conv_transpose2d(x, zeros({3, 2, 3, 3})),
                           "the weight of shape (3, 2, 3, 3) (layout (Cin, Cout/groups, kh, kw)) expects 3 input channels, "
                           "but the input of shape (1, 4, 5, 5) has 4");
  CHECK_THROWS_WITH_SUBSTR(conv_transpose2d(x, zeros({4, 2, 3, 3}), Tensor(), 2, 0, 2),
                           "output_padding 2 in height must be non-negative and smaller than either the stride 2");
  CHECK_THROWS_WITH_SUBSTR(conv_transpose2d(x, zeros({4, 2, 3, 3}), Tensor(), 1, 0, 0, 3), "not divisible by groups 3");
  CHECK_THROWS_WITH_SUBSTR(conv_transpose2d(zeros({1, 4, 1, 1}), zeros({4, 2, 1, 1}), Tensor(), 1, 1), "output size <= 0");
  CHECK_THROWS_WITH_SUBSTR(conv_transpose2d(x, zeros({4, 2, 3, 3}), zeros({4})), "bias must have shape (2)");
}
