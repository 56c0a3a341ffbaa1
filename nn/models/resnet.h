// resnet.h: the CIFAR ResNets of mdistiller (mdistiller/models/cifar/resnet.py).
//
//   resnet8, 14, 20, 32, 44, 56, 110: depth 6n+2, widths 16-16-32-64 (stem, stage 1, 2, 3)
//   resnet8x4, resnet32x4:            the same with widths 32-64-128-256
//
// stem: conv3x3(in_channels -> w0) - BN - ReLU                     f0 (after the ReLU)
// stage s (s = 1, 2, 3): n BasicBlocks, the first with stride 1, 2, 2
//   BasicBlock: out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))
//   shortcut:   identity, or conv1x1(stride) + BN ("downsample.0", "downsample.1") when the
//               channel count or the resolution changes
//   feats[s] = the stage output (after the last block's ReLU), preact_feats[s] = before it
// head: global average pool (adaptive, so 28x28 inputs work; mdistiller's AvgPool2d(8) is the
//       same on 32x32) -> pooled (B, w3) -> fc -> logits (B, K)
//
// State-dict names equal mdistiller's ("layer2.0.downsample.1.running_mean", ...), so its
// checkpoints load by name. Init as mdistiller: conv weights kaiming_normal(fan_out, relu), BN
// weight 1 and bias 0, fc PyTorch's default.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

// A block's (or a stage's) output after its final ReLU and the sum before it.
struct ResidualOutput {
  Tensor out;     // (B, C, H, W) = relu(preact)
  Tensor preact;  // (B, C, H, W)
};

class ResNetBasicBlock : public Module {
 public:
  ResNetBasicBlock(int64_t in_planes, int64_t planes, int64_t stride, Generator& gen);
  ResidualOutput forward(const Tensor& x);  // (B, in_planes, H, W) -> (B, planes, H/stride, W/stride)
  std::string type_name() const override { return "BasicBlock"; }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<Sequential> downsample;  // conv1x1 + BN, or null for the identity shortcut
};

// A stage: blocks named "0", "1", ... as mdistiller's nn.Sequential layer1/2/3.
class ResNetStage : public Module {
 public:
  ResNetStage(int64_t in_planes, int64_t planes, int64_t num_blocks, int64_t stride, Generator& gen);
  ResidualOutput forward(const Tensor& x);  // the last block's output and pre-activation
  std::string type_name() const override { return "Sequential"; }
  std::vector<std::shared_ptr<ResNetBasicBlock>> blocks;
};

class CifarResNet : public Classifier {
 public:
  // depth = 6n + 2; widths = {stem, stage 1, stage 2, stage 3} channels.
  CifarResNet(std::string name, int64_t depth, std::array<int64_t, 4> widths, const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "fc"; }

  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm> bn1;
  std::shared_ptr<ResNetStage> layer1, layer2, layer3;
  std::shared_ptr<Linear> fc;

 private:
  std::string name_;
  int64_t in_channels_;
};

}  // namespace kd::nn
