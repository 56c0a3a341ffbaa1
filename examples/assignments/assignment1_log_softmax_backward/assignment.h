// Assignment 1: the backward pass of log_softmax.
//
// Forward (engine/ops/activation.cpp, log_softmax), along one dim of x:
//   out_i = x_i - log(sum_j exp(x_j))
// Backward: given out and g = d loss / d out (both of x's shape), return d loss / d x.
// You write log_softmax_backward in skeleton.cpp; the checker (check.cpp) records it as the
// backward of an op whose forward is the engine's, then tests it part by part.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace assignment {

// out: log_softmax(x, dim), the forward's result, saved for the backward (any shape)
// grad_out: d loss / d out, out's shape
// dim: the dimension the softmax ran over, already wrapped to 0 <= dim < out.dim()
// returns: d loss / d x, out's shape
kd::Tensor log_softmax_backward(const kd::Tensor& out, const kd::Tensor& grad_out, int64_t dim);

}  // namespace assignment
