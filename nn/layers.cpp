#include "nn/layers.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/autograd.h"
#include "nn/init.h"

namespace kd::nn {

// ---------------------------------------------------------------- Conv2d

Conv2d::Conv2d(int64_t cin, int64_t cout, Int2 k, Generator& gen, Int2 stride, Int2 padding, Int2 dilation,
               int64_t groups, bool has_bias)
    : stride(stride), padding(padding), dilation(dilation), groups(groups) {
  KD_CHECK(groups > 0 && cin % groups == 0 && cout % groups == 0,
           "Conv2d: in_channels {} and out_channels {} must both be divisible by groups {}", cin, cout, groups);
  Tensor w = empty({cout, cin / groups, k.h, k.w});
  init::pytorch_default_weight_(w, gen);
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = empty({cout});
    init::pytorch_default_bias_(b, init::fan_in(w), gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  Tensor y = conv2d(x, weight, bias, stride, padding, dilation, groups);
  if (branch && !branch->merged()) y = add(y, branch->delta(x, is_training()));  // PEFT: + the branch
  return y;
}

// ---------------------------------------------------------------- ConvTranspose2d

ConvTranspose2d::ConvTranspose2d(int64_t cin, int64_t cout, Int2 k, Generator& gen, Int2 stride, Int2 padding,
                                 Int2 output_padding, int64_t groups, bool has_bias, Int2 dilation)
    : stride(stride), padding(padding), output_padding(output_padding), dilation(dilation), groups(groups) {
  KD_CHECK(groups > 0 && cin % groups == 0 && cout % groups == 0,
           "ConvTranspose2d: in_channels {} and out_channels {} must both be divisible by groups {}", cin, cout, groups);
  Tensor w = empty({cin, cout / groups, k.h, k.w});
  init::pytorch_default_weight_(w, gen);  // PyTorch computes fan_in from dim 1 here too
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = empty({cout});
    init::pytorch_default_bias_(b, init::fan_in(w), gen);
    bias = register_parameter("bias", b);
  }
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  return conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation);
}

// ---------------------------------------------------------------- BatchNorm

BatchNorm::BatchNorm(int64_t c, double eps, double momentum, bool affine, std::string kind)
    : eps(eps), momentum(momentum), kind_(std::move(kind)) {
  if (affine) {
    weight = register_parameter("weight", ones({c}));
    bias = register_parameter("bias", zeros({c}));
  }
  running_mean = register_buffer("running_mean", zeros({c}));
  running_var = register_buffer("running_var", ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
}

Tensor BatchNorm::forward(const Tensor& x) {
  if (is_training()) num_batches_tracked.set({}, num_batches_tracked.item() + 1);
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

// ---------------------------------------------------------------- conv -> batch norm (-> ReLU)

namespace {
bool fusion_from_env() {
  const char* v = std::getenv("KDLAB_FUSE_CONV_BN");
  return !(v && std::string(v) == "0");
}
std::atomic<bool> g_conv_bn_fusion{fusion_from_env()};
}  // namespace

void set_conv_bn_fusion(bool on) { g_conv_bn_fusion = on; }
bool conv_bn_fusion() { return g_conv_bn_fusion; }

Tensor conv_bn(Conv2d& conv, BatchNorm& bn, const Tensor& x, bool relu) {
  auto needs_grad = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
  const bool gradient = grad_enabled() && (needs_grad(x) || needs_grad(conv.weight) || needs_grad(conv.bias) ||
                                           needs_grad(bn.weight) || needs_grad(bn.bias));
  const bool branch = conv.branch && !conv.branch->merged();  // PEFT beside the convolution: not folded
  if (!g_conv_bn_fusion || bn.is_training() || gradient || branch) {  // the plain chain
    Tensor y = bn.forward(conv.forward(x));
    return relu ? kd::relu(y) : y;
  }
  NoGradGuard no_grad;
  const int64_t C = conv.weight.size(0);
  KD_CHECK(bn.running_mean.numel() == C,
           "conv_bn: the batch norm has {} channels but the convolution before it outputs {}; they must match",
           bn.running_mean.numel(), C);
  // s = gamma / sqrt(running_var + eps); W' = W * s per output channel; b' = beta + (b - running_mean) * s
  Tensor s = rsqrt(bn.running_var + bn.eps);                         // (C)
  if (bn.weight.defined()) s = s * bn.weight;                        // (C)
  Tensor w = conv.weight * s.reshape({C, 1, 1, 1});                  // (Cout, Cin/G, kh, kw)
  Tensor b = conv.bias.defined() ? conv.bias - bn.running_mean : neg(bn.running_mean);  // (C)
  b = b * s;
  if (bn.bias.defined()) b = b + bn.bias;
  return conv2d_inference(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups, relu);
}

// ---------------------------------------------------------------- Linear

Linear::Linear(int64_t in, int64_t out, Generator& gen, bool has_bias) {
  Tensor w = empty({out, in});
  init::pytorch_default_weight_(w, gen);
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = empty({out});
    init::pytorch_default_bias_(b, in, gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Linear::forward(const Tensor& x) {
  Tensor y = linear(x, weight, bias);
  if (branch && !branch->merged()) y = add(y, branch->delta(x, is_training()));  // PEFT: + the branch
  return y;
}

// ---------------------------------------------------------------- LayerNorm

LayerNorm::LayerNorm(Shape shape, double eps, bool affine) : normalized_shape(std::move(shape)), eps(eps) {
  if (affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    bias = register_parameter("bias", zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape, weight, bias, eps); }

// ---------------------------------------------------------------- Sequential

Sequential::Sequential(std::vector<std::shared_ptr<Layer>> layers) {
  for (auto& l : layers) push_back(std::move(l));
}

void Sequential::push_back(std::shared_ptr<Layer> layer) {
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    // Conv2d, BatchNorm and maybe ReLU in a row: conv_bn decides whether to fold them
    auto* conv = dynamic_cast<Conv2d*>(layers_[i].get());
    auto* bn = i + 1 < layers_.size() ? dynamic_cast<BatchNorm*>(layers_[i + 1].get()) : nullptr;
    if (conv && bn) {
      const bool relu = i + 2 < layers_.size() && dynamic_cast<ReLU*>(layers_[i + 2].get()) != nullptr;
      h = conv_bn(*conv, *bn, h, relu);
      i += relu ? 2 : 1;
      continue;
    }
    h = layers_[i]->forward(h);
  }
  return h;
}

// ---------------------------------------------------------------- attention

MultiheadSelfAttention::MultiheadSelfAttention(int64_t dim, int64_t heads, Generator& gen, bool qkv_bias)
    : dim(dim), num_heads(heads) {
  KD_CHECK(heads > 0 && dim % heads == 0, "attention: dim {} must be divisible by num_heads {}", dim, heads);
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, gen, qkv_bias));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, gen));
}

Tensor MultiheadSelfAttention::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 3 && x.size(2) == dim, "attention expects (B, N, {}), got {}", dim, shape_str(x.shape()));
  const int64_t B = x.size(0), N = x.size(1), H = num_heads, hd = dim / num_heads;
  Tensor qkv_ = qkv->forward(x).reshape({B, N, 3, H, hd}).permute({2, 0, 3, 1, 4});  // (3, B, H, N, hd)
  Tensor q = qkv_.select(0, 0), k = qkv_.select(0, 1), v = qkv_.select(0, 2);        // (B, H, N, hd)
  Tensor scores = matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt((double)hd));   // (B, H, N, N)
  Tensor attn = softmax(scores, -1);
  Tensor out = matmul(attn, v).transpose(1, 2).reshape({B, N, dim});                 // (B, N, D)
  return proj->forward(out);
}

Mlp::Mlp(int64_t dim, int64_t hidden, Generator& gen) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, gen));
}

TransformerBlock::TransformerBlock(int64_t dim, int64_t heads, double mlp_ratio, Generator& gen, bool qkv_bias) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(Shape{dim}, 1e-6));
  attn = register_module("attn", std::make_shared<MultiheadSelfAttention>(dim, heads, gen, qkv_bias));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(Shape{dim}, 1e-6));
  mlp = register_module("mlp", std::make_shared<Mlp>(dim, (int64_t)(dim * mlp_ratio), gen));
}

Tensor TransformerBlock::forward(const Tensor& x) {
  Tensor a = attn->forward(norm1->forward(x));
  if (adapter_attn) a = a + adapter_attn->forward(a);  // Houlsby, in series after attention
  Tensor h = x + a;
  const Tensor n = norm2->forward(h);
  Tensor m = mlp->forward(n);
  if (adapter_mlp) m = m + adapter_mlp->forward(m);  // Houlsby, in series after the MLP
  if (adapter_par) m = m + adapter_par->forward(n);  // AdaptFormer, parallel to the MLP
  return h + m;
}

BottleneckAdapter::BottleneckAdapter(int64_t dim, int64_t bottleneck, Generator& gen, bool relu, double scale)
    : relu(relu), scale(scale) {
  down = register_module("down", std::make_shared<Linear>(dim, bottleneck, gen));
  up = register_module("up", std::make_shared<Linear>(bottleneck, dim, gen));
  NoGradGuard ng;
  up->weight.copy_(zeros(up->weight.shape()));
  up->bias.copy_(zeros(up->bias.shape()));
}

Tensor BottleneckAdapter::forward(const Tensor& h) {
  const Tensor z = down->forward(h);
  return mul(up->forward(relu ? kd::relu(z) : gelu(z)), scale);
}

}  // namespace kd::nn
