#include "nn/models/wrn.h"

#include "nn/init.h"
#include "nn/models/zoo.h"

namespace kd::nn {

// mdistiller's conv init: normal(0, sqrt(2 / (kh * kw * out_channels))), i.e. kaiming fan_out.
static std::shared_ptr<Conv2d> wrn_conv(int64_t cin, int64_t cout, int64_t k, int64_t stride, Generator& gen) {
  auto conv = std::make_shared<Conv2d>(cin, cout, k, gen, stride, /*padding=*/k / 2, /*dilation=*/1, /*groups=*/1,
                                       /*bias=*/false);
  init::kaiming_normal_fan_out_(conv->weight, gen);
  return conv;
}

// ---------------------------------------------------------------- pre-activation block

WrnBlock::WrnBlock(int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen) {
  bn1 = register_module("bn1", BatchNorm2d(in_planes));
  conv1 = register_module("conv1", wrn_conv(in_planes, out_planes, 3, stride, gen));
  bn2 = register_module("bn2", BatchNorm2d(out_planes));
  conv2 = register_module("conv2", wrn_conv(out_planes, out_planes, 3, 1, gen));
  if (in_planes != out_planes)
    conv_shortcut = register_module("convShortcut", wrn_conv(in_planes, out_planes, 1, stride, gen));
}

Tensor WrnBlock::forward(const Tensor& x) {
  Tensor a = relu(bn1->forward(x));                               // (B, in, H, W)
  Tensor h = conv_bn(*conv1, *bn2, a, /*relu=*/true);               // (B, out, H', W')
  h = conv2->forward(h);                                          // (B, out, H', W')
  // mdistiller: the identity shortcut takes the raw x, the projection takes the activated a.
  Tensor shortcut = conv_shortcut ? conv_shortcut->forward(a) : x;  // (B, out, H', W')
  return shortcut + h;
}

// ---------------------------------------------------------------- stage

WrnStage::WrnStage(int64_t num_blocks, int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen) {
  layer = std::make_shared<Sequential>();
  for (int64_t i = 0; i < num_blocks; ++i)
    layer->push_back(std::make_shared<WrnBlock>(i == 0 ? in_planes : out_planes, out_planes, i == 0 ? stride : 1, gen));
  register_module("layer", layer);
}

// ---------------------------------------------------------------- the network

WideResNet::WideResNet(std::string name, int64_t depth, int64_t widen_factor, const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(depth >= 10 && (depth - 4) % 6 == 0, "{}: a Wide ResNet needs depth 6n+4 (10, 16, 22, 28, 40, ...), got {}",
           name_, depth);
  KD_CHECK(widen_factor >= 1, "{}: widen factor must be at least 1, got {}", name_, widen_factor);
  const int64_t n = (depth - 4) / 6;
  const int64_t c0 = 16, c1 = 16 * widen_factor, c2 = 32 * widen_factor, c3 = 64 * widen_factor;
  Generator gen(config.seed);
  conv1 = register_module("conv1", wrn_conv(config.in_channels, c0, 3, 1, gen));
  block1 = register_module("block1", std::make_shared<WrnStage>(n, c0, c1, 1, gen));
  block2 = register_module("block2", std::make_shared<WrnStage>(n, c1, c2, 2, gen));
  block3 = register_module("block3", std::make_shared<WrnStage>(n, c2, c3, 2, gen));
  bn1 = register_module("bn1", BatchNorm2d(c3));
  fc = register_module("fc", std::make_shared<Linear>(c3, config.num_classes, gen));
  init::constant_(fc->bias, 0.0);  // mdistiller zeroes the Linear bias, keeps PyTorch's default weight
}

ModelOutput WideResNet::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  ModelOutput o;
  Tensor f0 = conv1->forward(x);   // (B, 16, H, W)
  Tensor f1 = block1->forward(f0);  // (B, 16k, H, W)
  Tensor f2 = block2->forward(f1);  // (B, 32k, H/2, W/2)
  Tensor f3 = block3->forward(f2);  // (B, 64k, H/4, W/4)
  Tensor h = relu(bn1->forward(f3));
  o.pooled_map = h;                                 // (B, 64k, H/4, W/4)
  o.pooled = adaptive_avg_pool2d(h, 1).flatten(1);  // (B, 64k)
  o.logits = fc->forward(o.pooled);                 // (B, K)
  o.feats = {f0, f1, f2, f3};
  // The second BN calls of mdistiller (see wrn.h), in its order: after the classifier.
  o.preact_feats = {f0, block2->block(0).bn1->forward(f1), block3->block(0).bn1->forward(f2), bn1->forward(f3)};
  return o;
}

// ---------------------------------------------------------------- registry

void add_wrn_models(std::vector<ModelEntry>& table) {
  struct Spec {
    const char* name;
    int64_t depth, widen;
  };
  const Spec specs[] = {{"wrn_16_1", 16, 1}, {"wrn_16_2", 16, 2}, {"wrn_40_1", 40, 1}, {"wrn_40_2", 40, 2}};
  for (const Spec& s : specs) {
    std::string name = s.name;
    int64_t depth = s.depth, widen = s.widen;
    std::string desc = fmt::format("CIFAR Wide ResNet-{}-{} (pre-activation blocks), mdistiller", depth, widen);
    table.push_back({name, desc, [name, depth, widen](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                       return std::make_shared<WideResNet>(name, depth, widen, cfg);
                     }});
  }
}

}  // namespace kd::nn
