#include "nn/models/shufflenet.h"

#include "nn/models/zoo.h"

namespace kd::nn {

Tensor channel_shuffle(const Tensor& x, int64_t groups) {
  KD_CHECK(x.dim() == 4, "channel_shuffle expects (B, C, H, W), got {}", shape_str(x.shape()));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  KD_CHECK(groups > 0 && C % groups == 0, "channel_shuffle: {} channels cannot be split into {} groups", C, groups);
  return x.reshape({B, groups, C / groups, H, W})  // (B, g, C/g, H, W)
      .transpose(1, 2)                             // (B, C/g, g, H, W)
      .reshape({B, C, H, W});
}

// All convs of these networks: no bias, PyTorch's default init (drawn by Conv2d's constructor).
static std::shared_ptr<Conv2d> conv_nb(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t groups,
                                       Generator& gen) {
  return std::make_shared<Conv2d>(cin, cout, k, gen, stride, /*padding=*/k / 2, /*dilation=*/1, groups,
                                  /*bias=*/false);
}

// ================================================================ ShuffleNet V1

ShuffleV1Bottleneck::ShuffleV1Bottleneck(int64_t in_planes, int64_t out_planes, int64_t stride, int64_t groups,
                                         Generator& gen)
    : stride(stride) {
  const int64_t mid = out_planes / 4;
  // mdistiller: the first 1x1 conv after the 24-channel stem is not grouped.
  shuffle_groups = in_planes == 24 ? 1 : groups;
  conv1 = register_module("conv1", conv_nb(in_planes, mid, 1, 1, shuffle_groups, gen));
  bn1 = register_module("bn1", BatchNorm2d(mid));
  conv2 = register_module("conv2", conv_nb(mid, mid, 3, stride, /*groups=*/mid, gen));
  bn2 = register_module("bn2", BatchNorm2d(mid));
  conv3 = register_module("conv3", conv_nb(mid, out_planes, 1, 1, groups, gen));
  bn3 = register_module("bn3", BatchNorm2d(out_planes));
}

ShuffleOutput ShuffleV1Bottleneck::forward(const Tensor& x) {
  Tensor h = conv_bn(*conv1, *bn1, x, /*relu=*/true);  // (B, mid, H, W)
  h = channel_shuffle(h, shuffle_groups);
  h = conv_bn(*conv2, *bn2, h, /*relu=*/true);         // (B, mid, H/s, W/s)
  h = conv_bn(*conv3, *bn3, h, /*relu=*/false);               // (B, out_planes, H/s, W/s)
  Tensor preact;
  if (stride == 2) {
    Tensor res = avg_pool2d(x, 3, 2, 1);  // (B, in, H/2, W/2), count_include_pad as PyTorch's default
    preact = cat({h, res}, 1);            // (B, out_planes + in, H/2, W/2)
  } else {
    preact = h + x;
  }
  return {relu(preact), preact};
}

ShuffleV1Stage::ShuffleV1Stage(int64_t in_planes, int64_t out_planes, int64_t num_blocks, int64_t groups,
                               Generator& gen) {
  for (int64_t i = 0; i < num_blocks; ++i) {
    // the first block (stride 2) concatenates its input, so its branch makes out - in channels
    const int64_t cat_planes = i == 0 ? in_planes : 0;
    auto b = std::make_shared<ShuffleV1Bottleneck>(in_planes, out_planes - cat_planes, i == 0 ? 2 : 1, groups, gen);
    blocks.push_back(register_module(std::to_string(i), b));
    in_planes = out_planes;
  }
}

ShuffleOutput ShuffleV1Stage::forward(const Tensor& x) {
  ShuffleOutput o{x, Tensor()};
  for (auto& b : blocks) o = b->forward(o.out);
  return o;
}

ShuffleNetV1::ShuffleNetV1(std::string name, std::vector<int64_t> out_planes, std::vector<int64_t> num_blocks,
                           int64_t groups, const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(out_planes.size() == 3 && num_blocks.size() == 3, "{}: needs 3 stages, got {} widths and {} depths",
           name_, out_planes.size(), num_blocks.size());
  Generator gen(config.seed);
  conv1 = register_module("conv1", conv_nb(config.in_channels, 24, 1, 1, 1, gen));
  bn1 = register_module("bn1", BatchNorm2d(24));
  layer1 = register_module("layer1", std::make_shared<ShuffleV1Stage>(24, out_planes[0], num_blocks[0], groups, gen));
  layer2 = register_module("layer2",
                           std::make_shared<ShuffleV1Stage>(out_planes[0], out_planes[1], num_blocks[1], groups, gen));
  layer3 = register_module("layer3",
                           std::make_shared<ShuffleV1Stage>(out_planes[1], out_planes[2], num_blocks[2], groups, gen));
  linear = register_module("linear", std::make_shared<Linear>(out_planes[2], config.num_classes, gen));
}

ModelOutput ShuffleNetV1::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  Tensor f0 = conv_bn(*conv1, *bn1, x, /*relu=*/true);  // (B, 24, H, W)
  ShuffleOutput s1 = layer1->forward(f0);              // (B, 240, H/2, W/2)
  ShuffleOutput s2 = layer2->forward(s1.out);          // (B, 480, H/4, W/4)
  ShuffleOutput s3 = layer3->forward(s2.out);          // (B, 960, H/8, W/8)
  ModelOutput o;
  o.feats = {f0, s1.out, s2.out, s3.out};
  o.preact_feats = {f0, s1.preact, s2.preact, s3.preact};
  o.pooled_map = s3.out;                                // (B, 960, H/8, W/8)
  o.pooled = adaptive_avg_pool2d(s3.out, 1).flatten(1);  // (B, 960)
  o.logits = linear->forward(o.pooled);                 // (B, K)
  return o;
}

// ================================================================ ShuffleNet V2

ShuffleV2BasicBlock::ShuffleV2BasicBlock(int64_t channels, Generator& gen) {
  const int64_t c = channels / 2;  // split ratio 0.5: the block transforms the second half
  conv1 = register_module("conv1", conv_nb(c, c, 1, 1, 1, gen));
  bn1 = register_module("bn1", BatchNorm2d(c));
  conv2 = register_module("conv2", conv_nb(c, c, 3, 1, /*groups=*/c, gen));
  bn2 = register_module("bn2", BatchNorm2d(c));
  conv3 = register_module("conv3", conv_nb(c, c, 1, 1, 1, gen));
  bn3 = register_module("bn3", BatchNorm2d(c));
}

ShuffleOutput ShuffleV2BasicBlock::forward(const Tensor& x) {
  const int64_t C = x.size(1), c = C / 2;
  Tensor x1 = x.slice(1, 0, c);  // (B, c, H, W), passed through
  Tensor x2 = x.slice(1, c, C);  // (B, C - c, H, W), transformed
  Tensor h = conv_bn(*conv1, *bn1, x2, /*relu=*/true);
  h = conv_bn(*conv2, *bn2, h, /*relu=*/false);
  h = conv_bn(*conv3, *bn3, h, /*relu=*/false);             // (B, c, H, W)
  Tensor preact = cat({x1, h}, 1);                 // (B, C, H, W), unshuffled as mdistiller
  Tensor out = channel_shuffle(cat({x1, relu(h)}, 1), 2);
  return {out, preact};
}

ShuffleV2DownBlock::ShuffleV2DownBlock(int64_t in, int64_t out, Generator& gen) {
  const int64_t mid = out / 2;
  // left branch
  conv1 = register_module("conv1", conv_nb(in, in, 3, 2, /*groups=*/in, gen));
  bn1 = register_module("bn1", BatchNorm2d(in));
  conv2 = register_module("conv2", conv_nb(in, mid, 1, 1, 1, gen));
  bn2 = register_module("bn2", BatchNorm2d(mid));
  // right branch
  conv3 = register_module("conv3", conv_nb(in, mid, 1, 1, 1, gen));
  bn3 = register_module("bn3", BatchNorm2d(mid));
  conv4 = register_module("conv4", conv_nb(mid, mid, 3, 2, /*groups=*/mid, gen));
  bn4 = register_module("bn4", BatchNorm2d(mid));
  conv5 = register_module("conv5", conv_nb(mid, mid, 1, 1, 1, gen));
  bn5 = register_module("bn5", BatchNorm2d(mid));
}

Tensor ShuffleV2DownBlock::forward(const Tensor& x) {
  Tensor left = conv_bn(*conv1, *bn1, x, /*relu=*/false);        // (B, in, H/2, W/2)
  left = conv_bn(*conv2, *bn2, left, /*relu=*/true);      // (B, mid, H/2, W/2)
  Tensor right = conv_bn(*conv3, *bn3, x, /*relu=*/true);  // (B, mid, H, W)
  right = conv_bn(*conv4, *bn4, right, /*relu=*/false);           // (B, mid, H/2, W/2)
  right = conv_bn(*conv5, *bn5, right, /*relu=*/true);     // (B, mid, H/2, W/2)
  return channel_shuffle(cat({left, right}, 1), 2);      // (B, 2 mid, H/2, W/2)
}

ShuffleV2Stage::ShuffleV2Stage(int64_t in_channels, int64_t out_channels, int64_t num_blocks, Generator& gen) {
  KD_CHECK(num_blocks >= 1, "ShuffleNetV2 stage needs at least one BasicBlock after its DownBlock, got {}",
           num_blocks);
  down = register_module("0", std::make_shared<ShuffleV2DownBlock>(in_channels, out_channels, gen));
  for (int64_t i = 0; i < num_blocks; ++i)
    blocks.push_back(register_module(std::to_string(i + 1), std::make_shared<ShuffleV2BasicBlock>(out_channels, gen)));
}

ShuffleOutput ShuffleV2Stage::forward(const Tensor& x) {
  ShuffleOutput o{down->forward(x), Tensor()};
  for (auto& b : blocks) o = b->forward(o.out);
  return o;
}

ShuffleNetV2::ShuffleNetV2(std::string name, std::vector<int64_t> out_channels, std::vector<int64_t> num_blocks,
                           const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(out_channels.size() == 4 && num_blocks.size() == 3,
           "{}: needs 4 widths (3 stages and conv2) and 3 depths, got {} and {}", name_, out_channels.size(),
           num_blocks.size());
  Generator gen(config.seed);
  conv1 = register_module("conv1", conv_nb(config.in_channels, 24, 1, 1, 1, gen));
  bn1 = register_module("bn1", BatchNorm2d(24));
  layer1 = register_module("layer1", std::make_shared<ShuffleV2Stage>(24, out_channels[0], num_blocks[0], gen));
  layer2 = register_module("layer2",
                           std::make_shared<ShuffleV2Stage>(out_channels[0], out_channels[1], num_blocks[1], gen));
  layer3 = register_module("layer3",
                           std::make_shared<ShuffleV2Stage>(out_channels[1], out_channels[2], num_blocks[2], gen));
  conv2 = register_module("conv2", conv_nb(out_channels[2], out_channels[3], 1, 1, 1, gen));
  bn2 = register_module("bn2", BatchNorm2d(out_channels[3]));
  linear = register_module("linear", std::make_shared<Linear>(out_channels[3], config.num_classes, gen));
}

ModelOutput ShuffleNetV2::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  Tensor f0 = conv_bn(*conv1, *bn1, x, /*relu=*/true);  // (B, 24, H, W)
  ShuffleOutput s1 = layer1->forward(f0);              // (B, 116, H/2, W/2)
  ShuffleOutput s2 = layer2->forward(s1.out);          // (B, 232, H/4, W/4)
  ShuffleOutput s3 = layer3->forward(s2.out);          // (B, 464, H/8, W/8)
  Tensor h = relu(bn2->forward(conv2->forward(s3.out)));  // (B, 1024, H/8, W/8)
  ModelOutput o;
  o.feats = {f0, s1.out, s2.out, s3.out};
  o.preact_feats = {f0, s1.preact, s2.preact, s3.preact};
  o.pooled_map = h;                                 // (B, 1024, H/8, W/8)
  o.pooled = adaptive_avg_pool2d(h, 1).flatten(1);  // (B, 1024)
  o.logits = linear->forward(o.pooled);            // (B, K)
  return o;
}

// ---------------------------------------------------------------- registry

void add_shufflenet_models(std::vector<ModelEntry>& table) {
  table.push_back({"shufflenetv1", "CIFAR ShuffleNet V1 (groups 3, widths 240-480-960, blocks 4-8-4), mdistiller ShuffleV1",
                   [](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                     return std::make_shared<ShuffleNetV1>("shufflenetv1", std::vector<int64_t>{240, 480, 960},
                                                           std::vector<int64_t>{4, 8, 4}, 3, cfg);
                   }});
  table.push_back(
      {"shufflenetv2", "CIFAR ShuffleNet V2 (net size 1: widths 116-232-464, 1024; blocks 3-7-3), mdistiller ShuffleV2",
       [](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
         return std::make_shared<ShuffleNetV2>("shufflenetv2", std::vector<int64_t>{116, 232, 464, 1024},
                                               std::vector<int64_t>{3, 7, 3}, cfg);
       }});
}

}  // namespace kd::nn
