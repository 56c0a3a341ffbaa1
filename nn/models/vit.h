// vit.h: a small Vision Transformer for CIFAR-sized images, with timm's module names.
//
//   vit_small_cifar: patch 4, width D = 192, 6 blocks, 3 heads, MLP ratio 4, ~2.7M parameters
//
// x (B, C, S, S), S = ModelConfig::image_size, a multiple of the patch size P:
//   patch_embed.proj: Conv2d(C -> D, kernel P, stride P), flattened to N = (S/P)^2 tokens
//   tokens = cat(cls_token, patches) + pos_embed                       (B, 1 + N, D)
//   blocks.0 .. blocks.{depth-1}: pre-norm TransformerBlocks (timm Block: norm1, attn.qkv,
//       attn.proj, norm2, mlp.fc1, mlp.fc2; LayerNorm eps 1e-6, exact GELU)
//   norm: LayerNorm(D, eps 1e-6); the class token of the normed sequence is `pooled` (B, D)
//   head: Linear(D -> K) -> logits
// No dropout or drop-path (timm's defaults are 0).
//
// Feature taps (a ViT has no feature maps; the taps are token sequences):
//   feats        = [t0, out of block 2, out of block 4, out of block 6]  each (B, 1 + N, D),
//                  t0 = the embedded tokens entering block 1 (patch embedding with the class
//                  token prepended and pos_embed added); blocks counted from 1
//   preact_feats = feats (a block ends in a residual sum, no activation)
//   pooled       = norm(last block output)[:, 0]  (B, D), the head's input
// Methods that expect (B, C, H, W) maps can drop token 0 and reshape (B, N, D) -> (B, D, S/P, S/P).
//
// State-dict names equal timm's VisionTransformer: cls_token, pos_embed, patch_embed.proj.*,
// blocks.i.*, norm.*, head.*. Init as timm's default mode: Linear weights trunc_normal std 0.02
// with bias 0; cls_token and pos_embed trunc_normal std 0.02; LayerNorm weight 1 and bias 0; the
// patch projection keeps PyTorch's Conv2d default. nn::init::trunc_normal_ cuts at +-2 std (so
// the drawn std is 0.88 * 0.02); timm's trunc_normal_(std=.02) cuts at +-2 absolute, which for
// std 0.02 never triggers.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

struct ViTConfig {
  int64_t patch_size = 4;
  int64_t embed_dim = 192;
  int64_t depth = 6;
  int64_t num_heads = 3;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  std::vector<int64_t> tap_blocks = {2, 4, 6};  // 1-based blocks whose outputs are feats[1..]
};

// timm's PatchEmbed: proj conv, then flatten to tokens.
class PatchEmbed : public Layer {
 public:
  PatchEmbed(int64_t in_channels, int64_t embed_dim, int64_t patch_size, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (B, C, H, W) -> (B, (H/P)(W/P), D)
  std::string type_name() const override { return "PatchEmbed"; }
  std::shared_ptr<Conv2d> proj;
};

class VisionTransformer : public Classifier {
 public:
  VisionTransformer(std::string name, const ViTConfig& vit, const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "head"; }

  Tensor cls_token;  // (1, 1, D)
  Tensor pos_embed;  // (1, 1 + N, D)
  std::shared_ptr<PatchEmbed> patch_embed;
  std::shared_ptr<Sequential> blocks;  // TransformerBlock "0".."depth-1"
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<Linear> head;
  ViTConfig vit;

 private:
  std::string name_;
  ModelConfig config_;
};

}  // namespace kd::nn
