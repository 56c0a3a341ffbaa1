// mobilenetv2.h: the CIFAR MobileNetV2 of mdistiller (mdistiller/models/cifar/mobilenetv2.py).
//
//   mobilenetv2       width multiplier 1.0, expansion 6 (mobilenetv2_T_w(6, 1.0))
//   mobilenetv2_half  width multiplier 0.5, expansion 6 (mdistiller's mobile_half, the
//                     "MobileNetV2" student of the CIFAR-100 benchmark)
//
// stem ("conv1"): conv3x3(in_channels -> 32w, stride 2) - BN - ReLU                f0
// blocks.0 .. blocks.6: InvertedResidual stages, settings (t expansion, c channels, n blocks,
//   s stride of the first block), channels scaled by the width multiplier w (int(c * w)):
//       (1, 16, 1, 1) (T, 24, 2, 1) (T, 32, 3, 2) (T, 64, 4, 2) (T, 96, 3, 1) (T, 160, 3, 2) (T, 320, 1, 1)
//   InvertedResidual ("conv.0" .. "conv.7"):
//       pw conv1x1 (inp -> inp*t) - BN - ReLU, dw conv3x3 (groups inp*t, stride) - BN - ReLU,
//       pw-linear conv1x1 (inp*t -> oup) - BN; plus x when stride 1 and inp == oup.
//   taps, as mdistiller: f1 after blocks.1, f2 after blocks.2, f3 after blocks.4, f4 after blocks.6
// "conv2": conv1x1 (-> 1280, or 1280w when w > 1) - BN - ReLU
// head: global average pool (adaptive; mdistiller's AvgPool2d(2, ceil_mode) is the same on
//       32x32, whose last map is 2x2) -> pooled (B, 1280) -> "classifier.0" Linear -> logits
//
// Feature taps: feats = [f0, f1, f2, f3, f4] exactly as mdistiller. mdistiller's MobileNetV2
// returns no preact_feats; the block outputs f1..f4 end with a BN (no ReLU), so they are their
// own pre-activations, and f0 is given post-ReLU as mdistiller does for f0 in every model:
// preact_feats = feats. pooled = the pooled conv2 output (B, 1280).
// For 32x32 inputs and w = 0.5: f0 (16, 16x16), f1 (12, 16x16), f2 (16, 8x8), f3 (48, 4x4),
// f4 (160, 2x2), pooled 1280.
//
// State-dict names equal mdistiller's ("blocks.3.2.conv.4.running_var", ...). Init as mdistiller:
// conv weights N(0, 2 / (k*k*out_channels)) (= kaiming_normal fan_out), BN weight 1 and bias 0,
// the Linear N(0, 0.01) with bias 0.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/model.h"

namespace kd::nn {

class InvertedResidual : public Layer {
 public:
  InvertedResidual(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (B, inp, H, W) -> (B, oup, H/stride, W/stride)
  std::string type_name() const override { return "InvertedResidual"; }
  std::shared_ptr<Sequential> conv;  // 0..2 pw, 3..5 dw, 6..7 pw-linear
  bool use_res_connect;
};

class MobileNetV2 : public Classifier {
 public:
  MobileNetV2(std::string name, int64_t expand_ratio, double width_mult, const ModelConfig& config);
  ModelOutput forward(const Tensor& x) override;
  std::string type_name() const override { return name_; }
  std::string classifier_name() const override { return "classifier.0"; }

  std::shared_ptr<Sequential> conv1;       // conv3x3 s2, BN, ReLU
  std::shared_ptr<Sequential> blocks;      // 7 stages, each a Sequential of InvertedResidual
  std::shared_ptr<Sequential> conv2;       // conv1x1, BN, ReLU
  std::shared_ptr<Sequential> classifier;  // Linear
  int64_t last_channel;

 private:
  std::string name_;
  int64_t in_channels_;
};

}  // namespace kd::nn
