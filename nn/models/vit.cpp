#include "nn/models/vit.h"

#include <algorithm>

#include "nn/init.h"
#include "nn/models/zoo.h"

namespace kd::nn {

PatchEmbed::PatchEmbed(int64_t in_channels, int64_t embed_dim, int64_t patch_size, Generator& gen) {
  proj = register_module("proj", std::make_shared<Conv2d>(in_channels, embed_dim, patch_size, gen, patch_size));
}

Tensor PatchEmbed::forward(const Tensor& x) {
  Tensor h = proj->forward(x);          // (B, D, H/P, W/P)
  return h.flatten(2).transpose(1, 2);  // (B, N, D), tokens in row-major patch order
}

VisionTransformer::VisionTransformer(std::string name, const ViTConfig& v, const ModelConfig& config)
    : vit(v), name_(std::move(name)), config_(config) {
  KD_CHECK(v.patch_size > 0 && config.image_size % v.patch_size == 0,
           "{}: image_size {} must be a multiple of the patch size {}", name_, config.image_size, v.patch_size);
  KD_CHECK(v.depth > 0 && v.num_heads > 0 && v.embed_dim % v.num_heads == 0,
           "{}: embed_dim {} must be divisible by num_heads {} (depth {})", name_, v.embed_dim, v.num_heads, v.depth);
  for (int64_t b : v.tap_blocks)
    KD_CHECK(b >= 1 && b <= v.depth, "{}: feature tap at block {} is outside blocks 1..{}", name_, b, v.depth);
  Generator gen(config.seed);
  const int64_t D = v.embed_dim, grid = config.image_size / v.patch_size, N = grid * grid;

  patch_embed = register_module("patch_embed", std::make_shared<PatchEmbed>(config.in_channels, D, v.patch_size, gen));
  cls_token = register_parameter("cls_token", zeros({1, 1, D}));
  pos_embed = register_parameter("pos_embed", zeros({1, 1 + N, D}));
  blocks = std::make_shared<Sequential>();
  for (int64_t i = 0; i < v.depth; ++i)
    blocks->push_back(std::make_shared<TransformerBlock>(D, v.num_heads, v.mlp_ratio, gen, v.qkv_bias));
  register_module("blocks", blocks);
  norm = register_module("norm", std::make_shared<LayerNorm>(Shape{D}, 1e-6));
  head = register_module("head", std::make_shared<Linear>(D, config.num_classes, gen));

  // timm's init: tokens and every Linear trunc_normal(0.02), Linear biases 0; LayerNorms are
  // already 1 / 0 and the patch conv keeps PyTorch's default.
  init::trunc_normal_(pos_embed, 0.02, gen);
  init::trunc_normal_(cls_token, 0.02, gen);
  for (const auto& [mname, m] : named_modules()) {
    if (const auto* lin = dynamic_cast<const Linear*>(m)) {
      Tensor w = lin->weight, b = lin->bias;  // handles sharing the parameters' storage
      init::trunc_normal_(w, 0.02, gen);
      if (b.defined()) init::constant_(b, 0.0);
    }
  }
}

ModelOutput VisionTransformer::forward(const Tensor& x) {
  const int64_t S = config_.image_size;
  KD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels && x.size(2) == S && x.size(3) == S,
           "{}: expected input (B, {}, {}, {}), got {}; the position embedding fixes the image size, set "
           "ModelConfig::image_size and in_channels to the data's",
           name_, config_.in_channels, S, S, shape_str(x.shape()));
  const int64_t B = x.size(0), D = vit.embed_dim;
  Tensor patches = patch_embed->forward(x);                  // (B, N, D)
  Tensor cls = cls_token.expand({B, 1, D});                  // (B, 1, D)
  Tensor t = add(cat({cls, patches}, 1), pos_embed);         // (B, 1 + N, D)

  ModelOutput o;
  o.feats.push_back(t);
  for (int64_t i = 0; i < (int64_t)blocks->size(); ++i) {
    t = (*blocks)[i].forward(t);  // (B, 1 + N, D)
    if (std::find(vit.tap_blocks.begin(), vit.tap_blocks.end(), i + 1) != vit.tap_blocks.end()) o.feats.push_back(t);
  }
  o.preact_feats = o.feats;
  o.pooled = norm->forward(t).select(1, 0);  // (B, D), the class token
  o.logits = head->forward(o.pooled);        // (B, K)
  return o;
}

// ---------------------------------------------------------------- registry

void add_vit_models(std::vector<ModelEntry>& table) {
  table.push_back({"vit_small_cifar", "ViT for 32x32 (patch 4, width 192, 6 blocks, 3 heads, MLP 4x), timm names",
                   [](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                     return std::make_shared<VisionTransformer>("vit_small_cifar", ViTConfig{}, cfg);
                   }});
}

}  // namespace kd::nn
