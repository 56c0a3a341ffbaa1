// skeleton.cpp: assignment 2, your implementation of DKD's NCKD term.
// Build and check it with
//   ninja -C build assignment2_skeleton && build/assignment2_skeleton
// (the target compiles this file; assignment.h has the equations and the contracts).
//
// What you may use: the engine's differentiable ops from engine/ops.h: div, sub, mul, one_hot,
// log_softmax, softmax, exp, sum, mean, kl_div (read its comment in engine/ops.h: which argument
// is in log space?), and Tensor::detach(). Work on whole (B, K) tensors; no loops are needed.
//
// Things to get right (each one is a part of the checker):
//   - the mask is subtracted after dividing by T, and only at the label;
//   - the KL goes from the teacher to the student: KL(p̂t ‖ p̂s), not the other way round;
//   - the sum runs over the classes and the batch, then × T² / B (the true batch mean);
//   - the teacher gets no gradient.
#include "examples/assignments/assignment2_nckd/assignment.h"

#include "engine/ops.h"

namespace assignment {

kd::Tensor non_target_log_probs(const kd::Tensor& z, const kd::Tensor& labels, double T) {
  // ---- your code here: replace the line below with the body (two or three lines)
  throw kd::Error("assignment 2: non_target_log_probs is not written yet; write its body in "
                  "examples/assignments/assignment2_nckd/skeleton.cpp");
}

kd::Tensor nckd_loss(const kd::Tensor& zs, const kd::Tensor& zt, const kd::Tensor& labels, double T) {
  // ---- your code here: replace the line below with the body (a few lines, using non_target_log_probs)
  throw kd::Error("assignment 2: nckd_loss is not written yet; write its body in "
                  "examples/assignments/assignment2_nckd/skeleton.cpp");
}

}  // namespace assignment
