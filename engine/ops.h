// ops.h: every differentiable op of the engine.
//
// Each op lives in engine/ops/<group>.cpp with its forward and backward side by side. The
// forward calls a kernel (engine/kernels/); the backward is written with other ops under
// NoGradGuard (grad of grad is not supported). Broadcasting follows PyTorch/NumPy rules.
// Shape comments use B batch, C channels, H/W height/width, K classes.
#pragma once
#include <optional>
#include <vector>

#include "engine/tensor.h"

namespace kd {

class Generator;

// A pair of ints for 2-D windows: Int2(3) == Int2(3, 3).
struct Int2 {
  int64_t h, w;
  Int2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit on purpose, as PyTorch's int-or-tuple
  Int2(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};

enum class Reduction { None, Mean, Sum, BatchMean };  // BatchMean: only kl_div

// ===================================================================== elementwise (ops/elementwise.cpp)
Shape broadcast_shapes(const Shape& a, const Shape& b);  // error names both shapes
// Sum a (broadcast) gradient down to `shape`: the backward of broadcasting.
Tensor sum_to(const Tensor& g, const Shape& shape);

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor neg(const Tensor& a);
Tensor pow(const Tensor& a, double exponent);
Tensor pow(const Tensor& a, const Tensor& exponent);  // a > 0 where exponent varies
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi);
Tensor relu(const Tensor& a);
Tensor relu6(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor gelu(const Tensor& a, bool tanh_approximation = false);  // default: exact (erf)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond: u8 mask
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
// Comparisons: u8 results (0/1), no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor gt(const Tensor& a, double s);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(s, a); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }

// ===================================================================== reductions (ops/reduce.cpp)
// dims empty = all dims. Negative dims count from the end.
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// unbiased = true divides by N-1 (PyTorch's default correction=1).
Tensor var(const Tensor& a, const std::vector<int64_t>& dims = {}, bool unbiased = true,
           bool keepdim = false);
Tensor logsumexp(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
// p-norm over dims: (sum |a|^p)^(1/p); p = 2 default.
Tensor norm(const Tensor& a, double p = 2.0, const std::vector<int64_t>& dims = {}, bool keepdim = false);
struct ValuesIndices {
  Tensor values;   // f32
  Tensor indices;  // i64, first occurrence on ties (as PyTorch on CPU)
};
ValuesIndices max(const Tensor& a, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a);  // over everything, 0-d
Tensor min(const Tensor& a);
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& a, int64_t dim, bool keepdim = false);

// ===================================================================== shape and indexing (ops/shape.cpp)
// (The view methods of Tensor -- reshape, permute, slice, ... -- are in ops/views.cpp.)
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& a, int64_t split_size, int64_t dim);  // last piece may be smaller
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim);
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);  // index: i64, 1-D
Tensor gather(const Tensor& a, int64_t dim, const Tensor& index);        // index: i64, same ndim
// Out of place: a copy of `a` with src written at index along dim (scatter_ in PyTorch).
Tensor scatter(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& src);
Tensor scatter_add(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& src);
Tensor one_hot(const Tensor& labels, int64_t num_classes);  // (N) i64 -> (N, K) f32
// Constant padding; pads as PyTorch's F.pad: (left, right) of the last dim, then (top, bottom)
// of the one before, ...
Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value = 0.0);

// ===================================================================== linear algebra (ops/linalg.cpp)
// matmul: (n,k)@(k,m); batched (..., n, k) @ (..., k, m) with broadcast batch dims; 1-D operands
// as in torch.matmul. All products go through one cblas_sgemm wrapper (kernels/gemm.h).
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor bmm(const Tensor& a, const Tensor& b);  // (B,n,k) @ (B,k,m)
// x (..., in) , weight (out, in), bias (out) or undefined -> (..., out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ===================================================================== neural-network ops (ops/conv.cpp, ops/pool.cpp, ops/norm.cpp, ops/activation.cpp)
// x (B, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout) or undefined
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Int2 stride = 1,
              Int2 padding = 0, Int2 dilation = 1, int64_t groups = 1);
// Inference only (records no autograd node; an error when an input requires a gradient and
// gradients are on): conv2d, then max(y, 0) when relu, fused into one pass where the backend
// can (oneDNN: a post-op). nn::conv_bn uses it for a convolution with its batch norm folded in.
Tensor conv2d_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                        Int2 dilation, int64_t groups, bool relu);
// x (B, Cin, H, W), weight (Cin, Cout/groups, kh, kw) as PyTorch
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        Int2 stride = 1, Int2 padding = 0, Int2 output_padding = 0,
                        int64_t groups = 1, Int2 dilation = 1);
Tensor max_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride = std::nullopt,
                  Int2 padding = 0, bool ceil_mode = false);
Tensor avg_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride = std::nullopt,
                  Int2 padding = 0, bool ceil_mode = false, bool count_include_pad = true);
Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size);
// Training: normalise with batch statistics (biased variance) and, when running_mean/var are
// defined, update them in place: r = (1 - momentum) r + momentum * stat, with the unbiased
// batch variance as PyTorch. Eval: normalise with the running statistics. x: (B, C, ...).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// Normalise over the trailing dims given by normalized_shape.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// x / max(||x||_p over dim, eps)
Tensor normalize(const Tensor& x, double p = 2.0, int64_t dim = 1, double eps = 1e-12);

// ===================================================================== losses (ops/loss.cpp)
struct CrossEntropyOptions {
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0.0;
  Tensor weight;               // (K) class weights, optional
  int64_t ignore_index = -100;
};
// logits (B, K) f32, target (B) i64 -> PyTorch's F.cross_entropy
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt = {});
// log_probs (B, K), target (B) i64
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = Reduction::Mean,
                const Tensor& weight = Tensor(), int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                      double beta = 1.0);
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                  double delta = 1.0);
// input: log-probabilities; target: probabilities (or log-probabilities with log_target).
// BatchMean divides the sum by the batch size (true KL per sample), Mean by every element.
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
              bool log_target = false);
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::Mean,
                                        const Tensor& pos_weight = Tensor());

}  // namespace kd
