// common.cpp: input checks and masks shared by the output (logit) family.
#include "distill/output/common.h"

#include <fmt/format.h>

#include "engine/ops.h"

namespace kd::distill {

void check_logits_labels(const std::string& method, const Tensor& zs, const Tensor& zt, const Tensor& labels) {
  KD_CHECK(zs.defined(), "{}: the student logits are undefined", method);
  KD_CHECK(zs.dtype() == DType::f32, "{}: student logits must be float32, got {}", method, dtype_name(zs.dtype()));
  KD_CHECK(zs.dim() == 2 && zs.size(0) > 0 && zs.size(1) > 0,
           "{}: student logits must be (B, K) with B, K > 0, got shape {}", method, shape_str(zs.shape()));
  const int64_t B = zs.size(0), K = zs.size(1);
  if (zt.defined()) {
    KD_CHECK(zt.dtype() == DType::f32, "{}: teacher logits must be float32, got {}", method, dtype_name(zt.dtype()));
    KD_CHECK(zt.shape() == zs.shape(),
             "{}: teacher logits have shape {} but student logits have shape {}; both must be (B, K) with the same "
             "batch and the same classes",
             method, shape_str(zt.shape()), shape_str(zs.shape()));
  }
  KD_CHECK(labels.defined(), "{}: the labels are undefined", method);
  KD_CHECK(labels.dtype() == DType::i64, "{}: labels must be int64 class indices, got {}", method,
           dtype_name(labels.dtype()));
  KD_CHECK(labels.dim() == 1 && labels.size(0) == B,
           "{}: labels have shape {} but the logits have shape {}; expected labels of shape ({})", method,
           shape_str(labels.shape()), shape_str(zs.shape()), B);
  std::vector<int64_t> y = to_int_vector(labels);
  for (int64_t b = 0; b < B; ++b)
    KD_CHECK(y[b] >= 0 && y[b] < K,
             "{}: label {} of sample {} is out of range for K = {} classes (labels must be in [0, {}))",
             method, y[b], b, K, K);
}

Tensor target_mask(const Tensor& labels, int64_t K) { return gt(one_hot(labels, K), 0.5); }

Tensor other_mask(const Tensor& labels, int64_t K) { return lt(one_hot(labels, K), 0.5); }

Tensor non_target_index(const Tensor& labels, int64_t K) {
  std::vector<int64_t> y = to_int_vector(labels);
  const int64_t B = (int64_t)y.size();
  Tensor idx = empty({B, K - 1}, DType::i64);  // (B, K-1)
  int64_t* p = idx.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t j = 0;
    for (int64_t k = 0; k < K; ++k)
      if (k != y[b]) p[b * (K - 1) + j++] = k;
  }
  return idx;
}

}  // namespace kd::distill
