// model.h: the classifier interface of the model zoo and its explicit registry.
//
// Every classifier returns its logits plus the feature taps that distillation methods read
// (see ../shared/METHODS.md, "the feature-tap contract"):
//   feats        [f0, f1, f2, f3, ...]: stem output, then each stage's output after its final ReLU
//   preact_feats the same maps before that last ReLU
//   pooled       the global-average-pooled last feature map (B, C), the classifier's input
//   pooled_map   that last feature map itself (B, C, H, W), before the pooling (CAT-KD's class
//                activation maps are the classifier applied to it as a 1x1 conv)
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace kd::nn {

struct ModelOutput {
  Tensor logits;                   // (B, K)
  std::vector<Tensor> feats;       // f0..fn
  std::vector<Tensor> preact_feats;
  Tensor pooled;                   // (B, C)
  Tensor pooled_map;               // (B, C, H, W): pooled = its mean over (H, W); undefined for ViT (no spatial map)
  // (B, K, H', W') class activation maps, given by callers that have them (kdlab loss
  // --student-feat cam=FILE.npy); no model fills it: CAT-KD computes them from pooled_map.
  Tensor cam;
};

struct ModelConfig {
  int64_t num_classes = 100;
  int64_t in_channels = 3;
  int64_t image_size = 32;  // input height = width
  uint64_t seed = 0;        // for the initial weights
};

// The final linear layer of a classifier: logits = pooled @ weight^T + bias.
struct ClassifierHead {
  std::string name;  // its dotted module name, as Classifier::classifier_name() declares it ("fc")
  Tensor weight;     // (K, C): the live parameter (training it trains the model)
  Tensor bias;       // (K); undefined when the layer has none
};

class Classifier : public Module {
 public:
  virtual ModelOutput forward(const Tensor& x) = 0;  // x (B, C, H, W)
  ModelOutput operator()(const Tensor& x) { return forward(x); }
  // The dotted module name of the final linear layer, the one that maps ModelOutput::pooled to
  // the logits ("fc", "classifier", "classifier.0", "linear", "head"). Each model declares it, so
  // that nothing has to guess the classifier from parameter shapes. "" names the model itself.
  virtual std::string classifier_name() const = 0;
  // The parameters `classifier_name().weight` (2-D) and `.bias` (if any). Throws kd::Error when the
  // model has no such weight (classifier_name() names a module that is not there).
  ClassifierHead classifier_head() const;
};

// Explicit registry: name -> factory. No static-initialiser tricks; the table is one function.
using ModelFactory = std::function<std::shared_ptr<Classifier>(const ModelConfig&)>;
struct ModelEntry {
  std::string name;
  std::string description;
  ModelFactory create;
};
const std::vector<ModelEntry>& model_registry();
std::vector<std::string> model_names();
// Throws kd::Error listing the known names when `name` is unknown.
std::shared_ptr<Classifier> create_model(const std::string& name, const ModelConfig& config = {});

}  // namespace kd::nn

namespace kd::nn {

// What `kdlab info` prints: parameter count, multiply-accumulates per image and tap shapes.
struct ModelInfo {
  int64_t parameters = 0;
  int64_t macs_per_image = 0;  // conv, linear and matmul multiply-accumulates for one image
  Shape logits;
  std::vector<Shape> feats, preact_feats;
  Shape pooled;
};
// Runs one image of `input_shape` (C, H, W) through the model in eval mode and counts the
// multiply-accumulates by walking the autograd graph of that forward pass.
ModelInfo describe_model(Classifier& model, const Shape& input_shape);
// The MACs of every conv2d, conv_transpose2d, linear, matmul and bmm node in the graph behind `root`.
int64_t count_macs(const Tensor& root);

}  // namespace kd::nn
