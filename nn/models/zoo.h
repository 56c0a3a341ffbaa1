// zoo.h: each architecture family adds its entries to the registry (called from registry.cpp).
#pragma once
#include <vector>

#include "nn/models/model.h"

namespace kd::nn {

void add_resnet_models(std::vector<ModelEntry>& table);       // resnet8..110, resnet8x4, resnet32x4
void add_wrn_models(std::vector<ModelEntry>& table);          // wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2
void add_vgg_models(std::vector<ModelEntry>& table);          // vgg8, vgg11, vgg13 (with BN)
void add_mobilenet_models(std::vector<ModelEntry>& table);    // mobilenetv2 (CIFAR variant)
void add_shufflenet_models(std::vector<ModelEntry>& table);   // shufflenetv1, shufflenetv2
void add_vit_models(std::vector<ModelEntry>& table);          // vit_small_cifar (patch 4)

}  // namespace kd::nn
