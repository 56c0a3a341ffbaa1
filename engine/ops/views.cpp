// Views: reshape, permute, slice, expand, squeeze/unsqueeze, and contiguous()/clone().
//
// A view shares storage with its input and only changes shape/strides/offset; its backward
// maps the gradient back to the input's shape (reshape back, inverse permute, place the slice
// into zeros, sum over expanded dims).
#include <numeric>

#include "engine/trace.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

// ------------------------------------------------------------------ contiguous / clone

static Tensor copy_contiguous(const Tensor& a) {
  Tensor out = empty(a.shape(), a.dtype());
  NoGradGuard no_grad;  // copy_ refuses to write into graph tensors; out is fresh
  out.copy_(a);
  return out;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = record(copy_contiguous(*this), "contiguous", {*this}, {},
                      [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
  if (active_trace()) trace_op("contiguous", {*this}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor Tensor::clone() const {
  return record(copy_contiguous(*this), "clone", {*this}, {},
                [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
}

// ------------------------------------------------------------------ reshape / view

static Shape infer_shape(const Shape& requested, int64_t numel) {
  Shape shape = requested;
  int64_t known = 1, infer = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      KD_CHECK(infer < 0, "reshape: only one dimension can be -1, got {}", shape_str(requested));
      infer = (int64_t)d;
    } else {
      KD_CHECK(shape[d] >= 0, "reshape: invalid size {} in {}", shape[d], shape_str(requested));
      known *= shape[d];
    }
  }
  if (infer >= 0) {
    KD_CHECK(known != 0 && numel % known == 0, "reshape: cannot infer -1 in {} for {} elements",
             shape_str(requested), numel);
    shape[infer] = numel / known;
  }
  KD_CHECK(shape_numel(shape) == numel, "reshape: shape {} has {} elements but the tensor has {}",
           shape_str(shape), shape_numel(shape), numel);
  return shape;
}

Tensor Tensor::view(const Shape& requested) const {
  Shape shape = infer_shape(requested, numel());
  KD_CHECK(is_contiguous(), "view() needs a contiguous tensor (this one has shape {} and strides {}); use "
           "reshape(), which copies when it must", shape_str(this->shape()), shape_str(strides()));
  Tensor out = as_strided(*this, shape, contiguous_strides(shape), offset());
  out = record(out, "view", {*this}, {}, [in_shape = this->shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  if (active_trace()) trace_op("view", {*this}, {}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor Tensor::reshape(const Shape& requested) const {
  if (is_contiguous()) return view(requested);
  return contiguous().view(requested);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  int64_t s = wrap_dim(start_dim, dim()), e = wrap_dim(end_dim, dim());
  KD_CHECK(s <= e, "flatten: start_dim {} is after end_dim {}", start_dim, end_dim);
  Shape shape(this->shape().begin(), this->shape().begin() + s);
  int64_t m = 1;
  for (int64_t d = s; d <= e; ++d) m *= this->shape()[d];
  shape.push_back(m);
  shape.insert(shape.end(), this->shape().begin() + e + 1, this->shape().end());
  return reshape(shape);
}

// ------------------------------------------------------------------ permute / transpose

Tensor Tensor::permute(const Shape& dims) const {
  KD_CHECK((int64_t)dims.size() == dim(), "permute: {} dims given for a tensor with {} dims", dims.size(), dim());
  Shape shape(dim()), st(dim()), inverse(dim(), -1);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(dims[i], dim());
    KD_CHECK(inverse[d] < 0, "permute: dim {} appears twice in {}", d, shape_str(dims));
    inverse[d] = i;
    shape[i] = this->shape()[d];
    st[i] = strides()[d];
  }
  Tensor out = as_strided(*this, shape, st, offset());
  out = record(out, "permute", {*this}, {}, [inverse](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.permute(inverse)};
  });
  if (active_trace()) {  // for exporters (engine/trace.h)
    std::vector<double> perm;
    for (int64_t i = 0; i < dim(); ++i) perm.push_back((double)wrap_dim(dims[i], dim()));
    trace_op("permute", {*this}, {{"dims", perm}}, out);
  }
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  if (dim() == 0) {  // as PyTorch: transpose(0, 0) or (-1, -1) of a 0-d tensor is itself
    wrap_dim(d0, 0);
    wrap_dim(d1, 0);
    return *this;
  }
  Shape dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(d0, dim())], dims[wrap_dim(d1, dim())]);
  return permute(dims);
}

Tensor Tensor::t() const {
  KD_CHECK(dim() == 2, "t() needs a 2-D tensor, got shape {}", shape_str(shape()));
  return transpose(0, 1);
}

// ------------------------------------------------------------------ slice / select

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  KD_CHECK(dim() > 0, "slice() cannot be applied to a 0-d tensor");
  d = wrap_dim(d, dim());
  KD_CHECK(step > 0, "slice: step must be positive, got {}", step);
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), st = strides();
  shape[d] = (end - start + step - 1) / step;
  st[d] = strides()[d] * step;
  Tensor out = as_strided(*this, shape, st, offset() + start * strides()[d]);
  out = record(out, "slice", {*this}, {}, [in_shape = this->shape(), d, start, end, step](const Node&, const Tensor& g) {
    // the gradient lands in the sliced positions of a zero tensor
    Tensor gin = zeros(in_shape);
    gin.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{gin};
  });
  if (active_trace())  // for exporters (engine/trace.h)
    trace_op("slice", {*this}, {{"dim", {(double)d}}, {"start", {(double)start}}, {"end", {(double)end}}, {"step", {(double)step}}},
             out);
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  KD_CHECK(dim() > 0, "select() cannot be applied to a 0-d tensor");
  d = wrap_dim(d, dim());
  const int64_t n = shape()[d];
  KD_CHECK(index >= -n && index < n, "select: index {} out of range for dim {} of size {}", index, d, n);
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

// ------------------------------------------------------------------ expand / squeeze / unsqueeze

Tensor Tensor::expand(const Shape& requested) const {
  KD_CHECK((int64_t)requested.size() >= dim(), "expand: target {} has fewer dims than the tensor {}",
           shape_str(requested), shape_str(shape()));
  const int64_t lead = (int64_t)requested.size() - dim();
  Shape shape(requested.size()), st(requested.size(), 0);
  for (int64_t i = 0; i < (int64_t)requested.size(); ++i) {
    int64_t want = requested[i];
    if (i < lead) {
      KD_CHECK(want >= 0, "expand: size -1 is not allowed for a new leading dim in {}", shape_str(requested));
      shape[i] = want;
      continue;
    }
    int64_t have = this->shape()[i - lead];
    if (want == -1) want = have;
    KD_CHECK(have == want || have == 1, "expand: the tensor of shape {} cannot be expanded to {} (dim {} is {}, not 1)",
             shape_str(this->shape()), shape_str(requested), i - lead, have);
    shape[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  Tensor out = as_strided(*this, shape, st, offset());
  out = record(out, "expand", {*this}, {}, [in_shape = this->shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, in_shape)};
  });
  if (active_trace()) trace_op("expand", {*this}, {{"shape", std::vector<double>(shape.begin(), shape.end())}}, out);
  return out;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim());
  if (dim() == 0 || shape()[d] != 1) return *this;  // as PyTorch: squeezing a dim that is not 1 does nothing
  Shape shape = this->shape(), st = strides();
  shape.erase(shape.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = as_strided(*this, shape, st, offset());
  out = record(out, "squeeze", {*this}, {}, [in_shape = this->shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  if (active_trace()) trace_op("squeeze", {*this}, {{"dim", {(double)d}}}, out);  // for exporters (engine/trace.h)
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1);
  Shape shape = this->shape(), st = strides();
  int64_t stride = d < dim() ? strides()[d] * this->shape()[d] : 1;
  shape.insert(shape.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  Tensor out = as_strided(*this, shape, st, offset());
  out = record(out, "unsqueeze", {*this}, {}, [d](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.squeeze(d)};
  });
  if (active_trace()) trace_op("unsqueeze", {*this}, {{"dim", {(double)d}}}, out);  // for exporters (engine/trace.h)
  return out;
}

}  // namespace kd
