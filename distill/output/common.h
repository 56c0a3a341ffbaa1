// common.h: what the output (logit) family shares: input checks, the target / non-target
// masks and the explain hook.
#pragma once
#include <functional>
#include <string>

#include "distill/distiller.h"
#include "engine/tensor.h"

namespace kd::distill {

// Shows one intermediate through an ExplainFn (distill/distiller.h), when there is one.
inline void show_step(const ExplainFn& fn, const std::string& name, const Tensor& value) {
  if (fn) fn(name, value);
}

// Student logits zs (B, K) float32, teacher logits zt of the same shape (skipped when
// undefined), labels (B) int64 with every label in [0, K). Errors name the method, the shapes
// and the fix.
void check_logits_labels(const std::string& method, const Tensor& zs, const Tensor& zt, const Tensor& labels);

// (B, K) u8 masks: gt_mask[b, k] = (k == y_b), other_mask = 1 - gt_mask.
Tensor target_mask(const Tensor& labels, int64_t K);
Tensor other_mask(const Tensor& labels, int64_t K);
// (B, K-1) int64: the non-target classes of each sample in increasing order (for gather).
Tensor non_target_index(const Tensor& labels, int64_t K);

}  // namespace kd::distill
