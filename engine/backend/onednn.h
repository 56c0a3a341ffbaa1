// onednn.h: the oneDNN backend: conv2d, batch_norm, max/avg pooling, relu and linear (inner product) computed with
// oneDNN primitives, forward and backward side by side (engine/backend/onednn.cpp).
//
// The ops in engine/ops/ call these when their choose_*_path() function (backend.h) says so,
// after checking the arguments; each records the same autograd node (op name, inputs) as the
// reference op, so count_macs, the graph printer and the tests see no difference.
//
// Tensors stay NCHW at the API. oneDNN picks its own (blocked) layouts for convolutions
// (format_tag::any); inputs are reordered into them, and results out of them, around each
// primitive, and a training step's backward reuses what it can: the output gradient is reordered
// once for both backward passes, and the reordered weights are kept for the backward-data pass
// when it wants the forward's layout (else each pass reorders the weights once per step into its
// own layout). Primitives and reorders are built once per shape and kept in a cache
// (cached_primitives(), clear_cache()).
//
// Threads: oneDNN is built on OpenMP here and follows omp_set_num_threads, i.e. kd::set_num_threads.
//
// In a build without oneDNN (no KDLAB_HAVE_DNNL) these functions exist but throw; the
// choose_*_path() functions never pick them there.
#pragma once
#include <cstddef>

#include "engine/kernels/pool_ref.h"
#include "engine/ops.h"

namespace kd::onednn {

// Same arguments and results as kd::conv2d / kd::batch_norm / kd::relu (engine/ops.h).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding, Int2 dilation,
              int64_t groups);
// relu(conv2d(...)) as one primitive (the ReLU a oneDNN post-op on the output); inference only:
// nothing may need a gradient. kd::conv2d_inference calls it.
Tensor conv2d_relu_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                             Int2 dilation, int64_t groups);
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps);
Tensor relu(const Tensor& x);
// x (..., in), weight (out, in), bias (out) or undefined -> (..., out): oneDNN's inner product
// (forward, backward data, backward weights with the bias gradient in the same pass).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);
// x (B, C, H, W) pooled with the window geometry the caller computed (ops/pool.cpp).
// max_pool2d returns an undefined tensor when x holds a NaN: oneDNN's max skips NaNs, PyTorch
// propagates them, so the caller falls back to the reference kernel.
Tensor max_pool2d(const Tensor& x, const kernels::PoolGeometry& g);
Tensor avg_pool2d(const Tensor& x, const kernels::PoolGeometry& g, bool count_include_pad);

// The implementation oneDNN picked for the forward convolution of this shape, e.g.
// "jit:avx512_core" or "gemm:jit" (for tests and the verbose log).
std::string conv_implementation(const Shape& x, const Shape& w, Int2 stride, Int2 padding, Int2 dilation,
                                int64_t groups);

// The number of shapes with primitives in the cache, and a way to drop them all.
size_t cached_primitives();
void clear_cache();

}  // namespace kd::onednn
