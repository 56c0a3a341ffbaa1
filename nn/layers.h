// layers.h: the standard layers, each a Module with forward(Tensor) -> Tensor.
//
// Parameter and buffer names match PyTorch (torch.nn) so state dicts line up; transformer
// pieces use timm's names (qkv, proj, norm1, mlp.fc1, ...). Every constructor that draws
// initial weights takes an explicit Generator.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "engine/generator.h"
#include "engine/ops.h"
#include "nn/module.h"

namespace kd::nn {

// A module with one input and one output: what Sequential chains.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// A trainable branch beside a Linear or Conv2d (PEFT, nn/peft.h: LoRA, the residual adapter):
// the layer computes y = base(x) + branch.delta(x), unless the branch is merged into its weight.
// The branch's parameters are registered on the layer itself (lora_A, lora_B, adapter).
class Branch {
 public:
  virtual ~Branch() = default;
  virtual Tensor delta(const Tensor& x, bool training) = 0;
  virtual bool merged() const = 0;
};

class Conv2d : public Layer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Int2 kernel, Generator& gen, Int2 stride = 1, Int2 padding = 0,
         Int2 dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) override;  // (B, Cin, H, W) -> (B, Cout, H', W')
  std::string type_name() const override { return "Conv2d"; }
  Tensor weight, bias;  // (Cout, Cin/groups, kh, kw), (Cout) or undefined
  Int2 stride, padding, dilation;
  int64_t groups;
  std::shared_ptr<Branch> branch;  // PEFT (nn/peft.h); null: none
};

class ConvTranspose2d : public Layer {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Int2 kernel, Generator& gen, Int2 stride = 1,
                  Int2 padding = 0, Int2 output_padding = 0, int64_t groups = 1, bool bias = true, Int2 dilation = 1);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ConvTranspose2d"; }
  Tensor weight, bias;  // (Cin, Cout/groups, kh, kw), (Cout)
  Int2 stride, padding, output_padding, dilation;
  int64_t groups;
};

// BatchNorm1d and BatchNorm2d are the same computation over dim 1; the name is for printing.
class BatchNorm : public Layer {
 public:
  BatchNorm(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
            std::string kind = "BatchNorm2d");
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return kind_; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;

 private:
  std::string kind_;
};
inline std::shared_ptr<BatchNorm> BatchNorm2d(int64_t c, double eps = 1e-5, double momentum = 0.1) {
  return std::make_shared<BatchNorm>(c, eps, momentum, true, "BatchNorm2d");
}
inline std::shared_ptr<BatchNorm> BatchNorm1d(int64_t c, double eps = 1e-5, double momentum = 0.1) {
  return std::make_shared<BatchNorm>(c, eps, momentum, true, "BatchNorm1d");
}

class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)
  std::string type_name() const override { return "Linear"; }
  Tensor weight, bias;  // (out, in), (out)
  std::shared_ptr<Branch> branch;  // PEFT (nn/peft.h); null: none
};

class LayerNorm : public Layer {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LayerNorm"; }
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;
};

class ReLU : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};
class ReLU6 : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return relu6(x); }
  std::string type_name() const override { return "ReLU6"; }
};
class GELU : public Layer {
 public:
  explicit GELU(bool tanh_approximation = false) : tanh_(tanh_approximation) {}
  Tensor forward(const Tensor& x) override { return gelu(x, tanh_); }
  std::string type_name() const override { return "GELU"; }

 private:
  bool tanh_;
};
class Identity : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

class MaxPool2d : public Layer {
 public:
  MaxPool2d(Int2 kernel, std::optional<Int2> stride = std::nullopt, Int2 padding = 0, bool ceil_mode = false)
      : kernel(kernel), stride(stride), padding(padding), ceil_mode(ceil_mode) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel, stride, padding, ceil_mode); }
  std::string type_name() const override { return "MaxPool2d"; }
  Int2 kernel;
  std::optional<Int2> stride;
  Int2 padding;
  bool ceil_mode;
};

class AvgPool2d : public Layer {
 public:
  AvgPool2d(Int2 kernel, std::optional<Int2> stride = std::nullopt, Int2 padding = 0, bool ceil_mode = false,
            bool count_include_pad = true)
      : kernel(kernel), stride(stride), padding(padding), ceil_mode(ceil_mode), count_include_pad(count_include_pad) {}
  Tensor forward(const Tensor& x) override {
    return avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad);
  }
  std::string type_name() const override { return "AvgPool2d"; }
  Int2 kernel;
  std::optional<Int2> stride;
  Int2 padding;
  bool ceil_mode, count_include_pad;
};

class AdaptiveAvgPool2d : public Layer {
 public:
  explicit AdaptiveAvgPool2d(Int2 output_size) : output_size(output_size) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  Int2 output_size;
};

// Dropout owns its generator (seeded at construction) so that runs are reproducible.
class Dropout : public Layer {
 public:
  explicit Dropout(double p = 0.5, uint64_t seed = 0) : p(p), gen(seed) {}
  Tensor forward(const Tensor& x) override { return dropout(x, p, is_training(), gen); }
  std::string type_name() const override { return "Dropout"; }
  double p;
  Generator gen;
};

class Flatten : public Layer {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }
  std::string type_name() const override { return "Flatten"; }
  int64_t start_dim, end_dim;
};

// Children named "0", "1", ... as torch.nn.Sequential.
// conv -> batch norm (-> ReLU), the unit of every CIFAR CNN. Whenever a gradient is needed, or
// the batch norm is in training mode, this is exactly relu(bn(conv(x))) (or bn(conv(x))). In eval
// mode with no gradient (a teacher's forward pass, evaluation, inference) the batch norm is a
// fixed per-channel affine map, so it is folded into the convolution:
//     s = gamma / sqrt(running_var + eps)
//     W' = W * s          (each output channel's filter scaled)
//     b' = beta + (b - running_mean) * s
// and one conv2d_inference computes relu(conv(x; W', b')): no batch-norm pass over the output and,
// on the oneDNN backend, no separate ReLU pass either (a post-op). Results agree with the unfused
// form to float rounding (tests/test_conv_bn_fusion.cpp).
// set_conv_bn_fusion(false), or KDLAB_FUSE_CONV_BN=0 in the environment, turns the folding off
// (for comparisons); KDLAB_VERBOSE=1 logs each folded shape once.
Tensor conv_bn(Conv2d& conv, BatchNorm& bn, const Tensor& x, bool relu);
void set_conv_bn_fusion(bool on);
bool conv_bn_fusion();

// A chain of layers. In eval mode without gradients, each Conv2d -> BatchNorm (-> ReLU) run of the
// chain goes through conv_bn (folded); otherwise every layer runs on its own.
class Sequential : public Layer {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Layer>> layers);
  void push_back(std::shared_ptr<Layer> layer);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) const { return *layers_.at(i); }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

// Multi-head self-attention with timm's layout: qkv (Linear D -> 3D) and proj (Linear D -> D).
// x (B, N, D) -> (B, N, D). attention = softmax(q k^T / sqrt(head_dim)).
class MultiheadSelfAttention : public Layer {
 public:
  MultiheadSelfAttention(int64_t dim, int64_t num_heads, Generator& gen, bool qkv_bias = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Attention"; }
  std::shared_ptr<Linear> qkv, proj;
  int64_t dim, num_heads;
};

// timm's Mlp: fc1 -> GELU -> fc2.
class Mlp : public Layer {
 public:
  Mlp(int64_t dim, int64_t hidden, Generator& gen);
  Tensor forward(const Tensor& x) override { return fc2->forward(gelu(fc1->forward(x))); }
  std::string type_name() const override { return "Mlp"; }
  std::shared_ptr<Linear> fc1, fc2;
};

// A bottleneck adapter (PEFT, nn/peft.h): scale * up(act(down(h))), down D -> m, up m -> D with
// up zero-initialised (so a block with adapters starts equal to the block without).
class BottleneckAdapter : public Layer {
 public:
  BottleneckAdapter(int64_t dim, int64_t bottleneck, Generator& gen, bool relu, double scale);
  Tensor forward(const Tensor& h) override;
  std::string type_name() const override { return "Adapter"; }
  std::shared_ptr<Linear> down, up;
  bool relu;     // ReLU (AdaptFormer) or GELU (Houlsby)
  double scale;  // s
};

// Pre-norm transformer block (timm Block): x + attn(norm1(x)), then x + mlp(norm2(x)) with
// mlp = fc1 -> GELU -> fc2. LayerNorm eps 1e-6 as timm's ViT.
// With PEFT adapters (nn/peft.h): Houlsby's in series, a = attn(.) + adapter_attn(attn(.)) and
// m = mlp(.) + adapter_mlp(mlp(.)); AdaptFormer's in parallel to the MLP, m = mlp(n) + adapter_par(n)
// with n = norm2(h). Null: none.
class TransformerBlock : public Layer {
 public:
  TransformerBlock(int64_t dim, int64_t num_heads, double mlp_ratio, Generator& gen, bool qkv_bias = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Block"; }
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<MultiheadSelfAttention> attn;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<BottleneckAdapter> adapter_attn, adapter_mlp, adapter_par;
};

}  // namespace kd::nn
