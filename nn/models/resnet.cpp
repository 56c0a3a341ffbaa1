#include "nn/models/resnet.h"

#include "nn/init.h"
#include "nn/models/zoo.h"

namespace kd::nn {

// mdistiller's init for every conv of the ResNet: kaiming_normal_(mode="fan_out", relu).
static std::shared_ptr<Conv2d> resnet_conv(int64_t cin, int64_t cout, int64_t k, int64_t stride, Generator& gen) {
  auto conv = std::make_shared<Conv2d>(cin, cout, k, gen, stride, /*padding=*/k / 2, /*dilation=*/1, /*groups=*/1,
                                       /*bias=*/false);
  init::kaiming_normal_fan_out_(conv->weight, gen);
  return conv;
}

// ---------------------------------------------------------------- BasicBlock

ResNetBasicBlock::ResNetBasicBlock(int64_t in_planes, int64_t planes, int64_t stride, Generator& gen) {
  conv1 = register_module("conv1", resnet_conv(in_planes, planes, 3, stride, gen));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", resnet_conv(planes, planes, 3, 1, gen));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample = std::make_shared<Sequential>();
    downsample->push_back(resnet_conv(in_planes, planes, 1, stride, gen));
    downsample->push_back(BatchNorm2d(planes));
    register_module("downsample", downsample);
  }
}

ResidualOutput ResNetBasicBlock::forward(const Tensor& x) {
  // conv_bn(conv, bn, x, relu) = relu(bn(conv(x))) (or bn(conv(x))); folded into one convolution
  // in eval mode without gradients (nn/layers.h)
  Tensor h = conv_bn(*conv1, *bn1, x, /*relu=*/true);            // (B, planes, H', W')
  h = conv_bn(*conv2, *bn2, h, /*relu=*/false);                  // (B, planes, H', W')
  Tensor shortcut = downsample ? downsample->forward(x) : x;     // (B, planes, H', W')
  Tensor preact = h + shortcut;
  return {relu(preact), preact};
}

// ---------------------------------------------------------------- stage

ResNetStage::ResNetStage(int64_t in_planes, int64_t planes, int64_t num_blocks, int64_t stride, Generator& gen) {
  for (int64_t i = 0; i < num_blocks; ++i) {
    auto block = std::make_shared<ResNetBasicBlock>(i == 0 ? in_planes : planes, planes, i == 0 ? stride : 1, gen);
    blocks.push_back(register_module(std::to_string(i), block));
  }
}

ResidualOutput ResNetStage::forward(const Tensor& x) {
  ResidualOutput o{x, Tensor()};
  for (auto& b : blocks) o = b->forward(o.out);
  return o;
}

// ---------------------------------------------------------------- the network

CifarResNet::CifarResNet(std::string name, int64_t depth, std::array<int64_t, 4> widths, const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(depth >= 8 && (depth - 2) % 6 == 0,
           "{}: a CIFAR ResNet with basic blocks needs depth 6n+2 (8, 14, 20, 32, 44, 56, 110), got {}", name_, depth);
  const int64_t n = (depth - 2) / 6;
  Generator gen(config.seed);
  conv1 = register_module("conv1", resnet_conv(config.in_channels, widths[0], 3, 1, gen));
  bn1 = register_module("bn1", BatchNorm2d(widths[0]));
  layer1 = register_module("layer1", std::make_shared<ResNetStage>(widths[0], widths[1], n, 1, gen));
  layer2 = register_module("layer2", std::make_shared<ResNetStage>(widths[1], widths[2], n, 2, gen));
  layer3 = register_module("layer3", std::make_shared<ResNetStage>(widths[2], widths[3], n, 2, gen));
  fc = register_module("fc", std::make_shared<Linear>(widths[3], config.num_classes, gen));  // PyTorch default init
  // BN weight 1, bias 0: BatchNorm's constructor already sets them.
}

ModelOutput CifarResNet::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  ModelOutput o;
  Tensor f0 = conv_bn(*conv1, *bn1, x, /*relu=*/true);  // relu(bn1(conv1(x))): (B, w0, H, W)
  ResidualOutput s1 = layer1->forward(f0);             // (B, w1, H, W)
  ResidualOutput s2 = layer2->forward(s1.out);         // (B, w2, H/2, W/2)
  ResidualOutput s3 = layer3->forward(s2.out);         // (B, w3, H/4, W/4)
  o.feats = {f0, s1.out, s2.out, s3.out};
  o.preact_feats = {f0, s1.preact, s2.preact, s3.preact};
  o.pooled_map = s3.out;                                // (B, w3, H/4, W/4)
  o.pooled = adaptive_avg_pool2d(s3.out, 1).flatten(1);  // (B, w3)
  o.logits = fc->forward(o.pooled);                     // (B, K)
  return o;
}

// ---------------------------------------------------------------- registry

void add_resnet_models(std::vector<ModelEntry>& table) {
  struct Spec {
    const char* name;
    int64_t depth;
    std::array<int64_t, 4> widths;
  };
  const std::array<int64_t, 4> narrow = {16, 16, 32, 64}, wide = {32, 64, 128, 256};
  const Spec specs[] = {{"resnet8", 8, narrow},   {"resnet14", 14, narrow},  {"resnet20", 20, narrow},
                        {"resnet32", 32, narrow}, {"resnet44", 44, narrow},  {"resnet56", 56, narrow},
                        {"resnet110", 110, narrow}, {"resnet8x4", 8, wide}, {"resnet32x4", 32, wide}};
  for (const Spec& s : specs) {
    std::string desc = fmt::format("CIFAR ResNet-{} (basic blocks, widths {}-{}-{}-{}), mdistiller", s.depth,
                                   s.widths[0], s.widths[1], s.widths[2], s.widths[3]);
    std::string name = s.name;
    int64_t depth = s.depth;
    std::array<int64_t, 4> widths = s.widths;
    table.push_back({name, desc, [name, depth, widths](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                       return std::make_shared<CifarResNet>(name, depth, widths, cfg);
                     }});
  }
}

}  // namespace kd::nn
