// The oneDNN backend (engine/backend/onednn.h) against the reference path on the same inputs:
// forward values, input/weight/bias gradients and BatchNorm running statistics, for conv2d,
// batch_norm, max/avg pooling and relu on awkward shapes (channels not a multiple of 8 or 16,
// batch 1, stride 2, groups and depthwise, padding, dilation, 1x1 kernels, non-square maps and
// kernels, non-contiguous inputs), plus one whole training step of a ResNet.
//
// Tolerances. oneDNN sums products in another order (blocked channels, its own GEMM), so the
// two paths agree to float32 rounding of that order, not bit for bit. Every comparison allows
//   |onednn - reference| <= 1e-4 * |reference| + 1e-5 * max|reference|
// (rtol 1e-4, plus an absolute slack of 1e-5 of the tensor's largest magnitude for elements
// that cancel to near zero). The whole-model step compares after ~20 layers of BatchNorm, which
// amplifies rounding differences, with 1e-3 / 1e-4 instead.
//
// Without oneDNN (no KDLAB_HAVE_DNNL) every case here is skipped with a MESSAGE.
#include <algorithm>
#include <cmath>

#include "engine/backend/backend.h"
#include "engine/backend/onednn.h"
#include "nn/models/model.h"
#include "test_util.h"

using namespace kd;
using backend::Backend;
using kdtest::BackendScope;

namespace {

bool skip_without_onednn() {
  if (backend::onednn_available()) return false;
  MESSAGE("kdlab was built without oneDNN (KDLAB_HAVE_DNNL undefined): the oneDNN backend tests are skipped");
  return true;
}

constexpr double kRtol = 1e-4, kScaledAtol = 1e-5;

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : to_float_vector(t)) m = std::max(m, (double)std::fabs(v));
  return m;
}

void check_close(const Tensor& got, const Tensor& want, const std::string& what, double rtol = kRtol,
                 double scaled_atol = kScaledAtol) {
  REQUIRE(got.defined() == want.defined());
  if (!want.defined()) return;
  const kdtest::Closeness c = kdtest::allclose(got, want, rtol, scaled_atol * std::max(1.0, max_abs(want)));
  INFO(what << ": " << c.msg);
  CHECK(c.ok);
}

// A fresh leaf with the values of t (and its requires_grad).
Tensor leaf_copy(const Tensor& t) {
  if (!t.defined()) return t;
  Tensor c = t.detach().clone();
  if (t.requires_grad()) c.requires_grad_();
  return c;
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// ref(inputs) under the cpu backend and dnn(inputs) under the onednn backend, on copies of the
// same inputs: the outputs, and the gradients of every input that requires grad after
// backpropagating the same random gradient, must agree. `inputs` may hold tensors the op changes
// in place (running statistics): those must agree afterwards too.
void check_agree(const std::string& what, const OpFn& ref, const OpFn& dnn, const std::vector<Tensor>& inputs,
                 uint64_t seed = 7) {
  INFO(what);
  std::vector<Tensor> ref_in, dnn_in;
  for (const Tensor& t : inputs) ref_in.push_back(leaf_copy(t)), dnn_in.push_back(leaf_copy(t));
  Tensor ref_out, dnn_out;
  {
    BackendScope scope(Backend::cpu);
    ref_out = ref(ref_in);
  }
  {
    BackendScope scope(Backend::onednn);
    dnn_out = dnn(dnn_in);
  }
  check_close(dnn_out, ref_out, "forward");
  for (size_t i = 0; i < inputs.size(); ++i)  // in-place updates (running statistics)
    if (inputs[i].defined() && !inputs[i].requires_grad()) check_close(dnn_in[i], ref_in[i], fmt::format("input {} after", i));
  if (!ref_out.requires_grad()) return;
  Generator gen(seed);
  Tensor gy = randn(ref_out.shape(), gen);
  {
    BackendScope scope(Backend::cpu);
    ref_out.backward(gy);
  }
  {
    BackendScope scope(Backend::onednn);
    dnn_out.backward(gy);
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad())
      check_close(dnn_in[i].grad(), ref_in[i].grad(), fmt::format("gradient of input {}", i));
}

// The same op through the dispatch of engine/ops under each backend.
void check_backends_agree(const std::string& what, const OpFn& f, const std::vector<Tensor>& inputs) {
  check_agree(what, f, f, inputs);
}

Tensor randn_grad(const Shape& shape, Generator& gen) { return randn(shape, gen).requires_grad_(); }

struct ConvCase {
  const char* name;
  Shape x, w;
  Int2 stride, padding, dilation;
  int64_t groups;
  bool bias;
};

}  // namespace

TEST_CASE("onednn: backend switch, names and errors") {
  CHECK(backend::parse_backend("cpu") == Backend::cpu);
  CHECK_THROWS_WITH_SUBSTR(backend::parse_backend("cuda"), "unknown backend 'cuda'");
  if (skip_without_onednn()) return;
  CHECK(backend::parse_backend("onednn") == Backend::onednn);
  BackendScope scope(Backend::onednn);
  CHECK(backend::choose_conv_path({{2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, 1}) == backend::ConvPath::onednn);
  CHECK(backend::choose_batch_norm_path({2, 3, 8, 8}, true) == backend::NormPath::reference);  // see backend.cpp
  backend::set_backend(Backend::cpu);
  CHECK(backend::choose_conv_path({{2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, 1}) == backend::ConvPath::im2col);
  CHECK(backend::choose_batch_norm_path({2, 3, 8, 8}, true) == backend::NormPath::reference);
}

TEST_CASE("onednn: conv2d forward, backward data, weights and bias agree with im2col") {
  if (skip_without_onednn()) return;
  const std::vector<ConvCase> cases = {
      {"3x3 pad 1, 5 -> 7 channels, non-square 9x7 map", {2, 5, 9, 7}, {7, 5, 3, 3}, 1, 1, 1, 1, true},
      {"batch 1, no bias", {1, 5, 9, 7}, {7, 5, 3, 3}, 1, 1, 1, 1, false},
      {"stride 2, 3 -> 17 channels (first layer)", {3, 3, 11, 10}, {17, 3, 3, 3}, 2, 1, 1, 1, true},
      {"stride 2, 20 -> 36 channels (blocked with tails)", {2, 20, 8, 8}, {36, 20, 3, 3}, 2, 1, 1, 1, false},
      {"1x1, stride 1", {2, 13, 5, 6}, {11, 13, 1, 1}, 1, 0, 1, 1, true},
      {"1x1, stride 2 (ResNet shortcut)", {2, 16, 8, 8}, {32, 16, 1, 1}, 2, 0, 1, 1, false},
      {"groups 2", {2, 6, 7, 7}, {10, 3, 3, 3}, 1, 1, 1, 2, true},
      {"depthwise 12 channels, stride 2", {2, 12, 9, 9}, {12, 1, 3, 3}, 2, 1, 1, 12, false},
      {"depthwise with multiplier 2", {1, 5, 6, 6}, {10, 1, 3, 3}, 1, 1, 1, 5, true},
      {"5x3 kernel, padding (2, 1), stride (1, 2)", {2, 4, 10, 9}, {6, 4, 5, 3}, Int2(1, 2), Int2(2, 1), 1, 1, true},
      {"dilation 2, padding 2", {2, 5, 9, 9}, {7, 5, 3, 3}, 1, 2, 2, 1, false},
      {"no padding, 32 -> 64 channels", {2, 32, 6, 6}, {64, 32, 3, 3}, 1, 0, 1, 1, false},
  };
  Generator gen(11);
  for (const ConvCase& c : cases) {
    std::vector<Tensor> in = {randn_grad(c.x, gen), randn_grad(c.w, gen),
                              c.bias ? randn_grad({c.w[0]}, gen) : Tensor()};
    check_backends_agree(c.name, [&](const std::vector<Tensor>& v) {
      return conv2d(v[0], v[1], v[2], c.stride, c.padding, c.dilation, c.groups);
    }, in);
  }
  // only some inputs requiring grad: backward-data alone, backward-weights alone
  Tensor x = randn({2, 5, 6, 6}, gen), w = randn({7, 5, 3, 3}, gen), b = randn({7}, gen);
  check_backends_agree("weight and bias only", [](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                       {x, w.clone().requires_grad_(), b.clone().requires_grad_()});
  check_backends_agree("input only", [](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                       {x.clone().requires_grad_(), w, b});
  check_backends_agree("bias only", [](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                       {x, w, b.clone().requires_grad_()});
}

TEST_CASE("onednn: conv2d on non-contiguous inputs and in inference mode") {
  if (skip_without_onednn()) return;
  Generator gen(12);
  // x given as the transpose of a (B, C, W, H) tensor: a non-contiguous view
  check_backends_agree("transposed input", [](const std::vector<Tensor>& v) {
    return conv2d(v[0].transpose(2, 3), v[1], v[2], 2, 1);
  }, {randn_grad({2, 6, 7, 9}, gen), randn_grad({9, 6, 3, 3}, gen), randn_grad({9}, gen)});
  // the same conv without gradients runs the forward_inference primitive
  Tensor x = randn({3, 10, 8, 8}, gen), w = randn({12, 10, 3, 3}, gen), b = randn({12}, gen);
  NoGradGuard no_grad;
  Tensor ref, dnn;
  {
    BackendScope s(Backend::cpu);
    ref = conv2d(x, w, b, 1, 1);
  }
  {
    BackendScope s(Backend::onednn);
    dnn = conv2d(x, w, b, 1, 1);
  }
  check_close(dnn, ref, "inference forward");
  CHECK(!onednn::conv_implementation({64, 16, 32, 32}, {16, 16, 3, 3}, 1, 1, 1, 1).empty());
}

TEST_CASE("onednn: conv2d gradcheck") {
  if (skip_without_onednn()) return;
  BackendScope scope(Backend::onednn);
  Generator gen(13);
  CHECK_GRADCHECK([](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], 2, 1); },
                  {randn_grad({2, 3, 5, 4}, gen), randn_grad({4, 3, 3, 3}, gen), randn_grad({4}, gen)});
  CHECK_GRADCHECK([](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], Tensor(), 1, 1, 1, 3); },
                  {randn_grad({1, 3, 4, 5}, gen), randn_grad({3, 1, 3, 3}, gen)});
}

TEST_CASE("onednn: batch_norm training and eval agree with the reference, running statistics included") {
  if (skip_without_onednn()) return;
  Generator gen(21);
  const std::vector<Shape> shapes = {{4, 5, 3, 7}, {1, 3, 2, 2}, {8, 16, 4, 4}, {6, 7}, {4, 6, 5}, {5, 17, 1, 1}};
  for (const Shape& xs : shapes) {
    const int64_t C = xs[1];
    for (bool training : {true, false}) {
      for (bool affine : {true, false}) {
        Tensor x = add(mul(randn(xs, gen), 2.0), 0.5).requires_grad_();  // mean 0.5, std 2
        Tensor w = affine ? add(randn({C}, gen), 1.0).requires_grad_() : Tensor();
        Tensor b = affine ? randn({C}, gen).requires_grad_() : Tensor();
        Tensor rm = randn({C}, gen), rv = add(rand({C}, gen), 0.5);  // running statistics, updated in place
        check_agree(
            fmt::format("shape {} training {} affine {}", shape_str(xs), training, affine),
            [training](const std::vector<Tensor>& v) { return batch_norm(v[0], v[1], v[2], v[3], v[4], training, 0.1, 1e-5); },
            [training](const std::vector<Tensor>& v) {
              return onednn::batch_norm(v[0], v[1], v[2], v[3], v[4], training, 0.1, 1e-5);
            },
            {x, w, b, rm, rv});
      }
    }
  }
  // training without running statistics; only the weight requiring grad
  Tensor x = randn({3, 4, 5, 5}, gen), w = randn({4}, gen).requires_grad_(), b = randn({4}, gen);
  check_agree(
      "no running statistics",
      [](const std::vector<Tensor>& v) { return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true); },
      [](const std::vector<Tensor>& v) { return onednn::batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
      {x, w, b});
}

TEST_CASE("onednn: batch_norm gradcheck") {
  if (skip_without_onednn()) return;
  BackendScope scope(Backend::onednn);
  Generator gen(22);
  CHECK_GRADCHECK([](const std::vector<Tensor>& v) {
    return onednn::batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5);
  },
                  {randn_grad({3, 2, 2, 3}, gen), randn_grad({2}, gen), randn_grad({2}, gen)});
}

TEST_CASE("onednn: max_pool2d and avg_pool2d agree with the reference") {
  if (skip_without_onednn()) return;
  Generator gen(31);
  struct PoolCase {
    const char* name;
    Shape x;
    Int2 kernel, stride, padding;
    bool ceil_mode, count_include_pad;
  };
  const std::vector<PoolCase> cases = {
      {"2x2 stride 2", {2, 5, 8, 6}, 2, 2, 0, false, true},
      {"3x3 stride 2 pad 1 (ResNet stem), batch 1", {1, 3, 9, 11}, 3, 2, 1, false, true},
      {"3x3 stride 2 pad 1, count_include_pad false", {2, 7, 9, 11}, 3, 2, 1, false, false},
      {"ceil_mode, odd map", {2, 4, 7, 9}, 2, 2, 0, true, true},
      {"ceil_mode with padding, count_include_pad false", {2, 4, 7, 8}, 3, 2, 1, true, false},
      {"non-square 3x2 kernel, stride (2, 1)", {2, 6, 8, 7}, Int2(3, 2), Int2(2, 1), Int2(1, 0), false, true},
      {"global 8x8 window", {3, 17, 8, 8}, 8, 8, 0, false, true},
  };
  for (const PoolCase& c : cases) {
    Tensor x = randn_grad(c.x, gen);
    check_backends_agree(std::string("max_pool2d ") + c.name, [&](const std::vector<Tensor>& v) {
      return max_pool2d(v[0], c.kernel, c.stride, c.padding, c.ceil_mode);
    }, {x});
    check_backends_agree(std::string("avg_pool2d ") + c.name, [&](const std::vector<Tensor>& v) {
      return avg_pool2d(v[0], c.kernel, c.stride, c.padding, c.ceil_mode, c.count_include_pad);
    }, {x});
  }
  // an average pool whose ceil_mode window runs past the padding stays on the reference path
  BackendScope scope(Backend::onednn);
  kernels::PoolGeometry g{7, 7, 4, 4, 2, 2, 2, 2, 0, 0};
  CHECK(backend::choose_pool_path(backend::PoolKind::avg, {1, 1, 7, 7}, g, true, true) == backend::PoolPath::reference);
  CHECK(backend::choose_pool_path(backend::PoolKind::avg, {1, 1, 7, 7}, g, true, false) == backend::PoolPath::onednn);
}

TEST_CASE("onednn: relu agrees with the reference") {
  if (skip_without_onednn()) return;
  Generator gen(41);
  // relu is not dispatched (the engine's SIMD kernel is as fast), so call the oneDNN one directly
  for (const Shape& s : std::vector<Shape>{{2, 5, 3, 7}, {1}, {33}, {4, 16, 8, 8}})
    check_agree(fmt::format("relu {}", shape_str(s)), [](const std::vector<Tensor>& v) { return relu(v[0]); },
                [](const std::vector<Tensor>& v) { return onednn::relu(v[0]); }, {randn_grad(s, gen)});
  check_agree("relu of a transposed view", [](const std::vector<Tensor>& v) { return relu(v[0].t()); },
              [](const std::vector<Tensor>& v) { return onednn::relu(v[0].t()); }, {randn_grad({3, 4}, gen)});
}

TEST_CASE("onednn: linear (inner product) forward, backward data, weights and bias agree with sgemm") {
  if (skip_without_onednn()) return;
  Generator gen(43);
  struct LinearCase {
    const char* name;
    Shape x, w;
    bool bias;
  };
  const LinearCase cases[] = {{"(5, 7) -> 3, bias", {5, 7}, {3, 7}, true},
                              {"batch 1, no bias", {1, 9}, {4, 9}, false},
                              {"3-D input (2, 4, 6) -> 10", {2, 4, 6}, {10, 6}, true},
                              {"a classifier: (64, 256) -> 100", {64, 256}, {100, 256}, true}};
  for (const LinearCase& c : cases) {
    const OpFn f = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); };
    check_backends_agree(c.name, f, {randn_grad(c.x, gen), randn_grad(c.w, gen), c.bias ? randn_grad({c.w[0]}, gen) : Tensor()});
    // only the weight needs a gradient (a frozen input), and only the input (a frozen layer)
    check_backends_agree(std::string(c.name) + ", weight gradient only", f,
                         {randn(c.x, gen), randn_grad(c.w, gen), c.bias ? randn({c.w[0]}, gen) : Tensor()});
    check_backends_agree(std::string(c.name) + ", input gradient only", f,
                         {randn_grad(c.x, gen), randn(c.w, gen), c.bias ? randn({c.w[0]}, gen) : Tensor()});
  }
  {  // inference mode and a non-contiguous input
    NoGradGuard no_grad;
    check_backends_agree("inference, transposed input", [](const std::vector<Tensor>& v) { return linear(v[0].t(), v[1], v[2]); },
                         {randn({5, 6}, gen), randn({3, 5}, gen), randn({3}, gen)});
  }
  BackendScope scope(Backend::onednn);
  CHECK_GRADCHECK([](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); },
                  {randn_grad({3, 4}, gen), randn_grad({2, 4}, gen), randn_grad({2}, gen)});
}

TEST_CASE("onednn: max_pool2d propagates NaN as PyTorch (through the reference kernel)") {
  if (skip_without_onednn()) return;
  BackendScope scope(Backend::onednn);
  Tensor x = from_vector(std::vector<float>{1.f, NAN, 3.f, 2.f, 0.f, 1.f, 5.f, 4.f}, {1, 2, 2, 2});
  Tensor y = max_pool2d(x, 2);  // (1, 2, 1, 1)
  CHECK(std::isnan(y.at({0, 0, 0, 0})));
  CHECK(y.at({0, 1, 0, 0}) == 5.f);
  CHECK(!onednn::max_pool2d(x, {2, 2, 1, 1, 2, 2, 2, 2, 0, 0}).defined());  // oneDNN declines NaN inputs
}

TEST_CASE("onednn: a whole ResNet training step agrees with the cpu backend") {
  if (skip_without_onednn()) return;
  Generator gen(51);
  Tensor x = randn({4, 3, 32, 32}, gen);
  Tensor labels = randint(0, 10, {4}, gen);
  auto step = [&](Backend b) {
    BackendScope scope(b);
    auto model = nn::create_model("resnet8", {10, 3, 32, 0});
    model->train();
    Tensor loss = cross_entropy(model->forward(x).logits, labels);
    loss.backward();
    return std::make_pair(loss, model);
  };
  auto [ref_loss, ref_model] = step(Backend::cpu);
  auto [dnn_loss, dnn_model] = step(Backend::onednn);
  CHECK(dnn_loss.item() == doctest::Approx(ref_loss.item()).epsilon(1e-4));
  const auto ref_params = ref_model->named_parameters(), dnn_params = dnn_model->named_parameters();
  REQUIRE(ref_params.size() == dnn_params.size());
  for (size_t i = 0; i < ref_params.size(); ++i)
    check_close(dnn_params[i].second.grad(), ref_params[i].second.grad(), "gradient of " + ref_params[i].first, 1e-3,
                1e-4);
  const auto ref_buffers = ref_model->named_buffers(), dnn_buffers = dnn_model->named_buffers();
  for (size_t i = 0; i < ref_buffers.size(); ++i)
    check_close(dnn_buffers[i].second, ref_buffers[i].second, "buffer " + ref_buffers[i].first, 1e-3, 1e-4);
}
