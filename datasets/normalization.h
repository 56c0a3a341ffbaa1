// normalization.h: the published per-channel normalisation of the CIFAR data sets (pixels / 255),
// for the loaders (cifar.cpp) and the tools that need it without reading the data (kdlab export).
#pragma once
#include <vector>

namespace kd::data {

inline const std::vector<float> kCifar10Mean{0.4914f, 0.4822f, 0.4465f}, kCifar10Std{0.2470f, 0.2435f, 0.2616f};
inline const std::vector<float> kCifar100Mean{0.5071f, 0.4867f, 0.4408f}, kCifar100Std{0.2675f, 0.2565f, 0.2761f};

}  // namespace kd::data
