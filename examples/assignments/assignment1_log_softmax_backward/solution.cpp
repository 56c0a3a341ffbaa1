// solution.cpp: assignment 1's reference solution, the backward kdlab's own log_softmax records
// (engine/ops/activation.cpp, log_softmax), written out as a function.
//
// out_i = x_i - log(sum_k exp(x_k)), so d out_i / d x_j = [i == j] - softmax(x)_j, and
// softmax(x) = exp(out). The vector-Jacobian product:
//   dx_j = sum_i g_i ([i == j] - softmax_j) = g_j - softmax_j * sum_i g_i
// One reduction along dim, no K x K Jacobian.
#include "examples/assignments/assignment1_log_softmax_backward/assignment.h"

#include "engine/ops.h"

namespace assignment {

kd::Tensor log_softmax_backward(const kd::Tensor& out, const kd::Tensor& grad_out, int64_t dim) {
  kd::Tensor softmax = kd::exp(out);                                    // out's shape
  kd::Tensor g_sum = kd::sum(grad_out, {dim}, /*keepdim=*/true);        // out's shape, size 1 along dim
  return kd::sub(grad_out, kd::mul(softmax, g_sum));                    // dx = g - softmax * sum(g)
}

}  // namespace assignment
