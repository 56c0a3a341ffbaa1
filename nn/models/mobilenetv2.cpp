#include "nn/models/mobilenetv2.h"

#include "nn/init.h"
#include "nn/models/zoo.h"

namespace kd::nn {

// mdistiller's conv init: N(0, sqrt(2 / n)) with n = kh * kw * out_channels (groups ignored),
// which is kaiming_normal_(mode="fan_out", relu). No conv of this network has a bias.
static std::shared_ptr<Conv2d> mbv2_conv(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t groups,
                                         Generator& gen) {
  auto conv = std::make_shared<Conv2d>(cin, cout, k, gen, stride, /*padding=*/k / 2, /*dilation=*/1, groups,
                                       /*bias=*/false);
  init::kaiming_normal_fan_out_(conv->weight, gen);
  return conv;
}

// conv k x k - BN - ReLU as one Sequential ("0", "1", "2"): mdistiller's conv_bn / conv_1x1_bn.
static std::shared_ptr<Sequential> conv_bn_relu(int64_t cin, int64_t cout, int64_t k, int64_t stride,
                                                Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->push_back(mbv2_conv(cin, cout, k, stride, 1, gen));
  s->push_back(BatchNorm2d(cout));
  s->push_back(std::make_shared<ReLU>());
  return s;
}

// ---------------------------------------------------------------- InvertedResidual

InvertedResidual::InvertedResidual(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio, Generator& gen)
    : use_res_connect(stride == 1 && inp == oup) {
  KD_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got {}", stride);
  const int64_t hidden = inp * expand_ratio;
  conv = std::make_shared<Sequential>();
  conv->push_back(mbv2_conv(inp, hidden, 1, 1, 1, gen));  // 0: pw expand
  conv->push_back(BatchNorm2d(hidden));                   // 1
  conv->push_back(std::make_shared<ReLU>());              // 2
  conv->push_back(mbv2_conv(hidden, hidden, 3, stride, /*groups=*/hidden, gen));  // 3: depthwise
  conv->push_back(BatchNorm2d(hidden));                   // 4
  conv->push_back(std::make_shared<ReLU>());              // 5
  conv->push_back(mbv2_conv(hidden, oup, 1, 1, 1, gen));  // 6: pw-linear (no ReLU after)
  conv->push_back(BatchNorm2d(oup));                      // 7
  register_module("conv", conv);
}

Tensor InvertedResidual::forward(const Tensor& x) {
  Tensor h = conv->forward(x);  // (B, oup, H/stride, W/stride)
  return use_res_connect ? x + h : h;
}

// ---------------------------------------------------------------- the network

MobileNetV2::MobileNetV2(std::string name, int64_t T, double width_mult, const ModelConfig& config)
    : name_(std::move(name)), in_channels_(config.in_channels) {
  KD_CHECK(T >= 1 && width_mult > 0, "{}: expansion ratio must be >= 1 and width multiplier > 0, got {} and {}",
           name_, T, width_mult);
  Generator gen(config.seed);
  struct Setting {
    int64_t t, c, n, s;  // expansion, channels, blocks, stride of the first block
  };
  const Setting settings[] = {{1, 16, 1, 1}, {T, 24, 2, 1},  {T, 32, 3, 2}, {T, 64, 4, 2},
                              {T, 96, 3, 1}, {T, 160, 3, 2}, {T, 320, 1, 1}};

  int64_t input_channel = (int64_t)(32 * width_mult);
  conv1 = register_module("conv1", conv_bn_relu(config.in_channels, input_channel, 3, 2, gen));
  blocks = std::make_shared<Sequential>();
  for (const Setting& st : settings) {
    const int64_t output_channel = (int64_t)(st.c * width_mult);
    auto stage = std::make_shared<Sequential>();
    for (int64_t i = 0; i < st.n; ++i) {
      stage->push_back(std::make_shared<InvertedResidual>(input_channel, output_channel, i == 0 ? st.s : 1, st.t, gen));
      input_channel = output_channel;
    }
    blocks->push_back(stage);
  }
  register_module("blocks", blocks);

  last_channel = width_mult > 1.0 ? (int64_t)(1280 * width_mult) : 1280;
  conv2 = register_module("conv2", conv_bn_relu(input_channel, last_channel, 1, 1, gen));

  auto fc = std::make_shared<Linear>(last_channel, config.num_classes, gen);
  init::normal_(fc->weight, 0.0, 0.01, gen);  // mdistiller: N(0, 0.01), bias 0
  init::constant_(fc->bias, 0.0);
  classifier = register_module("classifier", std::make_shared<Sequential>(std::vector<std::shared_ptr<Layer>>{fc}));
  // BN weight 1, bias 0: BatchNorm's constructor already sets them.
}

ModelOutput MobileNetV2::forward(const Tensor& x) {
  KD_CHECK(x.dim() == 4 && x.size(1) == in_channels_,
           "{}: expected input (B, {}, H, W), got {}; set ModelConfig::in_channels to the image's channel count",
           name_, in_channels_, shape_str(x.shape()));
  Tensor f0 = conv1->forward(x);        // (B, 32w, H/2, W/2)
  Tensor h = (*blocks)[0].forward(f0);  // (B, 16w, H/2, W/2)
  Tensor f1 = (*blocks)[1].forward(h);  // (B, 24w, H/2, W/2)
  Tensor f2 = (*blocks)[2].forward(f1); // (B, 32w, H/4, W/4)
  h = (*blocks)[3].forward(f2);         // (B, 64w, H/8, W/8)
  Tensor f3 = (*blocks)[4].forward(h);  // (B, 96w, H/8, W/8)
  h = (*blocks)[5].forward(f3);         // (B, 160w, H/16, W/16)
  Tensor f4 = (*blocks)[6].forward(h);  // (B, 320w, H/16, W/16)
  h = conv2->forward(f4);               // (B, 1280, H/16, W/16)

  ModelOutput o;
  o.feats = {f0, f1, f2, f3, f4};
  o.preact_feats = o.feats;  // the block outputs end in BN, not ReLU (see the header)
  o.pooled_map = h;                                 // (B, 1280, H/16, W/16)
  o.pooled = adaptive_avg_pool2d(h, 1).flatten(1);  // (B, 1280)
  o.logits = classifier->forward(o.pooled);         // (B, K)
  return o;
}

// ---------------------------------------------------------------- registry

void add_mobilenet_models(std::vector<ModelEntry>& table) {
  table.push_back({"mobilenetv2", "CIFAR MobileNetV2 (expansion 6, width 1.0), mdistiller mobilenetv2_T_w(6, 1.0)",
                   [](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                     return std::make_shared<MobileNetV2>("mobilenetv2", 6, 1.0, cfg);
                   }});
  table.push_back({"mobilenetv2_half", "CIFAR MobileNetV2 (expansion 6, width 0.5), mdistiller mobile_half",
                   [](const ModelConfig& cfg) -> std::shared_ptr<Classifier> {
                     return std::make_shared<MobileNetV2>("mobilenetv2_half", 6, 0.5, cfg);
                   }});
}

}  // namespace kd::nn
