#include <algorithm>

#include "nn/models/model.h"
#include "nn/models/zoo.h"

namespace kd::nn {

const std::vector<ModelEntry>& model_registry() {
  static const std::vector<ModelEntry> table = [] {
    std::vector<ModelEntry> t;
    add_resnet_models(t);
    add_wrn_models(t);
    add_vgg_models(t);
    add_mobilenet_models(t);
    add_shufflenet_models(t);
    add_vit_models(t);
    return t;
  }();
  return table;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& e : model_registry()) names.push_back(e.name);
  return names;
}

std::shared_ptr<Classifier> create_model(const std::string& name, const ModelConfig& config) {
  for (const auto& e : model_registry())
    if (e.name == name) {
      KD_CHECK(config.num_classes > 0 && config.in_channels > 0 && config.image_size > 0,
               "model {}: num_classes, in_channels and image_size must be positive (got {}, {}, {})", name,
               config.num_classes, config.in_channels, config.image_size);
      return e.create(config);
    }
  throw Error(fmt::format("unknown model '{}'; known models: {}", name, fmt::join(model_names(), ", ")));
}

ClassifierHead Classifier::classifier_head() const {
  ClassifierHead head;
  head.name = classifier_name();
  const std::string prefix = head.name.empty() ? "" : head.name + ".";
  for (const auto& [name, p] : named_parameters()) {
    if (name == prefix + "weight") head.weight = p;
    if (name == prefix + "bias") head.bias = p;
  }
  KD_CHECK(head.weight.defined() && head.weight.dim() == 2,
           "model {} declares its classifier as '{}' but has no 2-D parameter '{}weight'; make classifier_name() "
           "return the dotted name of its final Linear layer",
           type_name(), head.name, prefix);
  return head;
}

}  // namespace kd::nn
