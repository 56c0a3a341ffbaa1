// shufflenet.h: the CIFAR ShuffleNets of mdistiller (mdistiller/models/cifar/ShuffleNetv1.py,
// ShuffleNetv2.py).
//
// Channel shuffle with g groups: (B, C, H, W) -> reshape (B, g, C/g, H, W) -> swap dims 1 and 2
// -> reshape (B, C, H, W): output channel j*g + i is input channel i*(C/g) + j
// (i < g, j < C/g), so every group of the next grouped conv sees channels of every group.
//
// ---- shufflenetv1 (mdistiller ShuffleV1: groups 3, out_planes 240-480-960, blocks 4-8-4)
// stem: conv1x1 (in_channels -> 24) "conv1" - BN "bn1" - ReLU                       f0
// layer1..3: Bottlenecks, the first of each stage with stride 2.
//   Bottleneck(in, out, stride): mid = out/4, g1 = 1 if in == 24 else 3
//     conv1 1x1 (groups g1) - bn1 - ReLU - shuffle(g1) - conv2 3x3 depthwise (stride) - bn2 - ReLU
//     - conv3 1x1 (groups 3) - bn3 = h
//     stride 2: preact = cat(h, avg_pool3x3/s2/p1(x)) (h has out - in channels so the stage
//               reaches its width);  stride 1: preact = h + x;   out = ReLU(preact)
//   feats[s] = the stage output, preact_feats[s] = the last block's preact
// head: global average pool (adaptive; mdistiller's avg_pool2d(4) on 32x32) -> pooled (B, 960)
//       -> "linear" -> logits
//
// ---- shufflenetv2 (mdistiller ShuffleV2, net_size 1: channels 116-232-464, 1024; blocks 3-7-3)
// stem: conv1x1 (in_channels -> 24) "conv1" - BN "bn1" - ReLU                       f0
// layer s: DownBlock "0" then BasicBlocks "1".."n"
//   DownBlock(in, out), mid = out/2:
//     left  = ReLU(bn2(conv2 1x1(bn1(conv1 3x3 depthwise stride 2(x)))))             (mid)
//     right = ReLU(bn5(conv5 1x1(bn4(conv4 3x3 depthwise s2(ReLU(bn3(conv3 1x1(x))))))))  (mid)
//     out = shuffle(cat(left, right), 2)
//   BasicBlock(C): x1, x2 = the first and second half of the channels
//     h = bn3(conv3 1x1(bn2(conv2 3x3 depthwise(ReLU(bn1(conv1 1x1(x2)))))))
//     out = shuffle(cat(x1, ReLU(h)), 2);  preact = cat(x1, h)  (NOT shuffled, as mdistiller)
//   feats[s] = the stage output, preact_feats[s] = the last block's (unshuffled) preact
// "conv2" 1x1 (464 -> 1024) - "bn2" - ReLU, global average pool -> pooled (B, 1024) -> "linear"
//
// Both: feats = [f0, f1, f2, f3] and preact_feats = [f0, f1_pre, f2_pre, f3_pre] exactly as
// mdistiller (f0 post-ReLU in both lists). For 32x32: f0 (24, 32x32), f1 (·, 16x16),
// f2 (·, 8x8), f3 (·, 4x4). State-dict names equal mdistiller's ("layer2.0.conv3.weight", ...).
// Init: PyTorch's defaults (mdistiller leaves these models to them): conv and Linear weights
// U(±1/sqrt(fan_in)), Linear bias likewise, BN weight 1 and bias 0.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

// (B, C, H, W) -> (B, C, H, W), channels interleaved across `groups` groups. C % groups == 0.
Tensor channel_shuffle(const Tensor& x, int64_t groups);

// A block's output and the pre-activation that mdistiller reports for the stage's last block.
struct ShuffleOutput {
  Tensor out;     // (B, C, H, W)
  Tensor preact;  // (B, C, H, W)
};

// ---------------------------------------------------------------- ShuffleNet V1

class ShuffleV1Bottleneck : public Module {
 public:
  ShuffleV1Bottleneck(int64_t in_planes, int64_t out_planes, int64_t stride, int64_t groups, Generator& gen);
  ShuffleOutput forward(const Tensor& x);
  std::string type_name() const override { return "Bottleneck"; }
  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3;
  int64_t stride, shuffle_groups;
};

class ShuffleV1Stage : public Module {
 public:
  ShuffleV1Stage(int64_t in_planes, int64_t out_planes, int64_t num_blocks, int64_t groups, Generator& gen);
  ShuffleOutput forward(const Tensor& x);  // the last block's output and preact
  std::string type_name() const override { return "Sequential"; }
  std::vector<std::shared_ptr<ShuffleV1Bottleneck>> blocks;
};

class ShuffleNetV1 : public Classifier {
 public:
  // out_planes per stage, blocks per stage, groups of the grouped 1x1 convs
  ShuffleNetV1(std::string name, std::vector<int64_t> out_planes, std::vector<int64_t> num_blocks, int64_t groups,
               const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "linear"; }
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm> bn1;
  std::shared_ptr<ShuffleV1Stage> layer1, layer2, layer3;
  std::shared_ptr<Linear> linear;

 private:
  std::string name_;
  int64_t in_channels_;
};

// ---------------------------------------------------------------- ShuffleNet V2

class ShuffleV2BasicBlock : public Module {
 public:
  ShuffleV2BasicBlock(int64_t channels, Generator& gen);
  ShuffleOutput forward(const Tensor& x);
  std::string type_name() const override { return "BasicBlock"; }
  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3;
};

class ShuffleV2DownBlock : public Module {
 public:
  ShuffleV2DownBlock(int64_t in_channels, int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x);  // (B, in, H, W) -> (B, out, H/2, W/2)
  std::string type_name() const override { return "DownBlock"; }
  std::shared_ptr<Conv2d> conv1, conv2, conv3, conv4, conv5;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3, bn4, bn5;
};

class ShuffleV2Stage : public Module {
 public:
  ShuffleV2Stage(int64_t in_channels, int64_t out_channels, int64_t num_blocks, Generator& gen);
  ShuffleOutput forward(const Tensor& x);
  std::string type_name() const override { return "Sequential"; }
  std::shared_ptr<ShuffleV2DownBlock> down;                  // "0"
  std::vector<std::shared_ptr<ShuffleV2BasicBlock>> blocks;  // "1".."n"
};

class ShuffleNetV2 : public Classifier {
 public:
  // out_channels = {stage 1, stage 2, stage 3, conv2}; num_blocks per stage (BasicBlocks)
  ShuffleNetV2(std::string name, std::vector<int64_t> out_channels, std::vector<int64_t> num_blocks,
               const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "linear"; }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<ShuffleV2Stage> layer1, layer2, layer3;
  std::shared_ptr<Linear> linear;

 private:
  std::string name_;
  int64_t in_channels_;
};

}  // namespace kd::nn
