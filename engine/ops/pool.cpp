// 2-D pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d, forward and backward side by side.
//
// Every (B, C) plane is pooled on its own by a scalar kernel (kernels/pool_ref.h), the planes
// split over threads; global average pooling (output 1x1) is a SIMD row sum per plane. Output sizes
// follow PyTorch exactly, including ceil_mode's rule that the last window must start inside the
// input or its left padding:
//   out = floor((in + 2p - k + (ceil_mode ? s - 1 : 0)) / s) + 1,
//   and with ceil_mode, out -= 1 when (out - 1) * s >= in + p.
#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/backend/onednn.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/pool_ref.h"
#include "engine/ops.h"
#include "engine/parallel.h"

namespace kd {

namespace {

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * p - k + (ceil_mode ? s - 1 : 0), s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // the last window may not start in the right padding
  return out;
}

void check_pool_input(const char* op, const Tensor& x) {
  KD_CHECK(x.defined(), "{}: undefined input tensor", op);
  KD_CHECK(x.dtype() == DType::f32, "{} needs float32 input, got {}; convert with .to(kd::DType::f32)", op,
           dtype_name(x.dtype()));
  KD_CHECK(x.dim() == 4, "{}: the input must be 4-D (B, C, H, W), got shape {}; add a batch dim with unsqueeze(0)", op,
           shape_str(x.shape()));
}

kernels::PoolGeometry pool_geometry(const char* op, const Tensor& x, Int2 kernel, Int2 stride, Int2 padding,
                                    bool ceil_mode) {
  check_pool_input(op, x);
  KD_CHECK(kernel.h >= 1 && kernel.w >= 1, "{}: kernel size must be positive, got ({}, {})", op, kernel.h, kernel.w);
  KD_CHECK(stride.h >= 1 && stride.w >= 1, "{}: stride must be positive, got ({}, {})", op, stride.h, stride.w);
  KD_CHECK(padding.h >= 0 && padding.w >= 0 && padding.h <= kernel.h / 2 && padding.w <= kernel.w / 2,
           "{}: padding ({}, {}) must be non-negative and at most half the kernel size ({}, {})", op, padding.h,
           padding.w, kernel.h, kernel.w);
  kernels::PoolGeometry g{};
  g.H = x.size(2), g.W = x.size(3);
  g.kh = kernel.h, g.kw = kernel.w, g.sh = stride.h, g.sw = stride.w, g.ph = padding.h, g.pw = padding.w;
  g.OH = pool_out_size(g.H, g.kh, g.sh, g.ph, ceil_mode);
  g.OW = pool_out_size(g.W, g.kw, g.sw, g.pw, ceil_mode);
  KD_CHECK(g.OH >= 1 && g.OW >= 1,
           "{}: output size <= 0: input {} with kernel ({}, {}), stride ({}, {}) and padding ({}, {}) gives {}x{}; "
           "use a smaller kernel or more padding",
           op, shape_str(x.shape()), g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.OH, g.OW);
  return g;
}

Tensor contiguous_data(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().contiguous();
}

// fn(p) for every (b, c) plane of plane_size values, the planes split over threads.
template <typename F>
void for_each_plane(int64_t planes, int64_t plane_size, F fn) {
  parallel_for(planes, std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(plane_size, 1)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) fn(p);
               });
}

}  // namespace

// ------------------------------------------------------------------ max_pool2d

static Tensor max_pool2d_untraced(const Tensor& x_in, Int2 kernel, std::optional<Int2> stride, Int2 padding, bool ceil_mode) {
  const kernels::PoolGeometry g = pool_geometry("max_pool2d", x_in, kernel, stride.value_or(kernel), padding, ceil_mode);
  // which implementation runs this shape: engine/backend/backend.h
  if (backend::choose_pool_path(backend::PoolKind::max, x_in.shape(), g, ceil_mode, false) == backend::PoolPath::onednn) {
    Tensor y = onednn::max_pool2d(x_in, g);
    if (y.defined()) return y;  // undefined: x holds a NaN, which the reference propagates as PyTorch does
  }
  const int64_t B = x_in.size(0), C = x_in.size(1), planes = B * C;
  Tensor x = contiguous_data(x_in);                    // (B, C, H, W)
  Tensor y = empty({B, C, g.OH, g.OW});                // (B, C, OH, OW)
  Tensor argmax = empty({B, C, g.OH, g.OW}, DType::i64);  // flat index h*W + w of each max in its plane
  const float* px = x.data<float>();
  float* py = y.data<float>();
  int64_t* pi = argmax.data<int64_t>();
  for_each_plane(planes, g.H * g.W, [&](int64_t p) {
    kernels::max_pool2d_plane(px + p * g.H * g.W, g, py + p * g.OH * g.OW, pi + p * g.OH * g.OW);
  });
  return record(y, "max_pool2d", {x_in}, {argmax}, [g, x_shape = x_in.shape(), planes](const Node& node, const Tensor& gy) {
    // y = x[argmax]  =>  the gradient of each output flows to the one input that was its max
    Tensor dy = contiguous_data(gy);
    Tensor dx = zeros(x_shape);
    const int64_t* pi = node.saved[0].data<int64_t>();
    for_each_plane(planes, g.H * g.W, [&](int64_t p) {
      kernels::max_pool2d_backward_plane(dy.data<float>() + p * g.OH * g.OW, pi + p * g.OH * g.OW, g.OH * g.OW,
                                         dx.data<float>() + p * g.H * g.W);
    });
    return std::vector<Tensor>{dx};
  });
}

Tensor max_pool2d(const Tensor& x_in, Int2 kernel, std::optional<Int2> stride, Int2 padding, bool ceil_mode) {
  Tensor out = max_pool2d_untraced(x_in, kernel, stride, padding, ceil_mode);
  if (active_trace()) trace_op("max_pool2d", {x_in}, {{"kernel", {(double)kernel.h, (double)kernel.w}},
                                              {"stride", {(double)stride.value_or(kernel).h, (double)stride.value_or(kernel).w}},
                                              {"padding", {(double)padding.h, (double)padding.w}},
                                              {"ceil_mode", {ceil_mode ? 1.0 : 0.0}}}, out);  // for exporters (engine/trace.h)
  return out;
}

// ------------------------------------------------------------------ avg_pool2d

static Tensor avg_pool2d_untraced(const Tensor& x_in, Int2 kernel, std::optional<Int2> stride, Int2 padding, bool ceil_mode,
                  bool count_include_pad) {
  const kernels::PoolGeometry g = pool_geometry("avg_pool2d", x_in, kernel, stride.value_or(kernel), padding, ceil_mode);
  // which implementation runs this shape: engine/backend/backend.h
  if (backend::choose_pool_path(backend::PoolKind::avg, x_in.shape(), g, ceil_mode, count_include_pad) ==
      backend::PoolPath::onednn)
    return onednn::avg_pool2d(x_in, g, count_include_pad);
  const int64_t B = x_in.size(0), C = x_in.size(1), planes = B * C;
  Tensor x = contiguous_data(x_in);      // (B, C, H, W)
  Tensor y = empty({B, C, g.OH, g.OW});  // (B, C, OH, OW)
  for_each_plane(planes, g.H * g.W, [&](int64_t p) {
    kernels::avg_pool2d_plane(x.data<float>() + p * g.H * g.W, g, count_include_pad, y.data<float>() + p * g.OH * g.OW);
  });
  return record(y, "avg_pool2d", {x_in}, {},
                [g, x_shape = x_in.shape(), planes, count_include_pad](const Node&, const Tensor& gy) {
                  // y = sum(window) / divisor  =>  each input in the window gets dy / divisor
                  Tensor dy = contiguous_data(gy);
                  Tensor dx = zeros(x_shape);
                  for_each_plane(planes, g.H * g.W, [&](int64_t p) {
                    kernels::avg_pool2d_backward_plane(dy.data<float>() + p * g.OH * g.OW, g, count_include_pad,
                                                       dx.data<float>() + p * g.H * g.W);
                  });
                  return std::vector<Tensor>{dx};
                });
}

Tensor avg_pool2d(const Tensor& x_in, Int2 kernel, std::optional<Int2> stride, Int2 padding, bool ceil_mode,
                  bool count_include_pad) {
  Tensor out = avg_pool2d_untraced(x_in, kernel, stride, padding, ceil_mode, count_include_pad);
  if (active_trace()) trace_op("avg_pool2d", {x_in}, {{"kernel", {(double)kernel.h, (double)kernel.w}},
                                              {"stride", {(double)stride.value_or(kernel).h, (double)stride.value_or(kernel).w}},
                                              {"padding", {(double)padding.h, (double)padding.w}},
                                              {"ceil_mode", {ceil_mode ? 1.0 : 0.0}},
                                              {"count_include_pad", {count_include_pad ? 1.0 : 0.0}}}, out);  // for exporters (engine/trace.h)
  return out;
}

// ------------------------------------------------------------------ adaptive_avg_pool2d

static Tensor adaptive_avg_pool2d_untraced(const Tensor& x_in, Int2 output_size) {
  check_pool_input("adaptive_avg_pool2d", x_in);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), planes = B * C;
  const int64_t OH = output_size.h, OW = output_size.w;
  KD_CHECK(OH >= 1 && OW >= 1, "adaptive_avg_pool2d: output size must be positive, got ({}, {})", OH, OW);
  KD_CHECK(H >= 1 && W >= 1, "adaptive_avg_pool2d: the input of shape {} has an empty plane", shape_str(x_in.shape()));
  Tensor x = contiguous_data(x_in);  // (B, C, H, W)
  Tensor y = empty({B, C, OH, OW});  // (B, C, OH, OW)
  // output 1x1 (global average pooling, the head of every CIFAR net): one row mean per plane with
  // the SIMD row sum, and a fill in the backward; other sizes: the reference plane kernels
  const bool global = OH == 1 && OW == 1;
  if (kernels::verbose())
    kernels::log_path("adaptive_avg_pool2d", x_in.shape(),
                      global ? fmt::format("global: row sums, {} kernels", kernels::cpu().name) : "reference planes");
  const float* px = x.data<float>();
  float* py = y.data<float>();
  if (global) {
    const kernels::CpuKernels& cpu = kernels::cpu();
    for_each_plane(planes, H * W, [&](int64_t p) { py[p] = (float)(cpu.sum(px + p * H * W, H * W) / (double)(H * W)); });
  } else {
    for_each_plane(planes, H * W, [&](int64_t p) {
      kernels::adaptive_avg_pool2d_plane(px + p * H * W, H, W, OH, OW, py + p * OH * OW);
    });
  }
  auto backward = [x_shape = x_in.shape(), planes, H, W, OH, OW, global](const Node&, const Tensor& gy) {
    // y = mean(window)  =>  each input in the window gets dy / window area (windows may overlap)
    Tensor dy = contiguous_data(gy);
    const float* pdy = dy.data<float>();
    Tensor dx = global ? empty(x_shape) : zeros(x_shape);  // global: every element written below
    float* pdx = dx.data<float>();
    for_each_plane(planes, H * W, [&](int64_t p) {
      if (global) std::fill_n(pdx + p * H * W, H * W, pdy[p] / (float)(H * W));
      else kernels::adaptive_avg_pool2d_backward_plane(pdy + p * OH * OW, H, W, OH, OW, pdx + p * H * W);
    });
    return std::vector<Tensor>{dx};
  };
  return record(y, "adaptive_avg_pool2d", {x_in}, {}, backward);
}

Tensor adaptive_avg_pool2d(const Tensor& x_in, Int2 output_size) {
  Tensor out = adaptive_avg_pool2d_untraced(x_in, output_size);
  if (active_trace()) trace_op("adaptive_avg_pool2d", {x_in}, {{"output_size", {(double)output_size.h, (double)output_size.w}}}, out);  // for exporters (engine/trace.h)
  return out;
}

}  // namespace kd
