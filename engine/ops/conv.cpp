// Convolutions: conv2d and conv_transpose2d, forward and backward side by side.
//
// Three kernels do all the work, each one loop over images and groups around im2col / col2im
// (kernels/conv_ref.h) and one sgemm (kernels/gemm.h). For one image and one group, with
// col = im2col(x) of shape (Cin_g*kh*kw, OH*OW) and W_g of shape (Cout_g, Cin_g*kh*kw):
//   conv_forward          y  = W_g @ col                      (+ bias)
//   conv_backward_data    dx = col2im(W_g^T @ dy)
//   conv_backward_weight  dW_g += dy @ col^T                  (summed over the batch)
// conv_transpose2d is conv2d's backward-data used as a forward, so its own backward is
// conv2d's forward (for the input) and the same weight gradient with the roles of input and
// output swapped. The weight layouts line up: conv2d's (Cout, Cin/G, kh, kw) read with Cout
// as the transpose's input channels is exactly PyTorch's transpose layout (Cin, Cout/G, kh, kw).
#include <cstring>
#include <tuple>
#include <vector>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/backend/onednn.h"
#include "engine/kernels/conv_ref.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/gemm.h"
#include "engine/ops.h"
#include "engine/parallel.h"

namespace kd {

namespace {

struct ConvParams {
  Int2 stride, padding, dilation;
  int64_t groups;
};

// Sizes of a conv2d in its own orientation: x (B, Cin, H, W) -> y (B, Cout, OH, OW) with a
// weight (Cout, Cin/G, kh, kw). conv_transpose2d uses the same struct with x and y swapped.
struct ConvSizes {
  int64_t B, Cin, H, W, Cout, OH, OW, kh, kw, G;
  int64_t cin_g() const { return Cin / G; }
  int64_t cout_g() const { return Cout / G; }
  kernels::ConvGeometry geometry(const ConvParams& p) const {
    return {cin_g(), H, W, kh, kw, p.stride.h, p.stride.w, p.padding.h, p.padding.w, p.dilation.h, p.dilation.w, OH, OW};
  }
  // A 1x1 kernel with stride 1 and no padding reads the image as it is: no im2col needed.
  bool pointwise(const ConvParams& p) const {
    return kh == 1 && kw == 1 && p.stride.h == 1 && p.stride.w == 1 && p.padding.h == 0 && p.padding.w == 0 &&
           OH == H && OW == W;
  }
};

Tensor contiguous_data(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().contiguous();
}

// The CPU path (im2col or pointwise, then sgemm) for these sizes, for the KDLAB_VERBOSE log.
std::string cpu_conv_path(const ConvSizes& s, const ConvParams& p, int64_t threads) {
  const char* unroll = s.pointwise(p) ? "pointwise (no im2col)" : "im2col";
  return fmt::format("{} + sgemm, {} kernels, {} thread(s) over {} image(s)", unroll, kernels::cpu().name,
                     threads, s.B);
}

// The images of a batch are spread over threads (engine/parallel.h): each thread unrolls its
// images into its own scratch tensor, which comes from the storage cache (engine/tensor.h), so
// a training step reuses the same blocks instead of asking the OS for fresh pages every call.
// An sgemm called from a worker thread runs on that thread (OpenBLAS's OpenMP build).

// y (B, Cout, OH, OW) = conv of x (B, Cin, H, W) with w (Cout, Cin/G, kh, kw), plus bias (Cout) if defined.
Tensor conv_forward(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, const ConvSizes& s,
                    const ConvParams& p) {
  Tensor x = contiguous_data(x_in), w = contiguous_data(w_in);
  Tensor y = empty({s.B, s.Cout, s.OH, s.OW});
  const kernels::ConvGeometry geo = s.geometry(p);
  const kernels::CpuKernels& cpu = kernels::cpu();
  const int64_t K = s.cin_g() * s.kh * s.kw, L = s.OH * s.OW;
  const bool pointwise = s.pointwise(p);
  Tensor bias = bias_in.defined() ? contiguous_data(bias_in) : Tensor();
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pb = bias.defined() ? bias.data<float>() : nullptr;
  float* py = y.data<float>();
  if (kernels::verbose())
    kernels::log_path("conv2d forward", x.shape(), cpu_conv_path(s, p, parallel_chunks(s.B, 1)));
  parallel_for(s.B, 1, [&](int64_t b0, int64_t b1) {
    Tensor col = pointwise ? Tensor() : empty({K, L});  // (K, L), this thread's scratch
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t g = 0; g < s.G; ++g) {
        const float* xg = px + (b * s.Cin + g * s.cin_g()) * s.H * s.W;  // (Cin_g, H, W)
        const float* wg = pw + g * s.cout_g() * K;                        // (Cout_g, K)
        float* yg = py + (b * s.Cout + g * s.cout_g()) * L;               // (Cout_g, L)
        const float* cols = xg;
        if (!pointwise) {
          cpu.im2col(xg, geo, col.data<float>());
          cols = col.data<float>();
        }
        kernels::sgemm(false, false, s.cout_g(), L, K, 1.f, wg, K, cols, L, 0.f, yg, L);  // y = W_g @ col
      }
      if (pb)
        for (int64_t c = 0; c < s.Cout; ++c) cpu.add_scalar(py + (b * s.Cout + c) * L, pb[c], py + (b * s.Cout + c) * L, L);
    }
  });
  return y;
}

// dx (B, Cin, H, W) from dy (B, Cout, OH, OW) and w (Cout, Cin/G, kh, kw): dx = col2im(W_g^T @ dy).
Tensor conv_backward_data(const Tensor& dy_in, const Tensor& w_in, const ConvSizes& s, const ConvParams& p) {
  Tensor dy = contiguous_data(dy_in), w = contiguous_data(w_in);
  Tensor dx = empty({s.B, s.Cin, s.H, s.W});  // each image is zeroed (col2im) or overwritten (pointwise) below
  const kernels::ConvGeometry geo = s.geometry(p);
  const kernels::CpuKernels& cpu = kernels::cpu();
  const int64_t K = s.cin_g() * s.kh * s.kw, L = s.OH * s.OW;
  const bool pointwise = s.pointwise(p);
  const float* pdy = dy.data<float>();
  const float* pw = w.data<float>();
  float* pdx = dx.data<float>();
  if (kernels::verbose())
    kernels::log_path("conv2d backward data", dy.shape(), cpu_conv_path(s, p, parallel_chunks(s.B, 1)));
  parallel_for(s.B, 1, [&](int64_t b0, int64_t b1) {
    Tensor dcol = pointwise ? Tensor() : empty({K, L});  // (K, L), this thread's scratch
    for (int64_t b = b0; b < b1; ++b) {
      if (!pointwise) std::memset(pdx + b * s.Cin * s.H * s.W, 0, s.Cin * s.H * s.W * sizeof(float));
      for (int64_t g = 0; g < s.G; ++g) {
        const float* dyg = pdy + (b * s.Cout + g * s.cout_g()) * L;  // (Cout_g, L)
        const float* wg = pw + g * s.cout_g() * K;                   // (Cout_g, K)
        float* dxg = pdx + (b * s.Cin + g * s.cin_g()) * s.H * s.W;  // (Cin_g, H, W)
        if (pointwise) {  // the column matrix is the image itself
          kernels::sgemm(true, false, K, L, s.cout_g(), 1.f, wg, K, dyg, L, 0.f, dxg, L);
          continue;
        }
        kernels::sgemm(true, false, K, L, s.cout_g(), 1.f, wg, K, dyg, L, 0.f, dcol.data<float>(), L);  // dcol = W_g^T dy
        cpu.col2im(dcol.data<float>(), geo, dxg);
      }
    }
  });
  return dx;
}

// dw (Cout, Cin/G, kh, kw) from x (B, Cin, H, W) and dy (B, Cout, OH, OW): dW_g = sum_b dy @ col^T.
// Each thread sums its images into its own partial dW; the partials are added in chunk order.
Tensor conv_backward_weight(const Tensor& x_in, const Tensor& dy_in, const ConvSizes& s, const ConvParams& p) {
  Tensor x = contiguous_data(x_in), dy = contiguous_data(dy_in);
  const kernels::ConvGeometry geo = s.geometry(p);
  const kernels::CpuKernels& cpu = kernels::cpu();
  const int64_t K = s.cin_g() * s.kh * s.kw, L = s.OH * s.OW;
  const bool pointwise = s.pointwise(p);
  const float* px = x.data<float>();
  const float* pdy = dy.data<float>();
  const int64_t chunks = parallel_chunks(s.B, 1), dw_size = s.Cout * K;
  Tensor dw = zeros({s.Cout, s.cin_g(), s.kh, s.kw});                         // chunk 0 sums here
  Tensor others = chunks > 1 ? zeros({chunks - 1, dw_size}) : Tensor();  // the other chunks' partial dW
  if (kernels::verbose()) kernels::log_path("conv2d backward weight", x.shape(), cpu_conv_path(s, p, chunks));
  parallel_for_chunks(s.B, 1, [&](int64_t chunk, int64_t b0, int64_t b1) {
    Tensor col = pointwise ? Tensor() : empty({K, L});  // (K, L), this thread's scratch
    float* pdw = chunk == 0 ? dw.data<float>() : others.data<float>() + (chunk - 1) * dw_size;  // (Cout, K)
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t g = 0; g < s.G; ++g) {
        const float* xg = px + (b * s.Cin + g * s.cin_g()) * s.H * s.W;  // (Cin_g, H, W)
        const float* dyg = pdy + (b * s.Cout + g * s.cout_g()) * L;      // (Cout_g, L)
        float* dwg = pdw + g * s.cout_g() * K;                            // (Cout_g, K)
        const float* cols = xg;
        if (!pointwise) {
          cpu.im2col(xg, geo, col.data<float>());
          cols = col.data<float>();
        }
        kernels::sgemm(false, true, s.cout_g(), K, L, 1.f, dyg, L, cols, L, 1.f, dwg, K);  // dW_g += dy col^T
      }
    }
  });
  for (int64_t c = 1; c < chunks; ++c) cpu.axpy(1.f, others.data<float>() + (c - 1) * dw_size, dw.data<float>(), dw_size);
  return dw;
}

// ------------------------------------------------------------------ argument checks

void check_common(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvParams& p) {
  KD_CHECK(x.defined() && w.defined(), "{}: the input and the weight must be defined tensors", op);
  KD_CHECK(x.dtype() == DType::f32 && w.dtype() == DType::f32,
           "{} needs float32 input and weight, got {} and {}; convert with .to(kd::DType::f32)", op,
           dtype_name(x.dtype()), dtype_name(w.dtype()));
  KD_CHECK(x.dim() == 4, "{}: the input must be 4-D (B, C, H, W), got shape {}; add a batch dim with unsqueeze(0)",
           op, shape_str(x.shape()));
  KD_CHECK(w.dim() == 4, "{}: the weight must be 4-D, got shape {}", op, shape_str(w.shape()));
  KD_CHECK(p.groups >= 1, "{}: groups must be at least 1, got {}", op, p.groups);
  KD_CHECK(p.stride.h >= 1 && p.stride.w >= 1, "{}: stride must be positive, got ({}, {})", op, p.stride.h, p.stride.w);
  KD_CHECK(p.dilation.h >= 1 && p.dilation.w >= 1, "{}: dilation must be positive, got ({}, {})", op, p.dilation.h,
           p.dilation.w);
  KD_CHECK(p.padding.h >= 0 && p.padding.w >= 0, "{}: padding must be non-negative, got ({}, {})", op, p.padding.h,
           p.padding.w);
  KD_CHECK(x.size(1) % p.groups == 0, "{}: input channels {} (input shape {}) are not divisible by groups {}", op,
           x.size(1), shape_str(x.shape()), p.groups);
  KD_CHECK(w.size(2) >= 1 && w.size(3) >= 1, "{}: empty kernel in weight of shape {}", op, shape_str(w.shape()));
  if (bias.defined())
    KD_CHECK(bias.dtype() == DType::f32, "{} needs a float32 bias, got {}", op, dtype_name(bias.dtype()));
}

void check_bias(const char* op, const Tensor& bias, int64_t cout) {
  if (!bias.defined()) return;
  KD_CHECK(bias.dim() == 1 && bias.size(0) == cout, "{}: the bias must have shape ({}) for {} output channels, got {}",
           op, cout, cout, shape_str(bias.shape()));
}

}  // namespace

// ------------------------------------------------------------------ conv2d

// Checks conv2d's arguments (errors say which shape is wrong and how) and returns its sizes.
static ConvSizes conv2d_sizes(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvParams& p) {
  const Int2 stride = p.stride, padding = p.padding, dilation = p.dilation;
  const int64_t groups = p.groups;
  check_common("conv2d", x, weight, bias, p);
  ConvSizes s{};
  s.B = x.size(0), s.Cin = x.size(1), s.H = x.size(2), s.W = x.size(3);
  s.Cout = weight.size(0), s.kh = weight.size(2), s.kw = weight.size(3), s.G = groups;
  KD_CHECK(weight.size(1) * groups == s.Cin,
           "conv2d: the weight of shape {} expects {} input channels (weight.shape[1] = {} times groups = {}), but "
           "the input of shape {} has {}",
           shape_str(weight.shape()), weight.size(1) * groups, weight.size(1), groups, shape_str(x.shape()), s.Cin);
  KD_CHECK(s.Cout % groups == 0, "conv2d: output channels {} (weight shape {}) are not divisible by groups {}", s.Cout,
           shape_str(weight.shape()), groups);
  check_bias("conv2d", bias, s.Cout);
  // the dilated kernel spans d*(k-1)+1 pixels; it must fit in the padded input at least once
  const int64_t span_h = dilation.h * (s.kh - 1) + 1, span_w = dilation.w * (s.kw - 1) + 1;
  const int64_t padded_h = s.H + 2 * padding.h, padded_w = s.W + 2 * padding.w;
  KD_CHECK(padded_h >= span_h && padded_w >= span_w,
           "conv2d: output size <= 0: the padded input {}x{} (input {} with padding ({}, {})) is smaller than the "
           "dilated kernel {}x{}; use a larger input, more padding or a smaller kernel",
           padded_h, padded_w, shape_str(x.shape()), padding.h, padding.w, span_h, span_w);
  s.OH = (padded_h - span_h) / stride.h + 1;
  s.OW = (padded_w - span_w) / stride.w + 1;
  return s;
}

static Tensor conv2d_untraced(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding, Int2 dilation,
              int64_t groups) {
  const ConvParams p{stride, padding, dilation, groups};
  const ConvSizes s = conv2d_sizes(x, weight, bias, p);
  // which implementation runs this shape: engine/backend/backend.h
  if (backend::choose_conv_path({x.shape(), weight.shape(), stride, padding, dilation, groups}) ==
      backend::ConvPath::onednn)
    return onednn::conv2d(x, weight, bias, stride, padding, dilation, groups);

  Tensor y = conv_forward(x, weight, bias, s, p);  // (B, Cout, OH, OW)
  return record(y, "conv2d", {x, weight, bias}, {x, weight}, [s, p](const Node& node, const Tensor& g) {
    const Tensor &x = node.saved[0], &w = node.saved[1];
    // y = W * x + b  =>  dx = conv_transpose(dy, W) , dW = sum_b dy (x) im2col(x)^T , db = sum of dy over B, H, W
    Tensor gx = node.inputs[0].requires_grad() ? conv_backward_data(g, w, s, p) : Tensor();
    Tensor gw = node.inputs[1].requires_grad() ? conv_backward_weight(x, g, s, p) : Tensor();
    Tensor gb = node.inputs[2].defined() && node.inputs[2].requires_grad() ? sum(g, {0, 2, 3}) : Tensor();
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding, Int2 dilation,
              int64_t groups) {
  Tensor out = conv2d_untraced(x, weight, bias, stride, padding, dilation, groups);
  if (active_trace()) trace_op("conv2d", {x, weight, bias}, {{"stride", {(double)stride.h, (double)stride.w}},
                                                     {"padding", {(double)padding.h, (double)padding.w}},
                                                     {"dilation", {(double)dilation.h, (double)dilation.w}},
                                                     {"groups", {(double)groups}}}, out);  // for exporters (engine/trace.h)
  return out;
}

// ------------------------------------------------------------------ conv2d_inference

Tensor conv2d_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                        Int2 dilation, int64_t groups, bool relu) {
  KD_CHECK(!(grad_enabled() && (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()))),
           "conv2d_inference records no gradient, but an input requires one: call it under NoGradGuard (inference), "
           "or use conv2d (and relu) for training");
  const ConvParams p{stride, padding, dilation, groups};
  const ConvSizes s = conv2d_sizes(x, weight, bias, p);
  const bool onednn = backend::choose_conv_path({x.shape(), weight.shape(), stride, padding, dilation, groups}) ==
                      backend::ConvPath::onednn;
  if (kernels::verbose())
    kernels::log_path("conv2d_inference", x.shape(),
                      !relu ? "conv2d, no relu" : onednn ? "onednn, relu as a post-op" : "conv2d, then relu");
  if (onednn)
    return relu ? onednn::conv2d_relu_inference(x, weight, bias, stride, padding, dilation, groups)
                : onednn::conv2d(x, weight, bias, stride, padding, dilation, groups);
  Tensor y = conv_forward(x, weight, bias, s, p);  // (B, Cout, OH, OW)
  return relu ? kd::relu(y) : y;
}

// ------------------------------------------------------------------ conv_transpose2d

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                        Int2 output_padding, int64_t groups, Int2 dilation) {
  const ConvParams p{stride, padding, dilation, groups};
  check_common("conv_transpose2d", x, weight, bias, p);
  KD_CHECK(weight.size(0) == x.size(1),
           "conv_transpose2d: the weight of shape {} (layout (Cin, Cout/groups, kh, kw)) expects {} input channels, "
           "but the input of shape {} has {}",
           shape_str(weight.shape()), weight.size(0), shape_str(x.shape()), x.size(1));
  for (auto [op, st, dl, name] : {std::tuple{output_padding.h, stride.h, dilation.h, "height"},
                                  std::tuple{output_padding.w, stride.w, dilation.w, "width"}})
    KD_CHECK(op >= 0 && (op < st || op < dl),
             "conv_transpose2d: output_padding {} in {} must be non-negative and smaller than either the stride {} "
             "or the dilation {}",
             op, name, st, dl);
  // In conv2d's orientation the transpose's output is the conv input and its input the conv output.
  ConvSizes s{};
  s.B = x.size(0), s.Cout = x.size(1), s.OH = x.size(2), s.OW = x.size(3);
  s.Cin = weight.size(1) * groups, s.kh = weight.size(2), s.kw = weight.size(3), s.G = groups;
  s.H = (s.OH - 1) * stride.h - 2 * padding.h + dilation.h * (s.kh - 1) + output_padding.h + 1;
  s.W = (s.OW - 1) * stride.w - 2 * padding.w + dilation.w * (s.kw - 1) + output_padding.w + 1;
  KD_CHECK(s.H > 0 && s.W > 0,
           "conv_transpose2d: output size <= 0: input {} with kernel {}x{}, stride ({}, {}), padding ({}, {}), "
           "dilation ({}, {}) and output_padding ({}, {}) gives {}x{}; reduce the padding",
           shape_str(x.shape()), s.kh, s.kw, stride.h, stride.w, padding.h, padding.w, dilation.h, dilation.w,
           output_padding.h, output_padding.w, s.H, s.W);
  check_bias("conv_transpose2d", bias, s.Cin);

  Tensor y = conv_backward_data(x, weight, s, p);  // (B, Cout_t, H_t, W_t)
  if (bias.defined()) {
    NoGradGuard no_grad;
    y = add(y, bias.detach().reshape({1, s.Cin, 1, 1}));
  }
  return record(y, "conv_transpose2d", {x, weight, bias}, {x, weight}, [s, p](const Node& node, const Tensor& g) {
    const Tensor &x = node.saved[0], &w = node.saved[1];
    // y = W^T * x (the adjoint of a conv)  =>  dx = conv2d(dy, W) , dW = the conv weight gradient with
    // dy as the conv input and x as the conv output gradient , db = sum of dy over B, H, W
    Tensor gx = node.inputs[0].requires_grad() ? conv_forward(g, w, Tensor(), s, p) : Tensor();
    Tensor gw = node.inputs[1].requires_grad() ? conv_backward_weight(g, x, s, p) : Tensor();
    Tensor gb = node.inputs[2].defined() && node.inputs[2].requires_grad() ? sum(g, {0, 2, 3}) : Tensor();
    return std::vector<Tensor>{gx, gw, gb};
  });
}

}  // namespace kd
