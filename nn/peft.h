// peft.h: parameter-efficient fine-tuning, a few trainable parameters beside frozen layers.
//
// LoRA (Hu et al. 2021; semantics of microsoft/LoRA loralib/layers.py, and of HF PEFT for
// convolutions). A frozen layer with weight W0 gets a low-rank update:
//     h = W0 x + (alpha / r) * B A dropout(x)
//   Linear (d_in -> d_out): A (r, d_in), B (d_out, r)
//   Conv2d (C_in -> C_out, kernel k, groups g): A is a k x k convolution C_in -> g*r with the base
//     convolution's stride, padding, dilation and groups, B a 1 x 1 convolution g*r -> C_out with
//     groups g; so each group has its own pair of factors and the update keeps the base kernel's
//     shape (C_out, C_in/g, k, k): dW[o, i, :, :] = sum_rho B[o, rho] A[j r + rho, i, :, :] for o
//     in group j (loralib gets g > 1 wrong, issue #67).
//   A: Kaiming-uniform (a = sqrt(5), PyTorch's default, as loralib); B: zeros, so the wrapped model
//   starts equal to the base model.
//   Merge: W = W0 + (alpha / r) dW, and the branch is skipped; unmerge subtracts it again. Nothing
//   merges implicitly: eval() does not (loralib's eval() does, issues #34 and #61).
//   A fused qkv projection (the ViT's attn.qkv, output [q | k | v]) can take the update on some
//   of its slices only (`parts=q+v`, the LoRA paper's choice), as loralib's MergedLinear: each
//   chosen slice p has its own pair A_p (r, d_in), B_p (d/3, r), stacked in A (|parts| r, d_in)
//   and B (|parts| d/3, r); the other slices' rows of the update are 0.
//
// Residual adapters for CNNs (Rebuffi et al. 2017/2018, srebuffi/residual_adapters): a 1 x 1
// convolution beside a k x k one, same stride and groups,
//     y = conv_kxk(x) + conv_1x1(x)
//   zero-initialised here (so the wrapped model starts equal to the base), merged into the kernel's
//   centre tap (W[:, :, k/2, k/2] += W_1x1), which is exact when the padding keeps the centre tap
//   on the pixel the 1 x 1 reads (padding = dilation * (k - 1) / 2, odd k). The BatchNorm after
//   an adapted convolution is the task's own (trainable; its statistics keep running), as in the
//   paper's task-specific BN; `--train-only peft` trains it with the adapters.
//
// Bottleneck adapters for the ViT (type=houlsby or adaptformer; the default for a transformer
// block): h <- h + s * up(f(down(h))), down D -> m, up m -> D zero-initialised.
//   Houlsby et al. 2019: in series after the attention and after the MLP, f = GELU, s = 1; the
//   block's LayerNorms train with them.
//   AdaptFormer (Chen et al. 2022): parallel to the MLP on its input n = norm2(h),
//   m = MLP(n) + s * up(ReLU(down(n))), s = 0.1.
//   They are not linear, so they do not merge: a model with them is its base plus its adapters.
//
// Names. The wrapped layer keeps its parameters and their PyTorch names (layer3.0.conv2.weight);
// the branch's parameters are registered on the same layer beside them: lora_A, lora_B, adapter
// (layer3.0.conv2.lora_A), as loralib names them.
//
// Targets are chosen by name pattern (peft_targets): a pattern matches a layer's dotted name as a
// whole or as a suffix after a dot ("attn.qkv" matches "blocks.0.attn.qkv"); '*' matches any
// characters, dots included ("layer3.*.conv2", "mlp.*"); "*" alone matches every layer the method
// applies to.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace kd::nn {

// "lora:r=8,alpha=16,dropout=0.1,targets=attn.qkv+attn.proj,parts=q+v" or
// "adapter:targets=*" or "adapter:type=adaptformer,bottleneck=32" (kdlab's --peft SPEC); the
// fields absent keep these defaults (targets: "*").
struct PeftSpec {
  std::string kind;                   // "lora" or "adapter"
  int64_t r = 8;                      // LoRA rank
  double alpha = 8;                   // LoRA alpha (the update is scaled by alpha / r); default alpha = r
  double dropout = 0.0;               // on the LoRA branch's input, in training
  std::vector<std::string> targets;   // name patterns ("*": every layer the method applies to)
  std::string parts;                  // LoRA on a fused qkv Linear: "q+v", ... (empty: the whole output)
  std::string adapter_type;           // adapter: "" (residual for convolutions, houlsby for transformer
                                      // blocks) | residual | houlsby | adaptformer
  int64_t bottleneck = 32;            // houlsby / adaptformer: m
  double scale = -1;                  // houlsby / adaptformer: s (-1: 1 for houlsby, 0.1 for adaptformer)
  std::string to_string() const;
};
// Parses a --peft SPEC; errors name the bad field and the form.
PeftSpec parse_peft_spec(const std::string& text);

// Whether a layer's dotted name matches a target pattern (see above).
bool peft_name_matches(const std::string& pattern, const std::string& name);

// The LoRA branch of a Linear or Conv2d (the Branch interface of layers.h).
class LoraBranch : public Branch {
 public:
  Tensor delta(const Tensor& x, bool training) override;
  bool merged() const override { return merged_; }
  // W += scale * dW (merge) or W -= scale * dW (unmerge); errors when already in that state.
  void merge(Tensor& weight);
  void unmerge(Tensor& weight);
  Tensor delta_weight() const;  // (alpha / r) * dW, the base weight's shape

  Tensor A, B;   // the parameters registered on the layer as lora_A, lora_B
  double scale = 1;
  double dropout = 0;
  Generator gen{0};
  // Conv2d: the base convolution's geometry; linear: groups 0
  Int2 stride = 1, padding = 0, dilation = 1;
  int64_t groups = 0, r = 0;
  // qkv slices: the base output is `parts_total` equal slices; A and B stack one pair per slice in `parts`
  std::vector<int64_t> parts;
  int64_t parts_total = 0;

 private:
  bool merged_ = false;
};

// The residual adapter of a Conv2d (see above).
class ConvAdapterBranch : public Branch {
 public:
  Tensor delta(const Tensor& x, bool training) override;
  bool merged() const override { return merged_; }
  void merge(Tensor& weight);
  void unmerge(Tensor& weight);

  Tensor W;  // (C_out, C_in/g, 1, 1), registered as `adapter`
  Int2 stride = 1;
  int64_t groups = 1;

 private:
  bool merged_ = false;
};

// LoRA on one layer: registers lora_A, lora_B on it, freezes its weight and bias.
void add_lora(Linear& layer, const PeftSpec& spec, Generator& gen);
void add_lora(Conv2d& layer, const PeftSpec& spec, Generator& gen);
// A residual adapter on one k x k convolution (k > 1); freezes its weight and bias.
void add_conv_adapter(Conv2d& layer);

// Bottleneck adapters on one transformer block (spec.adapter_type houlsby or adaptformer); its
// LayerNorms become trainable.
void add_block_adapters(TransformerBlock& block, const PeftSpec& spec, Generator& gen);

// What apply_peft did.
struct PeftReport {
  std::vector<std::string> layers;      // the wrapped layers' names
  std::vector<std::string> task_norms;  // the BatchNorms made task-specific (adapters)
  int64_t trainable = 0, total = 0;     // parameter counts after wrapping (trainable: requires_grad)
  std::string to_string() const;
};

// Wraps every layer of `model` that the spec's targets match (LoRA: Linear and Conv2d; adapter:
// Conv2d with k > 1, and transformer blocks), after freezing the whole model; the layer named `classifier` (the model's
// classifier_name()) is never wrapped: set_trainable("head") trains it whole. Errors when no
// layer matches, naming the patterns and some of the model's layer names.
PeftReport apply_peft(Module& model, const PeftSpec& spec, uint64_t seed, const std::string& classifier = "");

// Merges (or unmerges) every branch of the model into its layer's weight.
void merge_peft(Module& model);
void unmerge_peft(Module& model);
// Removes every branch after merging it: the model is then a plain model of its kind, whose
// state dict has the base names only. Errors when the model has bottleneck adapters (not linear).
void merge_and_remove_peft(Module& model);

// What peft.safetensors stores: the PEFT parameters (lora_A, lora_B, adapter), every other
// parameter left trainable (the task BatchNorms of adapters, the classifier with --train-only
// head), and every buffer: the BatchNorms' running statistics, which follow the task's data during
// a PEFT run (it trains in training mode, as PyTorch would), so that the merged model is exactly
// the trained one.
NamedTensors peft_state(const Module& model);

// --train-only: "peft" (the branches, and the task BatchNorms of adapters), "head" (the branches
// too, and the classifier `head_prefix`, e.g. "fc" / "classifier" / "head"), "all" (everything).
void set_trainable(Module& model, const std::string& what, const std::string& head_prefix);

// A content hash of a state dict (FNV-1a 64 over names, shapes and bytes, as 16 hex digits):
// peft.safetensors records the base weights' hash, so that it is not merged into other weights.
std::string state_hash(const NamedTensors& state);

}  // namespace kd::nn
