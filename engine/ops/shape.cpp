// Shape and indexing ops: cat, stack, split, chunk, index_select, gather, scatter, scatter_add,
// one_hot, pad. (The view methods of Tensor -- reshape, permute, slice, ... -- are in views.cpp.)
//
// Forward kernels are scalar loops over raw pointers (any dtype through `dispatch`); backward
// passes are written with other ops:
//   cat            -> slices of the gradient
//   index_select   -> scatter_add of the gradient into zeros (index_add)
//   gather         -> scatter_add of the gradient into zeros
//   scatter        -> gradient with the scattered positions zeroed (a), gathered gradient (src)
//   scatter_add    -> the gradient itself (a), gathered gradient (src)
//   pad            -> pad with the negated pads (crops what was added, zero-fills what was cut)
#include <algorithm>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

namespace {

// Calls f(T{}) with T the C++ element type of dt.
template <typename F>
void dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::i64: f(int64_t{}); break;
    case DType::u8: f(uint8_t{}); break;
  }
}

void check_index_tensor(const Tensor& index, const char* op) {
  KD_CHECK(index.defined(), "{}: the index tensor is undefined", op);
  KD_CHECK(index.dtype() == DType::i64, "{}: the index must be an int64 tensor, got {}; convert with .to(kd::DType::i64)",
           op, dtype_name(index.dtype()));
}

// A checked index value: 0 <= i < size (no negative indices, as PyTorch's gather/scatter).
inline int64_t checked_index(int64_t i, int64_t size, int64_t dim, const char* op) {
  KD_CHECK(i >= 0 && i < size, "{}: index {} is out of range for dim {} of size {}", op, i, dim, size);
  return i;
}

// A contiguous copy without autograd (the starting point of out-of-place scatters).
Tensor copy_of(const Tensor& a) {
  NoGradGuard no_grad;
  return a.detach().clone();
}

// The gradient of a scatter's src: the gradient at the scattered positions, gathered, and placed
// in the leading corner of src's shape (src may be larger than index; the rest gets none).
Tensor src_grad(const Tensor& g, int64_t dim, const Tensor& index, const Shape& src_shape) {
  Tensor gs = gather(g, dim, index);  // index.shape()
  if (gs.shape() == src_shape) return gs;
  std::vector<int64_t> pads;
  for (int64_t d = (int64_t)src_shape.size() - 1; d >= 0; --d) {
    pads.push_back(0);
    pads.push_back(src_shape[d] - gs.shape()[d]);
  }
  return pad(gs, pads);
}

}  // namespace

// ------------------------------------------------------------------ cat / stack

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  KD_CHECK(!tensors.empty(), "cat: needs at least one tensor");
  const Tensor& first = tensors[0];
  KD_CHECK(first.defined(), "cat: tensor 0 is undefined");
  const int64_t nd = first.dim();
  KD_CHECK(nd > 0, "cat: zero-dimensional tensors cannot be concatenated; unsqueeze(0) them or use stack()");
  const int64_t d = wrap_dim(dim, nd);
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    KD_CHECK(t.defined(), "cat: tensor {} is undefined", i);
    KD_CHECK(t.dtype() == first.dtype(), "cat: tensor {} has dtype {} but tensor 0 has {}; convert with .to()", i,
             dtype_name(t.dtype()), dtype_name(first.dtype()));
    bool match = t.dim() == nd;
    for (int64_t k = 0; match && k < nd; ++k) match = k == d || t.shape()[k] == first.shape()[k];
    KD_CHECK(match, "cat: tensor {} has shape {} but tensor 0 has shape {}; they must match in every dim except dim {}",
             i, shape_str(t.shape()), shape_str(first.shape()), d);
    out_shape[d] += t.shape()[d];
  }
  // forward: copy each input into its slab of the output, along dim
  Tensor out = empty(out_shape, first.dtype());
  std::vector<int64_t> starts;
  {
    NoGradGuard no_grad;
    int64_t at = 0;
    for (const Tensor& t : tensors) {
      starts.push_back(at);
      out.slice(d, at, at + t.shape()[d]).copy_(t);
      at += t.shape()[d];
    }
  }
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) sizes.push_back(t.shape()[d]);
  out = record(out, "cat", tensors, {}, [d, starts, sizes](const Node&, const Tensor& g) {
    // each input gets back its own slab of the gradient
    std::vector<Tensor> grads;
    for (size_t i = 0; i < starts.size(); ++i) grads.push_back(g.slice(d, starts[i], starts[i] + sizes[i]));
    return grads;
  });
  if (active_trace()) trace_op("cat", tensors, {{"dim", {(double)d}}}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  KD_CHECK(!tensors.empty(), "stack: needs at least one tensor");
  KD_CHECK(tensors[0].defined(), "stack: tensor 0 is undefined");
  const int64_t d = wrap_dim(dim, tensors[0].dim() + 1);
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    KD_CHECK(tensors[i].defined(), "stack: tensor {} is undefined", i);
    KD_CHECK(tensors[i].shape() == tensors[0].shape(),
             "stack: tensor {} has shape {} but tensor 0 has shape {}; stack needs tensors of equal shape", i,
             shape_str(tensors[i].shape()), shape_str(tensors[0].shape()));
    parts.push_back(tensors[i].unsqueeze(d));  // (..., 1, ...)
  }
  return cat(parts, d);  // differentiable through unsqueeze and cat
}

// ------------------------------------------------------------------ split / chunk

std::vector<Tensor> split(const Tensor& a, int64_t split_size, int64_t dim) {
  KD_CHECK(a.dim() > 0, "split: cannot split a zero-dimensional tensor");
  const int64_t d = wrap_dim(dim, a.dim());
  const int64_t n = a.shape()[d];
  KD_CHECK(split_size > 0 || (split_size == 0 && n == 0),
           "split: split_size must be positive, got {} (dim {} has size {})", split_size, d, n);
  if (n == 0) return {a.slice(d, 0, 0)};
  std::vector<Tensor> pieces;  // views of a: their backward is the slice backward
  for (int64_t at = 0; at < n; at += split_size) pieces.push_back(a.slice(d, at, std::min(at + split_size, n)));
  return pieces;
}

std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim) {
  KD_CHECK(chunks > 0, "chunk: the number of chunks must be positive, got {}", chunks);
  KD_CHECK(a.dim() > 0, "chunk: cannot chunk a zero-dimensional tensor");
  const int64_t d = wrap_dim(dim, a.dim());
  const int64_t n = a.shape()[d];
  if (n == 0) return std::vector<Tensor>(chunks, a.slice(d, 0, 0));  // as PyTorch: `chunks` empty pieces
  // as PyTorch: pieces of ceil(n / chunks), so there may be fewer than `chunks` of them
  return split(a, (n + chunks - 1) / chunks, d);
}

// ------------------------------------------------------------------ index_select / gather

Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index) {
  check_index_tensor(index, "index_select");
  KD_CHECK(index.dim() <= 1, "index_select: the index must be 1-D, got shape {}", shape_str(index.shape()));
  KD_CHECK(a.dim() > 0, "index_select: the input must have at least one dim");
  const int64_t d = wrap_dim(dim, a.dim());
  const int64_t n = a.shape()[d], L = index.numel();
  Shape out_shape = a.shape();
  out_shape[d] = L;
  // view a as (outer, n, inner) and out as (outer, L, inner)
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= a.shape()[k];
  for (int64_t k = d + 1; k < a.dim(); ++k) inner *= a.shape()[k];
  std::vector<int64_t> idx = to_int_vector(index);
  for (int64_t i : idx) checked_index(i, n, d, "index_select");
  Tensor src = a.detach().contiguous();
  Tensor out = empty(out_shape, a.dtype());
  dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* x = src.data<T>();
    T* o = out.data<T>();
    for (int64_t p = 0; p < outer; ++p)
      for (int64_t j = 0; j < L; ++j)
        for (int64_t q = 0; q < inner; ++q) o[(p * L + j) * inner + q] = x[(p * n + idx[j]) * inner + q];
  });
  Shape idx_shape(a.dim(), 1);  // index as (1, .., L, .., 1) for the backward
  idx_shape[d] = L;
  Tensor idx_view = index.reshape(idx_shape);
  return record(out, "index_select", {a}, {idx_view}, [in_shape = a.shape(), d](const Node& n, const Tensor& g) {
    // out[.., j, ..] = a[.., index[j], ..]: each gradient row is added back at its source row
    Tensor idx = n.saved[0].expand(g.shape());
    return std::vector<Tensor>{scatter_add(zeros(in_shape), d, idx, g)};
  });
}

Tensor gather(const Tensor& a, int64_t dim, const Tensor& index) {
  check_index_tensor(index, "gather");
  KD_CHECK(a.dim() > 0, "gather: the input must have at least one dim");
  KD_CHECK(index.dim() == a.dim(), "gather: index of shape {} must have as many dims as the input {}",
           shape_str(index.shape()), shape_str(a.shape()));
  const int64_t d = wrap_dim(dim, a.dim());
  for (int64_t k = 0; k < a.dim(); ++k)
    KD_CHECK(k == d || index.shape()[k] <= a.shape()[k],
             "gather: index of shape {} is larger than the input {} in dim {} (only dim {} may differ)",
             shape_str(index.shape()), shape_str(a.shape()), k, d);
  // out[i0, .., ik, ..] = a[i0, .., index[i0, .., ik, ..], ..] with k = dim
  Tensor out = empty(index.shape(), a.dtype());
  Shape a_st = a.strides();
  const int64_t step = a_st[d], n = a.shape()[d];
  a_st[d] = 0;  // the position along dim comes from the index
  dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* x = a.data<T>();
    const int64_t* ix = index.data<int64_t>();
    T* o = out.data<T>();
    detail::for_each_offset<3>(index.shape(), {index.strides(), a_st, out.strides()},
                               [&](int64_t, const std::array<int64_t, 3>& off) {
                                 o[off[2]] = x[off[1] + checked_index(ix[off[0]], n, d, "gather") * step];
                               });
  });
  return record(out, "gather", {a}, {index}, [in_shape = a.shape(), d](const Node& n, const Tensor& g) {
    // every gathered element sends its gradient back to where it came from (added on repeats)
    return std::vector<Tensor>{scatter_add(zeros(in_shape), d, n.saved[0], g)};
  });
}

// ------------------------------------------------------------------ scatter / scatter_add

namespace {

// out = copy of a; then out[.., index[i], ..] = src[i] (or +=) for every position i of index.
Tensor scatter_forward(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& src, bool accumulate,
                       const char* op) {
  check_index_tensor(index, op);
  KD_CHECK(a.defined() && src.defined(), "{}: undefined input tensor", op);
  KD_CHECK(a.dim() > 0, "{}: the input must have at least one dim", op);
  KD_CHECK(src.dtype() == a.dtype(), "{}: src has dtype {} but the input has {}", op, dtype_name(src.dtype()),
           dtype_name(a.dtype()));
  KD_CHECK(index.dim() == a.dim() && src.dim() == a.dim(),
           "{}: input {}, index {} and src {} must have the same number of dims", op, shape_str(a.shape()),
           shape_str(index.shape()), shape_str(src.shape()));
  const int64_t d = wrap_dim(dim, a.dim());
  for (int64_t k = 0; k < a.dim(); ++k) {
    KD_CHECK(index.shape()[k] <= src.shape()[k], "{}: index of shape {} is larger than src {} in dim {}", op,
             shape_str(index.shape()), shape_str(src.shape()), k);
    KD_CHECK(k == d || index.shape()[k] <= a.shape()[k],
             "{}: index of shape {} is larger than the input {} in dim {} (only dim {} may differ)", op,
             shape_str(index.shape()), shape_str(a.shape()), k, d);
  }
  Tensor out = copy_of(a);  // contiguous
  Shape o_st = out.strides();
  const int64_t step = o_st[d], n = a.shape()[d];
  o_st[d] = 0;  // the position along dim comes from the index
  dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* s = src.data<T>();
    const int64_t* ix = index.data<int64_t>();
    T* o = out.data<T>();
    detail::for_each_offset<3>(index.shape(), {index.strides(), src.strides(), o_st},
                               [&](int64_t, const std::array<int64_t, 3>& off) {
                                 T& dst = o[off[2] + checked_index(ix[off[0]], n, d, op) * step];
                                 if (accumulate) dst += s[off[1]]; else dst = s[off[1]];
                               });
  });
  return out;
}

}  // namespace

Tensor scatter(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = scatter_forward(a, dim, index, src, /*accumulate=*/false, "scatter");
  const int64_t d = wrap_dim(dim, a.dim());
  return record(out, "scatter", {a, index, src}, {index}, [d, src_shape = src.shape()](const Node& n, const Tensor& g) {
    const Tensor& index = n.saved[0];
    // out = a except at the scattered positions, which hold src:
    //   d out / d a = 1 off the scattered positions, 0 on them; d out / d src = 1 where it landed
    Tensor ga = n.inputs[0].requires_grad() ? scatter(g, d, index, zeros(index.shape())) : Tensor();
    Tensor gs = n.inputs[2].requires_grad() ? src_grad(g, d, index, src_shape) : Tensor();
    return std::vector<Tensor>{ga, Tensor(), gs};
  });
}

Tensor scatter_add(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = scatter_forward(a, dim, index, src, /*accumulate=*/true, "scatter_add");
  const int64_t d = wrap_dim(dim, a.dim());
  return record(out, "scatter_add", {a, index, src}, {index}, [d, src_shape = src.shape()](const Node& n, const Tensor& g) {
    // out = a + (src added at index): d out / d a = 1, d out / d src = 1 where it landed
    Tensor gs = n.inputs[2].requires_grad() ? src_grad(g, d, n.saved[0], src_shape) : Tensor();
    return std::vector<Tensor>{g, Tensor(), gs};
  });
}

// ------------------------------------------------------------------ one_hot

Tensor one_hot(const Tensor& labels, int64_t num_classes) {
  KD_CHECK(labels.defined() && labels.dtype() == DType::i64, "one_hot: labels must be an int64 tensor, got {}",
           labels.defined() ? std::string(dtype_name(labels.dtype())) : "undefined");
  std::vector<int64_t> y = to_int_vector(labels);
  int64_t K = num_classes;
  if (K < 0) {  // as PyTorch: -1 means max(label) + 1
    KD_CHECK(!y.empty(), "one_hot: cannot infer the number of classes from empty labels; pass num_classes");
    K = *std::max_element(y.begin(), y.end()) + 1;
  }
  for (int64_t v : y)
    KD_CHECK(v >= 0 && v < K, "one_hot: label {} is out of range for {} classes (labels must be in [0, {}))", v, K, K);
  Shape shape = labels.shape();  // (...) -> (..., K)
  shape.push_back(K);
  Tensor out = zeros(shape);
  float* o = out.data<float>();
  for (size_t i = 0; i < y.size(); ++i) o[(int64_t)i * K + y[i]] = 1.f;
  return out;  // no gradient: labels are integers
}

// ------------------------------------------------------------------ pad

Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value) {
  KD_CHECK(pads.size() % 2 == 0, "pad: pads must come in (before, after) pairs, got {} values", pads.size());
  KD_CHECK((int64_t)pads.size() / 2 <= a.dim(), "pad: {} pairs of pads for a tensor with {} dims (shape {})",
           pads.size() / 2, a.dim(), shape_str(a.shape()));
  // pads[0], pads[1] pad the last dim; pads[2], pads[3] the one before; ...
  Shape out_shape = a.shape();
  std::vector<int64_t> before(a.dim(), 0), after(a.dim(), 0);
  for (size_t k = 0; k < pads.size() / 2; ++k) {
    const int64_t d = a.dim() - 1 - (int64_t)k;
    before[d] = pads[2 * k];
    after[d] = pads[2 * k + 1];
    out_shape[d] = a.shape()[d] + before[d] + after[d];
    KD_CHECK(out_shape[d] >= 0, "pad: pads ({}, {}) on dim {} of size {} leave a negative size {}", before[d],
             after[d], d, a.shape()[d], out_shape[d]);
  }
  Tensor out = full(out_shape, value, a.dtype());
  {
    // the part of `a` that survives (negative pads crop) lands at max(before, 0) in the output
    NoGradGuard no_grad;
    Tensor dst = out, src = a.detach();
    bool any = true;
    for (int64_t d = 0; d < a.dim(); ++d) {
      const int64_t crop_lo = std::max<int64_t>(0, -before[d]), crop_hi = std::max<int64_t>(0, -after[d]);
      const int64_t len = a.shape()[d] - crop_lo - crop_hi;
      if (len <= 0) { any = false; break; }
      const int64_t at = std::max<int64_t>(0, before[d]);
      dst = dst.slice(d, at, at + len);
      src = src.slice(d, crop_lo, crop_lo + len);
    }
    if (any && out.numel() > 0) dst.copy_(src);
  }
  return record(out, "pad", {a}, {}, [pads](const Node&, const Tensor& g) {
    // the gradient of padding is the gradient cropped back (pads negated); cropped parts get 0
    std::vector<int64_t> neg_pads;
    for (int64_t p : pads) neg_pads.push_back(-p);
    return std::vector<Tensor>{pad(g, neg_pads)};
  });
}

}  // namespace kd
