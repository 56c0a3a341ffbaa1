// wrn.h: the CIFAR Wide ResNets of mdistiller (mdistiller/models/cifar/wrn.py).
//
//   wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2: wrn_<depth>_<widen>, depth 6n+4, widths
//   16, 16k, 32k, 64k (stem, stage 1, 2, 3) for widen factor k
//
// stem: conv3x3(in_channels -> 16)                                  f0 (no BN, no ReLU)
// stage s (block1, block2, block3): n pre-activation blocks, the first with stride 1, 2, 2
//   block with in == out:  x + conv2(ReLU(BN2(conv1(ReLU(BN1(x))))))
//   block with in != out:  a = ReLU(BN1(x)); convShortcut(a) + conv2(ReLU(BN2(conv1(a))))
//   (convShortcut is a 1x1 conv with the block's stride, no BN)
//   feats[s] = the stage output: the residual sum, no activation after it
// head: ReLU(bn1(f3)) -> global average pool -> pooled (B, 64k) -> fc -> logits (B, K)
//
// preact_feats as mdistiller: [f0, block2.layer.0.bn1(f1), block3.layer.0.bn1(f2), bn1(f3)]:
// each stage output through the BatchNorm that follows it, before that BN's ReLU. mdistiller
// computes these by calling the BNs a second time, so in training mode those three BNs update
// their running statistics (and num_batches_tracked) twice per forward; this port does the
// same, so a model trained here has the state mdistiller's would.
//
// Names equal mdistiller's ("block1.layer.0.bn1.weight", "block2.layer.0.convShortcut.weight").
// Init as mdistiller: conv weights N(0, 2 / (k*k*out_channels)), BN weight 1 and bias 0, fc
// weight PyTorch's default and bias 0. No dropout (mdistiller's dropRate is 0 everywhere).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

class WrnBlock : public Layer {
 public:
  WrnBlock(int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (B, in, H, W) -> (B, out, H/stride, W/stride)
  std::string type_name() const override { return "BasicBlock"; }
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<Conv2d> conv_shortcut;  // "convShortcut"; null when in == out (identity)
};

// mdistiller's NetworkBlock: one child "layer", a Sequential of WrnBlocks.
class WrnStage : public Layer {
 public:
  WrnStage(int64_t num_blocks, int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override { return layer->forward(x); }
  std::string type_name() const override { return "NetworkBlock"; }
  WrnBlock& block(size_t i) const { return static_cast<WrnBlock&>((*layer)[i]); }
  std::shared_ptr<Sequential> layer;
};

class WideResNet : public Classifier {
 public:
  WideResNet(std::string name, int64_t depth, int64_t widen_factor, const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "fc"; }

  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<WrnStage> block1, block2, block3;
  std::shared_ptr<BatchNorm> bn1;
  std::shared_ptr<Linear> fc;

 private:
  std::string name_;
  int64_t in_channels_;
};

}  // namespace kd::nn
