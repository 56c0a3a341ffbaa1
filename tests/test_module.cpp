// nn::Module and the layers: names, state dicts and their error reports, freezing, layers against
// PyTorch (golden_layers.json, weights from det_fill on both sides) and gradcheck through each
// layer's parameters, and the shared PyTorch-trained teacher loading strictly.
#include "nn/layers.h"
#include "nn/models/model.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
using kdtest::json;
using V = std::vector<Tensor>;

// A layer as built in the reference script, det-filled, in train or eval mode; returns its
// output plus the named buffers after the call.
template <typename L>
static V run_layer(std::shared_ptr<L> layer, const Tensor& x, bool train, std::vector<std::string> extra = {}) {
  kdtest::det_fill(*layer);
  layer->train(train);
  V out{layer->forward(x)};
  for (auto& name : extra)
    for (auto& [n, t] : layer->named_buffers())
      if (n == name) out.push_back(t.to(DType::f32));
  return out;
}

TEST_CASE("layers: golden values against torch.nn") {
  Generator gen(0);
  kdtest::GoldenTable table = {
      {"conv2d", [&](const V& x, const json&) { return run_layer(std::make_shared<nn::Conv2d>(3, 4, 3, gen, 2, 1), x[0], true); }},
      {"conv2d_g", [&](const V& x, const json&) {
         return run_layer(std::make_shared<nn::Conv2d>(4, 6, Int2(3, 1), gen, 1, Int2(1, 0), 1, 2, false), x[0], true);
       }},
      {"convt", [&](const V& x, const json&) { return run_layer(std::make_shared<nn::ConvTranspose2d>(4, 3, 4, gen, 2, 1), x[0], true); }},
      {"bn2d", [&](const V& x, const json&) {
         return run_layer(nn::BatchNorm2d(3), x[0], true, {"running_mean", "running_var", "num_batches_tracked"});
       }},
      {"bn2d_eval", [&](const V& x, const json&) { return run_layer(nn::BatchNorm2d(3), x[0], false); }},
      {"bn1d", [&](const V& x, const json& p) {
         return run_layer(nn::BatchNorm1d(5, 1e-5, p["momentum"].get<double>()), x[0], true, {"running_mean", "running_var"});
       }},
      {"linear", [&](const V& x, const json&) { return run_layer(std::make_shared<nn::Linear>(5, 3, gen), x[0], true); }},
      {"layernorm", [&](const V& x, const json&) { return run_layer(std::make_shared<nn::LayerNorm>(Shape{4, 5}), x[0], true); }},
      {"sequential", [&](const V& x, const json&) {
         auto seq = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Layer>>{
             std::make_shared<nn::Conv2d>(2, 3, 3, gen, 1, 1), nn::BatchNorm2d(3), std::make_shared<nn::ReLU>(),
             std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(12, 4, gen)});
         return run_layer(seq, x[0], true);
       }},
  };
  CHECK(kdtest::run_golden_file("golden_layers.json", table) == 9);
}

TEST_CASE("layers: gradcheck through every parameter") {
  Generator gen(1);
  auto check_layer = [&](nn::Layer& layer, const Tensor& x) {
    V inputs{x.detach().requires_grad_()};
    for (auto& p : layer.parameters()) inputs.push_back(p);
    CHECK_GRADCHECK([&](const V& in) { return layer.forward(in[0]); }, inputs);
  };
  nn::Conv2d conv(3, 2, 3, gen, 1, 1);
  check_layer(conv, randn({1, 3, 4, 5}, gen));
  nn::ConvTranspose2d convt(2, 3, 3, gen, 2, 1, 1);
  check_layer(convt, randn({1, 2, 3, 3}, gen));
  nn::Linear lin(4, 3, gen);
  check_layer(lin, randn({2, 4}, gen));
  nn::LayerNorm ln(Shape{4});
  check_layer(ln, randn({3, 4}, gen));
  auto bn = nn::BatchNorm2d(2);
  bn->eval();  // eval: a fixed function of the input (train mode is covered by golden values)
  check_layer(*bn, randn({2, 2, 3, 3}, gen));
  nn::MultiheadSelfAttention attn(4, 2, gen);
  check_layer(attn, randn({1, 3, 4}, gen));
}

// A toy module with a child, to check names and state-dict handling.
struct Toy : nn::Module {
  explicit Toy(Generator& gen) {
    w = register_parameter("w", randn({2, 3}, gen));
    buf = register_buffer("buf", zeros({3}));
    lin = register_module("lin", std::make_shared<nn::Linear>(3, 2, gen));
  }
  std::string type_name() const override { return "Toy"; }
  Tensor w, buf;
  std::shared_ptr<nn::Linear> lin;
};

TEST_CASE("module: dotted names, counts, freezing, state dict reports") {
  Generator gen(2);
  Toy toy(gen);
  std::vector<std::string> names;
  for (auto& [n, t] : toy.state_dict()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"w", "buf", "lin.weight", "lin.bias"});
  CHECK(toy.num_parameters() == 6 + 6 + 2);
  toy.lin->freeze();
  CHECK(toy.num_parameters(true) == 6);
  CHECK(!toy.parameter("lin.weight").requires_grad());
  toy.unfreeze();
  CHECK(toy.num_parameters(true) == 14);
  CHECK(toy.summary().find("Linear") != std::string::npos);
  toy.eval();
  CHECK(!toy.lin->is_training());

  Generator gen2(99);
  Toy other(gen2);
  other.load_state_dict(toy.state_dict());
  CHECK(to_float_vector(other.lin->weight) == to_float_vector(toy.lin->weight));

  nn::NamedTensors sd = toy.state_dict();
  sd.pop_back();                                // missing lin.bias
  sd.emplace_back("extra.weight", zeros({1}));  // unexpected
  CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(sd), "missing keys (in the model, not in the file) (1): lin.bias");
  CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(sd), "unexpected keys (in the file, not in the model) (1): extra.weight");
  nn::LoadReport rep = other.load_state_dict(sd, /*strict=*/false);
  CHECK(rep.missing == std::vector<std::string>{"lin.bias"});
  CHECK(rep.unexpected == std::vector<std::string>{"extra.weight"});
  nn::NamedTensors wrong = toy.state_dict();
  wrong[0].second = zeros({3, 2});
  CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(wrong, false), "w: model (2, 3) vs file (3, 2)");
  CHECK_THROWS_WITH_SUBSTR(toy.parameter("nope"), "no parameter named 'nope'");
}

TEST_CASE("model zoo: unknown names list the known ones; describe_model counts MACs") {
  CHECK_THROWS_WITH_SUBSTR(nn::create_model("resnet9000"), "known models: resnet8");
  auto m = nn::create_model("resnet8", {10, 3, 32, 0});
  nn::ModelInfo info = nn::describe_model(*m, {3, 32, 32});
  // hand count: stem, layer1 (2 convs 16->16 at 32x32), layer2 (3x3 16->32, 3x3 32->32, 1x1 16->32
  // at 16x16), layer3 (3x3 32->64, 3x3 64->64, 1x1 32->64 at 8x8), fc 64->10
  const int64_t expected = 16LL * 27 * 1024 + 2LL * 16 * 144 * 1024 + 32LL * 144 * 256 + 32LL * 288 * 256 +
                           32LL * 16 * 256 + 64LL * 288 * 64 + 64LL * 576 * 64 + 64LL * 32 * 64 + 64LL * 10;
  CHECK(info.macs_per_image == expected);
  CHECK(info.feats.size() == 4);
  CHECK(info.pooled == Shape{1, 64});
}

TEST_CASE("the shared PyTorch-trained resnet56 loads strictly") {
  std::string path = kdtest::shared_path("teachers/cifar10_resnet56.safetensors");
  if (!kdtest::file_exists(path)) {
    MESSAGE("skipped: " << path << " is not present (it is only on the development machines)");
    return;
  }
  auto model = nn::create_model("resnet56", {10, 3, 32, 0});
  nn::LoadReport rep = model->load_state_dict(nn::load_safetensors(path).tensors, /*strict=*/true);
  CHECK(rep.ok());
  CHECK(model->num_parameters() == 855770);
}
