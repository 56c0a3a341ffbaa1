// loss.h: the loss of one batch, as the training layer and every distillation method return it.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace kd::train {

// total (0-d, differentiable) and named parts (0-d, for logging): the weighted terms that add up
// to total, named as in the paper ("ce", "tckd", "nckd"). distill::LossBreakdown is this struct.
struct Loss {
  Tensor total;
  std::vector<std::pair<std::string, Tensor>> parts;
};

}  // namespace kd::train
