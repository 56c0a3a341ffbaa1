// Assignment 2: DKD's non-target class knowledge distillation term (NCKD).
//
// DKD (Zhao et al., CVPR 2022, arXiv 2203.08679; docs/methods/dkd.md) splits the KD loss into a
// target-class term (TCKD) and a non-target term (NCKD). NCKD compares the teacher's and the
// student's distributions over the classes other than the label, each renormalised over those
// K - 1 classes. As in the official code (mdistiller, DKD.py), the target class is removed by
// subtracting 1000 from its logit after dividing by T:
//   p̂ = softmax(z / T - 1000 · onehot(y))                   for student (p̂s) and teacher (p̂t)
//   NCKD = T² / B · Σ_b KL(p̂t_b ‖ p̂s_b),   KL(p ‖ q) = Σ_k p_k (log p_k - log q_k)
// You write the two functions in skeleton.cpp; the checker (check.cpp) tests them part by part.
#pragma once
#include "engine/tensor.h"

namespace assignment {

// log p̂ = log_softmax(z / T - 1000 · onehot(y)) along dim 1.
// z: (B, K) float32 logits, labels: (B) int64 in [0, K), T > 0. Returns (B, K); the label's entry
// is about -1000 (its probability is 0 for all practical purposes).
kd::Tensor non_target_log_probs(const kd::Tensor& z, const kd::Tensor& labels, double T);

// NCKD = T² / B · Σ_b KL(p̂t_b ‖ p̂s_b): a 0-d tensor, differentiable in zs. The teacher is
// frozen: no gradient may flow into zt.
kd::Tensor nckd_loss(const kd::Tensor& zs, const kd::Tensor& zt, const kd::Tensor& labels, double T);

}  // namespace assignment
