#include "nn/models/vgg.h"

#include "nn/init.h"
#include "nn/models/zoo.h"

namespace kd::nn {

// One block: [conv3x3(bias) - BN - ReLU] per entry of `channels`, without the final ReLU.
// Children are numbered as mdistiller's nn.Sequential: conv 3i, BN 3i+1, ReLU 3i+2.
static std::shared_ptr<Sequential> make_vgg_block(int64_t in_channels, const std::vector<int64_t>& channels,
                                                  Generator& gen) {
  auto block = std::make_shared<Sequential>();
  for (size_t i = 0; i < channels.size(); ++i) {
    const int64_t out = channels[i];
    auto conv = std::make_shared<Conv2d>(in_channels, out, 3, gen, /*stride=*/1, /*padding=*/1);
    init::kaiming_normal_fan_out_(conv->weight, gen);  // N(0, 2 / (3 * 3 * out))
    init::constant_(conv->bias, 0.0);
    block->push_back(conv);
    block->push_back(BatchNorm2d(out));
    if (i + 1 < channels.size()) block->push_back(std::make_shared<ReLU>());
    in_channels = out;
  }
  return block;
}

CifarVGG::CifarVGG(std::string name, const std::vector<std::vector<int64_t>>& blocks, const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(blocks.size() == 5, "{}: a CIFAR VGG has 5 blocks, got {}", name_, blocks.size());
  for (const auto& b : blocks) KD_CHECK(!b.empty(), "{}: every VGG block needs at least one conv", name_);
  Generator gen(config.seed);
  block0 = register_module("block0", make_vgg_block(config.in_channels, blocks[0], gen));
  block1 = register_module("block1", make_vgg_block(blocks[0].back(), blocks[1], gen));
  block2 = register_module("block2", make_vgg_block(blocks[1].back(), blocks[2], gen));
  block3 = register_module("block3", make_vgg_block(blocks[2].back(), blocks[3], gen));
  block4 = register_module("block4", make_vgg_block(blocks[3].back(), blocks[4], gen));
  pool0 = register_module("pool0", std::make_shared<MaxPool2d>(2, 2));
  pool1 = register_module("pool1", std::make_shared<MaxPool2d>(2, 2));
  pool2 = register_module("pool2", std::make_shared<MaxPool2d>(2, 2));
  pool3 = register_module("pool3", std::make_shared<MaxPool2d>(2, 2));
  pool4 = register_module("pool4", std::make_shared<AdaptiveAvgPool2d>(1));
  classifier = register_module("classifier", std::make_shared<Linear>(blocks[4].back(), config.num_classes, gen));
  init::normal_(classifier->weight, 0.0, 0.01, gen);
  init::constant_(classifier->bias, 0.0);
}

ModelOutput CifarVGG::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  const int64_t h = x.size(2);
  ModelOutput o;
  Tensor f0 = relu(block0->forward(x));                    // (B, c0, H, W)
  Tensor f1_pre = block1->forward(pool0->forward(f0));     // (B, c1, H/2, W/2)
  Tensor f1 = relu(f1_pre);
  Tensor f2_pre = block2->forward(pool1->forward(f1));     // (B, c2, H/4, W/4)
  Tensor f2 = relu(f2_pre);
  Tensor f3_pre = block3->forward(pool2->forward(f2));     // (B, c3, H/8, W/8)
  Tensor f3 = relu(f3_pre);
  Tensor f4_pre = block4->forward(h == 64 ? pool3->forward(f3) : f3);  // (B, c4, H/8, W/8), /16 for 64x64
  Tensor f4 = relu(f4_pre);
  o.pooled_map = f4;                         // (B, c4, H/8, W/8)
  o.pooled = pool4->forward(f4).flatten(1);  // (B, c4)
  o.logits = classifier->forward(o.pooled);  // (B, K)
  o.feats = {f0, f1, f2, f3, f4};
  o.preact_feats = {f0, f1_pre, f2_pre, f3_pre, f4_pre};
  return o;
}

void add_vgg_models(std::vector<ModelEntry>& table) {
  using Blocks = std::vector<std::vector<int64_t>>;
  struct Spec {
    const char* name;
    const char* layout;
    Blocks blocks;
  };
  const Spec specs[] = {
      {"vgg8", "64 | 128 | 256 | 512 | 512", {{64}, {128}, {256}, {512}, {512}}},
      {"vgg11", "64 | 128 | 256x2 | 512x2 | 512x2", {{64}, {128}, {256, 256}, {512, 512}, {512, 512}}},
      {"vgg13", "64x2 | 128x2 | 256x2 | 512x2 | 512x2", {{64, 64}, {128, 128}, {256, 256}, {512, 512}, {512, 512}}},
  };
  for (const Spec& s : specs) {
    std::string name = s.name;
    Blocks blocks = s.blocks;
    table.push_back({name, fmt::format("CIFAR VGG with BatchNorm, convs {}, mdistiller", s.layout),
                     [name, blocks](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                       return std::make_shared<CifarVGG>(name, blocks, cfg);
                     }});
  }
}

}  // namespace kd::nn
