// vgg.h: the CIFAR VGGs with BatchNorm of mdistiller (mdistiller/models/cifar/vgg.py; its
// "vgg8", "vgg11", "vgg13" are vgg8_bn, vgg11_bn, vgg13_bn).
//
// Five blocks of conv3x3(bias) - BN - ReLU units; each block's last ReLU is left out of the
// block (the network applies it, so the pre-activation can be tapped):
//   vgg8:  64 | 128 | 256      | 512      | 512
//   vgg11: 64 | 128 | 256, 256 | 512, 512 | 512, 512
//   vgg13: 64, 64 | 128, 128 | 256, 256 | 512, 512 | 512, 512
// forward (32x32 input):
//   f0 = ReLU(block0(x))                     (B, 64, 32, 32)   preact_feats[0] = f0
//   f1 = ReLU(block1(maxpool(f0)))           (B, 128, 16, 16)  preact_feats[1] = before the ReLU
//   f2 = ReLU(block2(maxpool(f1)))           (B, 256, 8, 8)    ...
//   f3 = ReLU(block3(maxpool(f2)))           (B, 512, 4, 4)
//   f4 = ReLU(block4(f3))                    (B, 512, 4, 4)    (mdistiller pools f3 first only
//                                                                for 64x64 inputs; so does this)
//   pooled = global average pool of f4 (B, 512) -> classifier (Linear) -> logits (B, K)
//
// Names equal mdistiller's: "block1.0.weight" (conv), "block1.1.running_mean" (BN),
// "classifier.weight". Init as mdistiller: conv weights N(0, 2 / (k*k*out_channels)) and bias 0,
// BN weight 1 and bias 0, classifier weight N(0, 0.01^2) and bias 0.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

class CifarVGG : public Classifier {
 public:
  // blocks: the output channels of each conv, per block (five blocks).
  CifarVGG(std::string name, const std::vector<std::vector<int64_t>>& blocks, const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "classifier"; }

  std::shared_ptr<Sequential> block0, block1, block2, block3, block4;
  std::shared_ptr<MaxPool2d> pool0, pool1, pool2, pool3;
  std::shared_ptr<AdaptiveAvgPool2d> pool4;
  std::shared_ptr<Linear> classifier;

 private:
  std::string name_;
  int64_t in_channels_;
};

}  // namespace kd::nn
