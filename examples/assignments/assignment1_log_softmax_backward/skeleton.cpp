// skeleton.cpp: assignment 1, your implementation of the backward of log_softmax.
// Build and check it with
//   ninja -C build assignment1_skeleton && build/assignment1_skeleton
// (the target compiles this file; assignment.h says what the function receives and returns).
//
// What you may use: the engine's differentiable ops from engine/ops.h (exp, log, mul, sub, sum
// with keepdim, ...) on whole tensors, or plain loops over to_float_vector(...) and
// from_vector(...). The checker tries dim = 1 on (B, K) logits, dim = 0, and the middle dim of a
// 3-D tensor, so the reduction must follow `dim`.
//
// Steps:
//   1. Write the Jacobian d out_i / d x_j of out_i = x_i - log(sum_k exp(x_k)) (one slice along
//      dim). It involves softmax(x); how do you get softmax(x) from `out` alone?
//   2. The backward is the vector-Jacobian product dx_j = sum_i g_i * d out_i / d x_j. Simplify
//      the sum so that no K x K matrix is ever built.
//   3. Write it with ops that reduce along `dim` and keep it (keepdim = true) so it broadcasts
//      back over the slice.
#include "examples/assignments/assignment1_log_softmax_backward/assignment.h"

#include "engine/ops.h"

namespace assignment {

kd::Tensor log_softmax_backward(const kd::Tensor& out, const kd::Tensor& grad_out, int64_t dim) {
  // ---- your code here: replace the line below with the body (a few lines)
  throw kd::Error("assignment 1: log_softmax_backward is not written yet; write its body in "
                  "examples/assignments/assignment1_log_softmax_backward/skeleton.cpp");
}

}  // namespace assignment
