// The oneDNN backend (see onednn.h): one section per op, the forward and its backward side by
// side, each built from oneDNN primitives that are created once per shape and cached.
//
// The pattern of every op here:
//   1. look up (or build) the primitives for this shape: a primitive descriptor says which
//      memory layouts the primitive wants; where that differs from our NCHW tensors a reorder
//      primitive is built too;
//   2. wrap our tensors' data as oneDNN memory (no copy), reorder into the primitive's layouts
//      where needed, execute, reorder the result back into an NCHW tensor;
//   3. record() the autograd node with a backward lambda that does the same with the backward
//      primitives.
// Blocked scratch copies live in kd::empty() tensors, so they come from the storage cache and
// a training step does not go back to the OS for them.
#include "engine/backend/onednn.h"

#include "engine/autograd.h"

#ifdef KDLAB_HAVE_DNNL

#include <dnnl.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kd::onednn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;

// ------------------------------------------------------------------ shared plumbing

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Context& ctx() {
  static Context* c = new Context();  // never destroyed: primitives in the cache may outlive statics
  return *c;
}

// The cache of primitives, one entry per op and shape (the key spells out both). Entries are
// shared_ptrs: a backward lambda keeps its entry alive even after clear_cache().
std::mutex g_cache_mutex;
std::unordered_map<std::string, std::shared_ptr<void>>& cache() {
  static auto* c = new std::unordered_map<std::string, std::shared_ptr<void>>();
  return *c;
}

// The entry for `key`, filled in by make(Entry&) on first use.
template <typename Entry, typename Make>
std::shared_ptr<Entry> cached(const std::string& key, Make make) {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  auto it = cache().find(key);
  if (it != cache().end()) return std::static_pointer_cast<Entry>(it->second);
  auto entry = std::make_shared<Entry>();
  make(*entry);  // may throw (an unsupported shape): then nothing is cached
  cache()[key] = entry;
  return entry;
}

memory::desc plain_desc(const memory::dims& dims, Tag tag) { return memory::desc(dims, DataType::f32, tag); }

// Our tensor's data seen as oneDNN memory of layout d (no copy).
memory as_memory(const memory::desc& d, const Tensor& t) { return memory(d, ctx().engine, t.raw_data()); }

// A float tensor big enough to hold memory of layout d (blocked layouts may pad channels).
Tensor buffer_for(const memory::desc& d) { return empty({(int64_t)((d.get_size() + sizeof(float) - 1) / sizeof(float))}); }

Tensor contiguous_data(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().contiguous();
}

// A reorder between two layouts, or nothing when they are the same.
struct Reorder {
  memory::desc from, to;
  std::optional<dnnl::reorder> prim;
};

Reorder make_reorder(const memory::desc& from, const memory::desc& to) {
  Reorder r{from, to, std::nullopt};
  if (from != to) r.prim = dnnl::reorder(dnnl::reorder::primitive_desc(ctx().engine, from, ctx().engine, to));
  return r;
}

// t (layout r.from) in layout r.to: t itself when no reorder is needed, else a reordered copy.
Tensor reordered(const Tensor& t, const Reorder& r) {
  if (!r.prim) return t;
  Tensor out = buffer_for(r.to);
  memory from = as_memory(r.from, t), to = as_memory(r.to, out);
  r.prim->execute(ctx().stream, from, to);
  return out;
}

// A buffer for a primitive to write in layout r.from, to be copied into `dst` (layout r.to) by
// finish(): dst itself when the layouts agree.
Tensor output_buffer(const Tensor& dst, const Reorder& r) { return r.prim ? buffer_for(r.from) : dst; }
void finish(const Tensor& produced, const Reorder& r, const Tensor& dst) {
  if (!r.prim) return;
  memory from = as_memory(r.from, produced), to = as_memory(r.to, dst);
  r.prim->execute(ctx().stream, from, to);
}

// Runs a primitive, turning oneDNN's exceptions into kd::Error with the op named.
void execute(const char* what, const dnnl::primitive& prim, const std::unordered_map<int, memory>& args) {
  try {
    prim.execute(ctx().stream, args);
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("oneDNN {} failed: {} (status {}); rerun with ONEDNN_VERBOSE=1 for details, or use the cpu "
                            "backend (--backend cpu / KDLAB_BACKEND=cpu)",
                            what, e.what(), (int)e.status));
  }
}

// ------------------------------------------------------------------ conv2d

// Whether a training forward keeps its reordered (blocked) copy of the input for the
// backward-weights pass (see conv2d).
constexpr bool kKeepReorderedInput = false;

struct ConvDims {
  int64_t B, Cin, H, W, Cout, kh, kw, OH, OW, G;
  Int2 stride, padding, dilation;
  bool bias;
};

ConvDims conv_dims(const Shape& x, const Shape& w, bool bias, Int2 stride, Int2 padding, Int2 dilation,
                   int64_t groups) {
  ConvDims d{x[0], x[1], x[2], x[3], w[0], w[2], w[3], 0, 0, groups, stride, padding, dilation, bias};
  d.OH = (d.H + 2 * padding.h - (dilation.h * (d.kh - 1) + 1)) / stride.h + 1;
  d.OW = (d.W + 2 * padding.w - (dilation.w * (d.kw - 1) + 1)) / stride.w + 1;
  return d;
}

std::string conv_key(const ConvDims& d, bool training, bool relu) {
  return fmt::format("conv x {} {} {} {} w {} {} {} g {} s {} {} p {} {} d {} {} bias {} train {} relu {}", d.B, d.Cin,
                     d.H, d.W, d.Cout, d.kh, d.kw, d.G, d.stride.h, d.stride.w, d.padding.h, d.padding.w, d.dilation.h,
                     d.dilation.w, d.bias, training, relu);
}

struct ConvPrimitives {
  memory::desc x, w, y, b;  // our layouts: x nchw, w (g)oihw, y nchw, bias (Cout)
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Reorder x_to_fwd, w_to_fwd, fwd_to_y;
  // The backward primitives, built by the first backward pass of this shape.
  struct Backward {
    dnnl::convolution_backward_data::primitive_desc data_pd;
    dnnl::convolution_backward_data data;
    dnnl::convolution_backward_weights::primitive_desc weights_pd;
    dnnl::convolution_backward_weights weights;
    Reorder dy_to_data, w_to_data, data_to_dx;
    Reorder x_to_weights, dy_to_weights, weights_to_dw;
  };
  std::once_flag backward_once;
  std::optional<Backward> backward;
  // Inference only: our channels-last layout ((B, C, H, W) stored as (B, H, W, C), oneDNN's acdb)
  // for the input, and whether the primitive writes its output in that layout.
  Reorder x_cl_to_fwd;
  bool dst_is_channels_last = false;
};

// The geometry arguments every convolution descriptor takes.
struct ConvGeometryArgs {
  memory::dims strides, dilates, padding_l, padding_r;
};
ConvGeometryArgs conv_geometry(const ConvDims& d) {
  // oneDNN counts dilation from 0 (a dense kernel has dilation 0)
  return {{d.stride.h, d.stride.w}, {d.dilation.h - 1, d.dilation.w - 1}, {d.padding.h, d.padding.w},
          {d.padding.h, d.padding.w}};
}

// relu: a ReLU applied to the result inside the same primitive (a oneDNN "post-op"), for
// inference only (conv2d_relu_inference).
void make_conv_primitives(ConvPrimitives& p, const ConvDims& d, bool training, bool relu = false) {
  p.x = plain_desc({d.B, d.Cin, d.H, d.W}, Tag::nchw);
  p.y = plain_desc({d.B, d.Cout, d.OH, d.OW}, Tag::nchw);
  p.w = d.G == 1 ? plain_desc({d.Cout, d.Cin, d.kh, d.kw}, Tag::oihw)
                 : plain_desc({d.G, d.Cout / d.G, d.Cin / d.G, d.kh, d.kw}, Tag::goihw);
  p.b = plain_desc({d.Cout}, Tag::a);
  // Let oneDNN choose the layouts (format_tag::any): its fast kernels want blocked channels.
  const memory::desc x_any(p.x.dims(), DataType::f32, Tag::any), y_any(p.y.dims(), DataType::f32, Tag::any),
      w_any(p.w.dims(), DataType::f32, Tag::any);
  const ConvGeometryArgs g = conv_geometry(d);
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto desc = d.bias ? dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_any, w_any,
                                                             p.b, y_any, g.strides, g.dilates, g.padding_l, g.padding_r)
                           : dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_any, w_any,
                                                             y_any, g.strides, g.dilates, g.padding_l, g.padding_r);
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);  // y = max(conv(x) + b, 0)
    attr.set_post_ops(ops);
  }
  p.fwd_pd = dnnl::convolution_forward::primitive_desc(desc, attr, ctx().engine);
  p.fwd = dnnl::convolution_forward(p.fwd_pd);
  p.x_to_fwd = make_reorder(p.x, p.fwd_pd.src_desc());
  p.w_to_fwd = make_reorder(p.w, p.fwd_pd.weights_desc());
  p.fwd_to_y = make_reorder(p.fwd_pd.dst_desc(), p.y);
  if (!training) {
    p.x_cl_to_fwd = make_reorder(plain_desc(p.x.dims(), Tag::acdb), p.fwd_pd.src_desc());
    p.dst_is_channels_last = p.fwd_pd.dst_desc() == plain_desc(p.y.dims(), Tag::acdb);
  }
}

// Whether t is a channels-last 4-D tensor: (B, C, H, W) with strides (H*W*C, 1, W*C, C).
bool is_channels_last(const Tensor& t) {
  if (t.dim() != 4 || t.is_contiguous()) return false;
  const Shape& st = t.strides();
  const int64_t C = t.size(1), H = t.size(2), W = t.size(3);
  return (C == 1 || st[1] == 1) && (W == 1 || st[3] == C) && (H == 1 || st[2] == W * C) &&
         (t.size(0) == 1 || st[0] == H * W * C);
}

// Builds the backward primitives of `p` (once; later calls return at once).
const ConvPrimitives::Backward& conv_backward_primitives(ConvPrimitives& p, const ConvDims& d) {
  std::call_once(p.backward_once, [&] {
    const memory::desc x_any(p.x.dims(), DataType::f32, Tag::any), y_any(p.y.dims(), DataType::f32, Tag::any),
        w_any(p.w.dims(), DataType::f32, Tag::any);
    const ConvGeometryArgs g = conv_geometry(d);
    ConvPrimitives::Backward b;
    const dnnl::convolution_backward_data::desc data_desc(dnnl::algorithm::convolution_direct, x_any, w_any, y_any,
                                                          g.strides, g.dilates, g.padding_l, g.padding_r);
    b.data_pd = dnnl::convolution_backward_data::primitive_desc(data_desc, ctx().engine, p.fwd_pd);
    b.data = dnnl::convolution_backward_data(b.data_pd);
    const auto weights_desc =
        d.bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_any, w_any, p.b,
                                                          y_any, g.strides, g.dilates, g.padding_l, g.padding_r)
               : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_any, w_any, y_any,
                                                          g.strides, g.dilates, g.padding_l, g.padding_r);
    b.weights_pd = dnnl::convolution_backward_weights::primitive_desc(weights_desc, ctx().engine, p.fwd_pd);
    b.weights = dnnl::convolution_backward_weights(b.weights_pd);
    b.dy_to_data = make_reorder(p.y, b.data_pd.diff_dst_desc());
    b.w_to_data = make_reorder(p.w, b.data_pd.weights_desc());
    b.data_to_dx = make_reorder(b.data_pd.diff_src_desc(), p.x);
    b.x_to_weights = make_reorder(p.x, b.weights_pd.src_desc());
    b.dy_to_weights = make_reorder(p.y, b.weights_pd.diff_dst_desc());
    b.weights_to_dw = make_reorder(b.weights_pd.diff_weights_desc(), p.w);
    p.backward = std::move(b);
  });
  return *p.backward;
}

// The forward of conv2d and conv2d_relu_inference (relu only when nothing needs a gradient).
Tensor conv2d_forward(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Int2 stride, Int2 padding,
                      Int2 dilation, int64_t groups, bool relu) {
  const bool has_bias = bias_in.defined();
  const bool training = grad_enabled() && (x_in.requires_grad() || w_in.requires_grad() ||
                                           (has_bias && bias_in.requires_grad()));
  KD_CHECK(!(training && relu), "onednn conv2d with a fused ReLU is for inference only (no gradient)");
  const ConvDims d = conv_dims(x_in.shape(), w_in.shape(), has_bias, stride, padding, dilation, groups);
  auto P = cached<ConvPrimitives>(conv_key(d, training, relu),
                                  [&](ConvPrimitives& p) { make_conv_primitives(p, d, training, relu); });

  // Inference (a teacher's forward pass, evaluation): oneDNN's convolutions here work in
  // channels-last (acdb) for most shapes. Then a channels-last input is read in place and the
  // output is returned channels-last, a (B, OH, OW, Cout) buffer seen as (B, Cout, OH, OW): a chain
  // of convolutions (and the adds and ReLUs between them, ops/elementwise.cpp) never converts
  // layouts. Training keeps NCHW at the API (the backward passes reorder from it).
  const bool x_cl = !training && is_channels_last(x_in), y_cl = !training && P->dst_is_channels_last;
  Tensor x = x_cl ? x_in.detach() : contiguous_data(x_in);  // (B, Cin, H, W)
  Tensor w = contiguous_data(w_in);                          // (Cout, Cin/G, kh, kw)
  Tensor x_fwd = reordered(x, x_cl ? P->x_cl_to_fwd : P->x_to_fwd);  // in the layouts the primitive reads
  Tensor w_fwd = reordered(w, P->w_to_fwd);  // (Cout, Cin/G, kh, kw) in the forward's layout
  Tensor y = y_cl ? empty({d.B, d.OH, d.OW, d.Cout}).permute({0, 3, 1, 2})
                  : empty({d.B, d.Cout, d.OH, d.OW});  // (B, Cout, OH, OW)
  Tensor y_fwd = y_cl ? y : output_buffer(y, P->fwd_to_y);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->fwd_pd.src_desc(), x_fwd)},
                                       {DNNL_ARG_WEIGHTS, as_memory(P->fwd_pd.weights_desc(), w_fwd)},
                                       {DNNL_ARG_DST, as_memory(P->fwd_pd.dst_desc(), y_fwd)}};
  Tensor bias;
  if (has_bias) {
    bias = contiguous_data(bias_in);  // (Cout)
    args[DNNL_ARG_BIAS] = as_memory(P->b, bias);
  }
  execute("convolution forward", P->fwd, args);
  if (!y_cl) finish(y_fwd, P->fwd_to_y, y);
  ctx().stream.wait();
  if (!training) return y;

  // What the backward can reuse from the forward: the reordered weights when backward-data wants
  // the same layout (then the weights are reordered once per step), and the reordered input when
  // backward-weights wants the same layout and kKeepReorderedInput trades its memory for a reorder.
  const ConvPrimitives::Backward& b = conv_backward_primitives(*P, d);
  const bool keep_w_fwd = x_in.requires_grad() && P->w_to_fwd.prim && b.data_pd.weights_desc() == P->fwd_pd.weights_desc();
  const bool keep_x_fwd = kKeepReorderedInput && w_in.requires_grad() && P->x_to_fwd.prim &&
                          b.weights_pd.src_desc() == P->fwd_pd.src_desc();
  return record(y, "conv2d", {x_in, w_in, bias_in}, {x, w, keep_w_fwd ? w_fwd : Tensor(), keep_x_fwd ? x_fwd : Tensor()},
                [P, d](const Node& node, const Tensor& g) {
    // y = W * x + b  =>  dx = conv_transpose(dy, W) (backward data), dW = dy (x) x summed over the batch
    // (backward weights), db = sum of dy over B, OH, OW
    const Tensor &x = node.saved[0], &w = node.saved[1], &w_fwd = node.saved[2], &x_fwd = node.saved[3];
    const ConvPrimitives::Backward& b = *P->backward;
    const bool want_dx = node.inputs[0].requires_grad(), want_dw = node.inputs[1].requires_grad();
    const bool want_db = node.inputs[2].defined() && node.inputs[2].requires_grad();
    Tensor dy = contiguous_data(g);  // (B, Cout, OH, OW)
    Tensor gx, gw, gb;
    Tensor dy_data;  // dy in the backward-data layout, reused by the backward-weights pass when they agree
    if (want_dx) {
      dy_data = reordered(dy, b.dy_to_data);
      Tensor w_data = w_fwd.defined() ? w_fwd : reordered(w, b.w_to_data);
      gx = empty({d.B, d.Cin, d.H, d.W});  // (B, Cin, H, W)
      Tensor dx_buf = output_buffer(gx, b.data_to_dx);
      execute("convolution backward data", b.data, {{DNNL_ARG_DIFF_DST, as_memory(b.data_pd.diff_dst_desc(), dy_data)},
                                    {DNNL_ARG_WEIGHTS, as_memory(b.data_pd.weights_desc(), w_data)},
                                    {DNNL_ARG_DIFF_SRC, as_memory(b.data_pd.diff_src_desc(), dx_buf)}});
      finish(dx_buf, b.data_to_dx, gx);
    }
    if (want_dw) {
      Tensor dy_w = want_dx && b.weights_pd.diff_dst_desc() == b.data_pd.diff_dst_desc() ? dy_data
                                                                                         : reordered(dy, b.dy_to_weights);
      Tensor x_w = x_fwd.defined() ? x_fwd : reordered(x, b.x_to_weights);
      gw = empty(w.shape());  // (Cout, Cin/G, kh, kw)
      Tensor dw_buf = output_buffer(gw, b.weights_to_dw);
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(b.weights_pd.src_desc(), x_w)},
                                           {DNNL_ARG_DIFF_DST, as_memory(b.weights_pd.diff_dst_desc(), dy_w)},
                                           {DNNL_ARG_DIFF_WEIGHTS, as_memory(b.weights_pd.diff_weights_desc(), dw_buf)}};
      if (d.bias) {  // the primitive computes db in the same pass
        gb = empty({d.Cout});
        args[DNNL_ARG_DIFF_BIAS] = as_memory(P->b, gb);
      }
      execute("convolution backward weights", b.weights, args);
      finish(dw_buf, b.weights_to_dw, gw);
      if (!want_db) gb = Tensor();
    }
    ctx().stream.wait();
    if (want_db && !gb.defined()) gb = sum(g, {0, 2, 3});  // (Cout)
    return std::vector<Tensor>{gx, gw, gb};
  });
}

}  // namespace

Tensor conv2d_relu_inference(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                             Int2 dilation, int64_t groups) {
  return conv2d_forward(x, weight, bias, stride, padding, dilation, groups, /*relu=*/true);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding, Int2 dilation,
              int64_t groups) {
  return conv2d_forward(x, weight, bias, stride, padding, dilation, groups, /*relu=*/false);
}

std::string conv_implementation(const Shape& x, const Shape& w, Int2 stride, Int2 padding, Int2 dilation,
                                int64_t groups) {
  const ConvDims d = conv_dims(x, w, false, stride, padding, dilation, groups);
  auto P = cached<ConvPrimitives>(conv_key(d, true, false), [&](ConvPrimitives& p) { make_conv_primitives(p, d, true); });
  return P->fwd_pd.impl_info_str();
}

// ------------------------------------------------------------------ linear (inner product)

namespace {

// y (N, out) = x (N, in) W^T + b, with W (out, in): oneDNN's inner product on plain row-major
// data (nc, oi): no reorders, the layouts are the ones oneDNN's own GEMM reads.
struct LinearPrimitives {
  memory::desc x, w, b, y;  // (N, in) nc, (out, in) oi, (out) a, (N, out) nc
  dnnl::inner_product_forward::primitive_desc fwd_pd;
  dnnl::inner_product_forward fwd;
  std::once_flag backward_once;
  std::optional<dnnl::inner_product_backward_data::primitive_desc> data_pd;
  std::optional<dnnl::inner_product_backward_data> data;
  std::optional<dnnl::inner_product_backward_weights::primitive_desc> weights_pd;
  std::optional<dnnl::inner_product_backward_weights> weights;
};

}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in) {
  const int64_t in_f = w_in.size(1), out_f = w_in.size(0);
  const int64_t N = x_in.numel() / std::max<int64_t>(in_f, 1);  // rows: every leading index
  const bool has_bias = bias_in.defined();
  const bool training = grad_enabled() && (x_in.requires_grad() || w_in.requires_grad() ||
                                           (has_bias && bias_in.requires_grad()));
  const std::string key = fmt::format("linear {} {} {} bias {} train {}", N, in_f, out_f, has_bias, training);
  auto P = cached<LinearPrimitives>(key, [&](LinearPrimitives& p) {
    p.x = plain_desc({N, in_f}, Tag::nc);
    p.w = plain_desc({out_f, in_f}, Tag::oi);
    p.b = plain_desc({out_f}, Tag::a);
    p.y = plain_desc({N, out_f}, Tag::nc);
    const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    const auto desc = has_bias ? dnnl::inner_product_forward::desc(prop, p.x, p.w, p.b, p.y)
                               : dnnl::inner_product_forward::desc(prop, p.x, p.w, p.y);
    p.fwd_pd = dnnl::inner_product_forward::primitive_desc(desc, ctx().engine);
    p.fwd = dnnl::inner_product_forward(p.fwd_pd);
  });

  Tensor x = contiguous_data(x_in), w = contiguous_data(w_in);  // (..., in), (out, in)
  Shape out_shape = x_in.shape();
  out_shape.back() = out_f;
  Tensor y = empty(out_shape);  // (..., out)
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->x, x)},
                                       {DNNL_ARG_WEIGHTS, as_memory(P->w, w)},
                                       {DNNL_ARG_DST, as_memory(P->y, y)}};
  Tensor bias;
  if (has_bias) {
    bias = contiguous_data(bias_in);  // (out)
    args[DNNL_ARG_BIAS] = as_memory(P->b, bias);
  }
  execute("inner product forward", P->fwd, args);
  ctx().stream.wait();
  if (!training) return y;

  return record(y, "linear", {x_in, w_in, bias_in}, {x, w}, [P](const Node& node, const Tensor& g) {
    // y = x W^T + b  =>  dx = dy W (backward data), dW = dy^T x and db = sum of dy over the rows
    // (backward weights, one pass)
    std::call_once(P->backward_once, [&] {
      const dnnl::inner_product_backward_data::desc data_desc(P->x, P->w, P->y);
      P->data_pd = dnnl::inner_product_backward_data::primitive_desc(data_desc, ctx().engine, P->fwd_pd);
      P->data = dnnl::inner_product_backward_data(*P->data_pd);
      const bool bias = P->fwd_pd.bias_desc().get_size() > 0;
      const auto weights_desc = bias ? dnnl::inner_product_backward_weights::desc(P->x, P->w, P->b, P->y)
                                     : dnnl::inner_product_backward_weights::desc(P->x, P->w, P->y);
      P->weights_pd = dnnl::inner_product_backward_weights::primitive_desc(weights_desc, ctx().engine, P->fwd_pd);
      P->weights = dnnl::inner_product_backward_weights(*P->weights_pd);
    });
    const Tensor &x = node.saved[0], &w = node.saved[1];
    const bool want_dx = node.inputs[0].requires_grad(), want_dw = node.inputs[1].requires_grad();
    const bool want_db = node.inputs[2].defined() && node.inputs[2].requires_grad();
    Tensor dy = contiguous_data(g);  // (..., out)
    Tensor gx, gw, gb;
    if (want_dx) {
      gx = empty(x.shape());  // (..., in)
      execute("inner product backward data", *P->data,
              {{DNNL_ARG_DIFF_DST, as_memory(P->y, dy)}, {DNNL_ARG_WEIGHTS, as_memory(P->w, w)},
               {DNNL_ARG_DIFF_SRC, as_memory(P->x, gx)}});
    }
    if (want_dw || want_db) {
      gw = empty(w.shape());  // (out, in)
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->x, x)},
                                           {DNNL_ARG_DIFF_DST, as_memory(P->y, dy)},
                                           {DNNL_ARG_DIFF_WEIGHTS, as_memory(P->w, gw)}};
      if (node.inputs[2].defined()) {
        gb = empty({w.size(0)});  // (out)
        args[DNNL_ARG_DIFF_BIAS] = as_memory(P->b, gb);
      }
      execute("inner product backward weights", *P->weights, args);
      if (!want_dw) gw = Tensor();
      if (!want_db) gb = Tensor();
    }
    ctx().stream.wait();
    return std::vector<Tensor>{gx, gw, gb};
  });
}

// ------------------------------------------------------------------ batch_norm

namespace {

struct NormPrimitives {
  memory::desc data;  // x seen as (B, C, S, 1), nchw
  memory::desc stat;  // (C)
  dnnl::normalization_flags flags;
  float eps;
  dnnl::batch_normalization_forward::primitive_desc fwd_pd;
  dnnl::batch_normalization_forward fwd;
  // backward: prop_kind::backward (also dweight, dbias) and backward_data (dx only), built on first use
  std::once_flag once_full, once_data;
  std::optional<dnnl::batch_normalization_backward::primitive_desc> full_pd, data_pd;
  std::optional<dnnl::batch_normalization_backward> full, data_only;
};

void make_norm_primitives(NormPrimitives& p, int64_t B, int64_t C, int64_t S, dnnl::normalization_flags flags,
                          dnnl::prop_kind prop, float eps) {
  p.data = plain_desc({B, C, S, 1}, Tag::nchw);
  p.stat = plain_desc({C}, Tag::a);
  p.flags = flags;
  p.eps = eps;
  p.fwd_pd = dnnl::batch_normalization_forward::primitive_desc(
      dnnl::batch_normalization_forward::desc(prop, p.data, eps, flags), ctx().engine);
  p.fwd = dnnl::batch_normalization_forward(p.fwd_pd);
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  const int64_t B = x_in.size(0), C = x_in.size(1);
  const int64_t S = x_in.numel() / std::max<int64_t>(B * C, 1);  // spatial elements per (b, c)
  const bool needs_grad = grad_enabled() && (x_in.requires_grad() || (weight.defined() && weight.requires_grad()) ||
                                             (bias.defined() && bias.requires_grad()));
  using F = dnnl::normalization_flags;
  F flags = F::none;
  if (weight.defined()) flags |= F::use_scale;
  if (bias.defined()) flags |= F::use_shift;
  if (!training) flags |= F::use_global_stats;  // normalise with the running statistics
  // forward_training writes the batch statistics out (training) and allows a backward pass
  const auto prop = training || needs_grad ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const std::string key =
      fmt::format("bnorm {} {} {} flags {} prop {} eps {}", B, C, S, (unsigned)flags, (int)prop, (float)eps);
  auto P = cached<NormPrimitives>(key, [&](NormPrimitives& p) { make_norm_primitives(p, B, C, S, flags, prop, (float)eps); });

  Tensor x = contiguous_data(x_in);  // (B, C, ...)
  Tensor y = empty(x.shape());       // (B, C, ...)
  Tensor mean, var;                  // (C): the batch statistics (training) or the running ones (eval)
  if (training) {
    mean = empty({C}), var = empty({C});
  } else {
    mean = contiguous_data(running_mean), var = contiguous_data(running_var);
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->data, x)},
                                       {DNNL_ARG_DST, as_memory(P->data, y)},
                                       {DNNL_ARG_MEAN, as_memory(P->stat, mean)},
                                       {DNNL_ARG_VARIANCE, as_memory(P->stat, var)}};
  Tensor w = weight.defined() ? contiguous_data(weight) : Tensor();
  Tensor b = bias.defined() ? contiguous_data(bias) : Tensor();
  if (w.defined()) args[DNNL_ARG_SCALE] = as_memory(P->stat, w);
  if (b.defined()) args[DNNL_ARG_SHIFT] = as_memory(P->stat, b);
  execute("batch-norm forward", P->fwd, args);
  ctx().stream.wait();

  if (training && running_mean.defined()) {
    // r = (1 - momentum) r + momentum * stat, with the unbiased batch variance for running_var (as PyTorch);
    // oneDNN's variance is the biased one (divided by N)
    NoGradGuard no_grad;
    const int64_t N = B * S;
    std::vector<float> rm = to_float_vector(running_mean), rv = to_float_vector(running_var);
    const float* pm = mean.data<float>();
    const float* pv = var.data<float>();
    for (int64_t c = 0; c < C; ++c) {
      const double var_unbiased = (double)pv[c] * (double)N / (double)(N - 1);
      rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * pm[c]);
      rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var_unbiased);
    }
    Tensor rm_handle = running_mean, rv_handle = running_var;  // handles share the caller's storage
    rm_handle.copy_(from_vector(rm, {C}));
    rv_handle.copy_(from_vector(rv, {C}));
  }

  return record(y, "batch_norm", {x_in, weight, bias}, {x, mean, var, w, b}, [P](const Node& n, const Tensor& g) {
    // xhat = (x - mean) * invstd, y = xhat * weight + bias  =>
    //   training: dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), means per channel
    //   eval:     dx = dy * weight * invstd (the running statistics are constants)
    //   dweight = sum(dy * xhat), dbias = sum(dy) over B and the spatial dims
    const Tensor &x = n.saved[0], &mean = n.saved[1], &var = n.saved[2], &w = n.saved[3], &b = n.saved[4];
    const bool want_dw = n.inputs[1].defined() && n.inputs[1].requires_grad();
    const bool want_db = n.inputs[2].defined() && n.inputs[2].requires_grad();
    const bool full = want_dw || want_db;  // prop_kind::backward also computes dweight and dbias
    std::once_flag& once = full ? P->once_full : P->once_data;
    std::call_once(once, [&] {
      const auto prop = full ? dnnl::prop_kind::backward : dnnl::prop_kind::backward_data;
      const dnnl::batch_normalization_backward::desc desc(prop, P->data, P->data, P->eps,
                                                          P->flags);
      auto pd = dnnl::batch_normalization_backward::primitive_desc(desc, ctx().engine, P->fwd_pd);
      (full ? P->full_pd : P->data_pd) = pd;
      (full ? P->full : P->data_only) = dnnl::batch_normalization_backward(pd);
    });
    const int64_t C = P->stat.dims()[0];
    Tensor dy = contiguous_data(g);  // (B, C, ...)
    Tensor dx = empty(x.shape());    // (B, C, ...)
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->data, x)},
                                         {DNNL_ARG_DIFF_DST, as_memory(P->data, dy)},
                                         {DNNL_ARG_MEAN, as_memory(P->stat, mean)},
                                         {DNNL_ARG_VARIANCE, as_memory(P->stat, var)},
                                         {DNNL_ARG_DIFF_SRC, as_memory(P->data, dx)}};
    Tensor dw, db;
    if (w.defined()) args[DNNL_ARG_SCALE] = as_memory(P->stat, w);
    if (b.defined()) args[DNNL_ARG_SHIFT] = as_memory(P->stat, b);  // unused, but oneDNN asks for every input
    if (full && n.inputs[1].defined()) {
      dw = empty({C});
      args[DNNL_ARG_DIFF_SCALE] = as_memory(P->stat, dw);
    }
    if (full && n.inputs[2].defined()) {
      db = empty({C});
      args[DNNL_ARG_DIFF_SHIFT] = as_memory(P->stat, db);
    }
    execute("batch-norm backward", full ? *P->full : *P->data_only, args);
    ctx().stream.wait();
    Tensor gx = n.inputs[0].requires_grad() ? dx : Tensor();
    return std::vector<Tensor>{gx, want_dw ? dw : Tensor(), want_db ? db : Tensor()};
  });
}

// ------------------------------------------------------------------ relu

namespace {

struct ReluPrimitives {
  memory::desc data;  // x seen as (n), contiguous
  dnnl::eltwise_forward::primitive_desc fwd_pd;
  dnnl::eltwise_forward fwd;
  std::once_flag backward_once;
  std::optional<dnnl::eltwise_backward> bwd;
};

}  // namespace

Tensor relu(const Tensor& x_in) {
  const int64_t n = x_in.numel();
  const bool needs_grad = grad_enabled() && x_in.requires_grad();
  const auto prop = needs_grad ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  auto P = cached<ReluPrimitives>(fmt::format("relu {} prop {}", n, (int)prop), [&](ReluPrimitives& p) {
    p.data = plain_desc({n}, Tag::a);
    // relu_use_dst_for_bwd: the backward reads the output (dx = dy where y > 0), so the input need not be kept
    p.fwd_pd = dnnl::eltwise_forward::primitive_desc(
        dnnl::eltwise_forward::desc(prop, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, p.data, 0.f), ctx().engine);
    p.fwd = dnnl::eltwise_forward(p.fwd_pd);
  });
  Tensor x = contiguous_data(x_in);
  Tensor y = empty(x_in.shape());
  if (n > 0) {
    execute("relu forward", P->fwd, {{DNNL_ARG_SRC, as_memory(P->data, x)}, {DNNL_ARG_DST, as_memory(P->data, y)}});
    ctx().stream.wait();
  }
  return record(y, "relu", {x_in}, {y}, [P](const Node& node, const Tensor& g) {
    // y = max(x, 0)  =>  dx = dy where y > 0, else 0
    const Tensor& y = node.saved[0];
    std::call_once(P->backward_once, [&] {
      const dnnl::eltwise_backward::desc desc(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, P->data, P->data, 0.f);
      P->bwd = dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(desc, ctx().engine, P->fwd_pd));
    });
    Tensor dy = contiguous_data(g);
    Tensor dx = empty(y.shape());
    if (y.numel() > 0) {
      execute("relu backward", *P->bwd, {{DNNL_ARG_DST, as_memory(P->data, y)},
                                     {DNNL_ARG_DIFF_DST, as_memory(P->data, dy)},
                                     {DNNL_ARG_DIFF_SRC, as_memory(P->data, dx)}});
      ctx().stream.wait();
    }
    return std::vector<Tensor>{dx};
  });
}

// ------------------------------------------------------------------ max_pool2d / avg_pool2d

namespace {

struct PoolPrimitives {
  memory::desc x, y;  // nchw
  dnnl::pooling_forward::primitive_desc fwd_pd;
  dnnl::pooling_forward fwd;
  bool has_workspace = false;  // max pooling in training keeps the argmax for the backward
  std::once_flag backward_once;
  std::optional<dnnl::pooling_backward::primitive_desc> bwd_pd;
  std::optional<dnnl::pooling_backward> bwd;
};

// Pooling with oneDNN; `alg` is max or one of the two average algorithms.
Tensor pool2d(const char* op, const Tensor& x_in, const kernels::PoolGeometry& g, dnnl::algorithm alg) {
  const int64_t B = x_in.size(0), C = x_in.size(1);
  const bool needs_grad = grad_enabled() && x_in.requires_grad();
  const auto prop = needs_grad ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  // The right/bottom padding that makes oneDNN's output size ours: the symmetric padding in floor
  // mode, more in ceil mode (the last window may hang over the input's end).
  const int64_t pr_h = std::max(g.ph, (g.OH - 1) * g.sh + g.kh - g.H - g.ph);
  const int64_t pr_w = std::max(g.pw, (g.OW - 1) * g.sw + g.kw - g.W - g.pw);
  const std::string key = fmt::format("pool {} {} {} {} {} -> {} {} k {} {} s {} {} p {} {} {} {} prop {}", (int)alg, B,
                                      C, g.H, g.W, g.OH, g.OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, pr_h, pr_w, (int)prop);
  auto P = cached<PoolPrimitives>(key, [&](PoolPrimitives& p) {
    p.x = plain_desc({B, C, g.H, g.W}, Tag::nchw);
    p.y = plain_desc({B, C, g.OH, g.OW}, Tag::nchw);
    const dnnl::pooling_forward::desc desc(prop, alg, p.x, p.y, {g.sh, g.sw}, {g.kh, g.kw}, {g.ph, g.pw}, {pr_h, pr_w});
    p.fwd_pd = dnnl::pooling_forward::primitive_desc(desc, ctx().engine);
    p.fwd = dnnl::pooling_forward(p.fwd_pd);
    p.has_workspace = p.fwd_pd.workspace_desc().get_size() > 0;
  });
  Tensor x = contiguous_data(x_in);       // (B, C, H, W)
  Tensor y = empty({B, C, g.OH, g.OW});   // (B, C, OH, OW)
  Tensor workspace = P->has_workspace ? buffer_for(P->fwd_pd.workspace_desc()) : Tensor();
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, as_memory(P->x, x)}, {DNNL_ARG_DST, as_memory(P->y, y)}};
  if (P->has_workspace) args[DNNL_ARG_WORKSPACE] = as_memory(P->fwd_pd.workspace_desc(), workspace);
  execute("pooling forward", P->fwd, args);
  ctx().stream.wait();

  return record(y, op, {x_in}, {workspace}, [P, g, alg, pr_h, pr_w](const Node& node, const Tensor& gy) {
    // max: each output's gradient flows to the input that was its maximum (recorded in the workspace);
    // avg: each input in a window gets dy / divisor
    std::call_once(P->backward_once, [&] {
      const dnnl::pooling_backward::desc desc(alg, P->x, P->y, {g.sh, g.sw}, {g.kh, g.kw}, {g.ph, g.pw},
                                              {pr_h, pr_w});
      P->bwd_pd = dnnl::pooling_backward::primitive_desc(desc, ctx().engine, P->fwd_pd);
      P->bwd = dnnl::pooling_backward(*P->bwd_pd);
    });
    Tensor dy = contiguous_data(gy);
    Tensor dx = empty({P->x.dims()[0], P->x.dims()[1], g.H, g.W});
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, as_memory(P->y, dy)},
                                         {DNNL_ARG_DIFF_SRC, as_memory(P->x, dx)}};
    if (P->has_workspace) args[DNNL_ARG_WORKSPACE] = as_memory(P->fwd_pd.workspace_desc(), node.saved[0]);
    execute("pooling backward", *P->bwd, args);
    ctx().stream.wait();
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const kernels::PoolGeometry& g) {
  // oneDNN's max skips NaNs; PyTorch (and our reference) propagate them: leave such inputs to the reference
  Tensor xc = contiguous_data(x);
  const float* p = xc.data<float>();
  bool has_nan = false;
  for (int64_t i = 0, n = xc.numel(); i < n; ++i) has_nan |= p[i] != p[i];
  if (has_nan) return Tensor();
  return pool2d("max_pool2d", x, g, dnnl::algorithm::pooling_max);
}

Tensor avg_pool2d(const Tensor& x, const kernels::PoolGeometry& g, bool count_include_pad) {
  return pool2d("avg_pool2d", x, g,
                count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                  : dnnl::algorithm::pooling_avg_exclude_padding);
}

// ------------------------------------------------------------------ the cache

size_t cached_primitives() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return cache().size();
}

void clear_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  cache().clear();
}

}  // namespace kd::onednn

#else  // built without oneDNN: the choose_*_path() functions never call these

namespace kd::onednn {

static Error unavailable(const char* op) {
  return Error(fmt::format("onednn::{}: this kdlab was built without oneDNN (install libdnnl-dev ocl-icd-opencl-dev and "
                           "reconfigure with -DKDLAB_WITH_DNNL=ON); use the cpu backend",
                           op));
}

Tensor conv2d(const Tensor&, const Tensor&, const Tensor&, Int2, Int2, Int2, int64_t) { throw unavailable("conv2d"); }
Tensor conv2d_relu_inference(const Tensor&, const Tensor&, const Tensor&, Int2, Int2, Int2, int64_t) {
  throw unavailable("conv2d_relu_inference");
}
Tensor linear(const Tensor&, const Tensor&, const Tensor&) { throw unavailable("linear"); }
Tensor batch_norm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool, double, double) {
  throw unavailable("batch_norm");
}
Tensor relu(const Tensor&) { throw unavailable("relu"); }
Tensor max_pool2d(const Tensor&, const kernels::PoolGeometry&) { throw unavailable("max_pool2d"); }
Tensor avg_pool2d(const Tensor&, const kernels::PoolGeometry&, bool) { throw unavailable("avg_pool2d"); }
std::string conv_implementation(const Shape&, const Shape&, Int2, Int2, Int2, int64_t) {
  throw unavailable("conv_implementation");
}
size_t cached_primitives() { return 0; }
void clear_cache() {}

}  // namespace kd::onednn

#endif
