// The CIFAR ViT (nn/models/vit.cpp) and its layers (nn::MultiheadSelfAttention,
// nn::TransformerBlock) against plain-torch references (tests/reference/gen_models_vit.py):
// golden values and gradients, gradcheck, state-dict layout, whole-model fingerprints, taps,
// init and errors.
#include <cmath>

#include "model_golden.h"
#include "nn/models/vit.h"

using namespace kd;
using kdtest::json;
using V = std::vector<Tensor>;

TEST_CASE("vit: attention and transformer block match PyTorch (values and all gradients)") {
  // The layers' weights are replaced by the fixture's input tensors, so the runner's input
  // gradients are the gradients of x and of every weight.
  kdtest::GoldenTable table = {
      {"attention",
       [](const V& x, const json& p) {
         const int64_t D = x[0].size(2);
         Generator gen(0);
         nn::MultiheadSelfAttention attn(D, p["heads"].get<int64_t>(), gen, /*qkv_bias=*/x[2].defined());
         attn.qkv->weight = x[1];
         attn.qkv->bias = x[2];
         attn.proj->weight = x[3];
         attn.proj->bias = x[4];
         // transposed_input: the same values through a non-contiguous (B, N, D) view
         Tensor in = p["transposed_input"].get<bool>() ? x[0].transpose(1, 2).contiguous().transpose(1, 2) : x[0];
         return V{attn.forward(in)};
       }},
      {"block",
       [](const V& x, const json& p) {
         const int64_t D = x[0].size(2);
         Generator gen(0);
         nn::TransformerBlock blk(D, p["heads"].get<int64_t>(), p["mlp_ratio"].get<double>(), gen);
         blk.norm1->weight = x[1];
         blk.norm1->bias = x[2];
         blk.attn->qkv->weight = x[3];
         blk.attn->qkv->bias = x[4];
         blk.attn->proj->weight = x[5];
         blk.attn->proj->bias = x[6];
         blk.norm2->weight = x[7];
         blk.norm2->bias = x[8];
         blk.mlp->fc1->weight = x[9];
         blk.mlp->fc1->bias = x[10];
         blk.mlp->fc2->weight = x[11];
         blk.mlp->fc2->bias = x[12];
         return V{blk.forward(x[0])};
       }},
  };
  CHECK(kdtest::run_golden_file("golden_attention.json", table) == 7);
}

// x followed by every parameter of m: gradcheck perturbs them in place, so it checks them all.
static V with_parameters(Tensor x, const nn::Module& m) {
  V in{x.requires_grad_()};
  for (const Tensor& p : m.parameters()) in.push_back(p);
  return in;
}

TEST_CASE("vit: gradcheck of MultiheadSelfAttention and TransformerBlock (dim 8, 2 heads, 3 tokens)") {
  Generator gen(11);
  SUBCASE("attention") {
    nn::MultiheadSelfAttention attn(8, 2, gen);
    V in = with_parameters(randn({2, 3, 8}, gen), attn);
    CHECK(in.size() == 5);
    CHECK_GRADCHECK([&](const V& v) { return attn.forward(v[0]); }, in);
  }
  SUBCASE("attention without qkv bias, non-contiguous input") {
    nn::MultiheadSelfAttention attn(8, 2, gen, /*qkv_bias=*/false);
    V in = with_parameters(randn({2, 8, 3}, gen), attn);
    CHECK(in.size() == 4);
    CHECK_GRADCHECK([&](const V& v) { return attn.forward(v[0].transpose(1, 2)); }, in);
  }
  SUBCASE("transformer block") {
    nn::TransformerBlock blk(8, 2, 4.0, gen);
    V in = with_parameters(randn({2, 3, 8}, gen), blk);
    CHECK(in.size() == 13);
    CHECK_GRADCHECK([&](const V& v) { return blk.forward(v[0]); }, in);
  }
  SUBCASE("transformer block, one sample, a sliced (non-contiguous) input") {
    nn::TransformerBlock blk(8, 2, 2.0, gen);
    V in = with_parameters(randn({1, 6, 8}, gen), blk);
    CHECK_GRADCHECK([&](const V& v) { return blk.forward(v[0].slice(1, 0, 6, 2)); }, in);
  }
}

TEST_CASE("vit: attention and block key names follow timm") {
  Generator gen(1);
  nn::TransformerBlock blk(8, 2, 4.0, gen);
  std::vector<std::string> names;
  for (auto& [n, t] : blk.state_dict()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                          "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                          "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"});
  CHECK(blk.parameter("mlp.fc1.weight").shape() == Shape{32, 8});
  CHECK(blk.norm1->eps == 1e-6);
}

TEST_CASE("vit: state-dict names, shapes and parameter counts equal PyTorch's") {
  json fx = kdtest::load_model_fixture("golden_models_vit.json");
  const json& models = fx.at("models");
  REQUIRE(models.size() == 2);
  kdtest::check_state_layout(*nn::create_model("vit_small_cifar"), models.at("vit_small_cifar"), "vit_small_cifar");
  nn::ModelConfig cfg;
  cfg.num_classes = 10;
  cfg.in_channels = 1;
  cfg.image_size = 28;
  auto m = nn::create_model("vit_small_cifar", cfg);
  kdtest::check_state_layout(*m, models.at("vit_small_cifar_c10_1x28"), "vit_small_cifar_c10_1x28");
  CHECK(m->parameter("pos_embed").shape() == Shape{1, 50, 192});
  CHECK(nn::create_model("vit_small_cifar")->num_parameters() == 2710948);
}

TEST_CASE("vit: outputs, taps and gradients match PyTorch") {
  json fx = kdtest::load_model_fixture("golden_models_vit.json");
  CHECK(fx.at("runs").size() == 2);
  for (const json& run : fx.at("runs")) {
    SUBCASE(run.at("name").get<std::string>().c_str()) { kdtest::check_model_run(run); }
  }
}

TEST_CASE("vit: feature taps (token sequences) and pooled") {
  auto m = std::dynamic_pointer_cast<nn::VisionTransformer>(nn::create_model("vit_small_cifar"));
  REQUIRE(m);
  m->eval();
  NoGradGuard no_grad;
  Generator gen(3);
  nn::ModelOutput o = m->forward(randn({2, 3, 32, 32}, gen));
  REQUIRE(o.feats.size() == 4);
  REQUIRE(o.preact_feats.size() == 4);
  for (int i = 0; i < 4; ++i) {
    CHECK(o.feats[i].shape() == Shape{2, 65, 192});
    CHECK(o.preact_feats[i].is_same(o.feats[i]));
  }
  CHECK(o.pooled.shape() == Shape{2, 192});
  CHECK(o.logits.shape() == Shape{2, 100});
  // feats[3] is the last block's output; pooled is its normed class token
  Tensor normed = m->norm->forward(o.feats[3]).select(1, 0);
  CHECK(kdtest::allclose(o.pooled, normed, 1e-5, 1e-6).ok);
  // feats[1] = blocks 1-2 applied to feats[0]
  Tensor t = (*m->blocks)[1].forward((*m->blocks)[0].forward(o.feats[0]));
  CHECK(kdtest::allclose(o.feats[1], t, 1e-5, 1e-5).ok);
  // feats[0] = [cls; patches] + pos_embed
  Tensor x = randn({1, 3, 32, 32}, gen);
  Tensor f0 = m->forward(x).feats[0];
  CHECK(kdtest::allclose(f0.slice(1, 0, 1), add(m->cls_token, m->pos_embed.slice(1, 0, 1)), 1e-6, 1e-6).ok);
  Tensor patches = m->patch_embed->forward(x);  // (1, 64, 192)
  CHECK(kdtest::allclose(f0.slice(1, 1, 65), add(patches, m->pos_embed.slice(1, 1, 65)), 1e-6, 1e-6).ok);
}

TEST_CASE("vit: timm's initialisation from the config seed") {
  nn::ModelConfig cfg;
  cfg.seed = 7;
  auto a = nn::create_model("vit_small_cifar", cfg);
  auto b = nn::create_model("vit_small_cifar", cfg);
  cfg.seed = 8;
  auto c = nn::create_model("vit_small_cifar", cfg);
  for (auto& [n, t] : a->named_parameters()) CHECK_MESSAGE(kdtest::allclose(t, b->parameter(n), 0, 0).ok, n);
  CHECK_FALSE(kdtest::allclose(a->parameter("blocks.3.attn.qkv.weight"), c->parameter("blocks.3.attn.qkv.weight")).ok);
  // std of N(0, 0.02) truncated to +-2 std: 0.02 * 0.8796
  const double tstd = 0.02 * 0.8796;
  for (auto& [n, t] : a->named_parameters()) {
    INFO(n);
    const bool is_norm = n.rfind("norm", 0) == 0 || n.find(".norm") != std::string::npos;
    if (n == "cls_token" || n == "pos_embed" || (!is_norm && t.dim() == 2)) {  // tokens, Linear weights
      CHECK(max(abs(t)).item() <= 0.04 + 1e-6);
      if (t.numel() >= 2000) CHECK(std::fabs(std::sqrt(var(t).item()) / tstd - 1.0) < 0.1);
    } else if (n.rfind("patch_embed", 0) == 0) {  // PyTorch's Conv2d default: U(+-1/sqrt(48))
      CHECK(max(abs(t)).item() <= 1.0 / std::sqrt(48.0) + 1e-6);
      CHECK(max(abs(t)).item() > 0.0);
    } else if (is_norm && n.size() >= 6 && n.compare(n.size() - 6, 6, "weight") == 0) {  // LayerNorm 1
      CHECK(min(t).item() == 1.0);
      CHECK(max(t).item() == 1.0);
    } else {  // LayerNorm and Linear biases 0
      CHECK(max(abs(t)).item() == 0.0);
    }
  }
}

TEST_CASE("vit: errors name the problem") {
  Generator gen(6);
  auto m = nn::create_model("vit_small_cifar");
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 3, 28, 28}, gen)), "expected input (B, 3, 32, 32), got (2, 3, 28, 28)");
  CHECK_THROWS_WITH_SUBSTR(m->forward(randn({2, 1, 32, 32}, gen)), "ModelConfig::image_size and in_channels");
  nn::ModelConfig cfg;
  cfg.image_size = 30;
  CHECK_THROWS_WITH_SUBSTR(nn::create_model("vit_small_cifar", cfg), "image_size 30 must be a multiple of the patch size 4");
  nn::ViTConfig v;
  v.num_heads = 5;
  CHECK_THROWS_WITH_SUBSTR(nn::VisionTransformer("bad", v, nn::ModelConfig{}), "embed_dim 192 must be divisible by num_heads 5");
  v = nn::ViTConfig{};
  v.tap_blocks = {2, 7};
  CHECK_THROWS_WITH_SUBSTR(nn::VisionTransformer("bad", v, nn::ModelConfig{}), "feature tap at block 7");
  nn::MultiheadSelfAttention attn(8, 2, gen);
  CHECK_THROWS_WITH_SUBSTR(attn.forward(randn({2, 3, 6}, gen)), "attention expects (B, N, 8), got (2, 3, 6)");
  CHECK_THROWS_WITH_SUBSTR(nn::MultiheadSelfAttention(8, 3, gen), "dim 8 must be divisible by num_heads 3");
}
