// tensor.h: Tensor = shared storage + shape + strides + offset + dtype, plus autograd state.
//
// A Tensor is a cheap handle (a shared_ptr to TensorImpl). Copying a Tensor copies the
// handle, not the data. Views (reshape, permute, slice, expand, ...) share the storage and
// differ only in shape / strides / offset. Layout is NCHW at the API, as in PyTorch.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/error.h"

namespace kd {

using Shape = std::vector<int64_t>;

class Generator;
struct Node;

// One 64-byte aligned block of bytes shared by a tensor and all its views. Blocks come from a
// cache of freed blocks of the same size when one is there (see storage_cache_bytes): a training
// step allocates the same sizes every iteration, and fresh memory from the OS costs a page fault
// per 4 KiB.
struct Storage {
  Storage(size_t nbytes, bool zero_fill);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t nbytes = 0;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;         // in elements, one per dim
  int64_t offset = 0;    // in elements, from storage->data
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool retains_grad = false;          // keep .grad on a non-leaf (see Tensor::retain_grad)
  std::shared_ptr<TensorImpl> grad;   // accumulated gradient
  std::shared_ptr<Node> grad_fn;      // the op that produced this tensor (null for leaves)
  std::string name;                   // optional, shown by the graph printer
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (used for "no bias", "no gradient")
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Shape& shape() const { return checked().shape; }
  const Shape& strides() const { return checked().strides; }
  int64_t offset() const { return checked().offset; }
  DType dtype() const { return checked().dtype; }
  int64_t dim() const { return (int64_t)shape().size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  bool is_contiguous() const;

  // ---- raw data: pointer to the first element (storage + offset)
  void* raw_data() const;
  template <typename T>
  T* data() const {
    KD_CHECK(dtype() == dtype_of<T>(), "Tensor::data<{}>() called on a tensor of dtype {}",
             dtype_name(dtype_of<T>()), dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }

  // ---- element access, for debugging and tests (slow, bounds-checked)
  double item() const;                               // the value of a one-element tensor
  double at(const std::vector<int64_t>& idx) const;  // negative indices count from the end
  void set(const std::vector<int64_t>& idx, double value) const;

  // ---- autograd
  bool requires_grad() const { return checked().requires_grad; }
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return checked().grad_fn; }
  Tensor grad() const;       // undefined if no gradient has been accumulated
  void set_grad(const Tensor& g) const;
  void zero_grad() const;    // drops the accumulated gradient
  void retain_grad() const;  // keep the gradient of a non-leaf after backward()
  Tensor detach() const;     // same storage, no grad_fn, requires_grad = false
  // Backpropagate from this tensor. A scalar needs no gradient; otherwise pass d(loss)/d(this).
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  Tensor& set_name(std::string name);
  const std::string& name() const { return checked().name; }

  // ---- views and copies (differentiable; defined in ops/views.cpp)
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor view(const Shape& shape) const;     // like reshape, but never copies
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // slice of size 1, dim removed
  Tensor expand(const Shape& shape) const;          // -1 keeps a size
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;       // a contiguous copy (differentiable)
  Tensor to(DType dtype) const;  // converted copy (not differentiable)

  // ---- in place, without autograd (optimizers, initialisation)
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);                 // src broadcast to this shape, dtype converted
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other (f32)
  Tensor& mul_(double s);                           // this *= s (f32)

 private:
  const TensorImpl& checked() const {
    KD_CHECK(impl_ != nullptr, "operation on an undefined Tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

// ---- shape helpers
Shape contiguous_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);        // "(2, 3, 4)"
int64_t wrap_dim(int64_t dim, int64_t ndim);      // -1 -> ndim-1, with a clear error when out of range
// A view of t's storage with the given geometry (no autograd). Bounds are checked.
Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);

// Bytes held by the block cache, and a way to give them back to the OS.
size_t storage_cache_bytes();
void release_storage_cache();

// ---- factories
// empty(): UNINITIALISED memory, for outputs a kernel overwrites completely. With the
// environment variable KDLAB_POISON_EMPTY=1 it is filled with NaN (float32) / 0xAB bytes, so a
// kernel that reads memory it never wrote shows up in the tests. Use zeros() to accumulate into.
Tensor empty(const Shape& shape, DType dtype = DType::f32);
Tensor zeros(const Shape& shape, DType dtype = DType::f32);
Tensor ones(const Shape& shape, DType dtype = DType::f32);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor scalar_tensor(double value, DType dtype = DType::f32);  // 0-d
Tensor arange(int64_t start, int64_t end, int64_t step = 1, DType dtype = DType::i64);
Tensor from_vector(const std::vector<float>& values, const Shape& shape);
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
Tensor from_vector(const std::vector<uint8_t>& values, const Shape& shape);
Tensor rand(const Shape& shape, Generator& gen);    // uniform [0, 1)
Tensor randn(const Shape& shape, Generator& gen);   // standard normal
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen);
Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen);  // int64 in [lo, hi)

// Values of any tensor (any layout) in C order, converted.
std::vector<float> to_float_vector(const Tensor& t);
std::vector<int64_t> to_int_vector(const Tensor& t);

// Printing: shape, dtype and values, truncated like NumPy for large tensors.
std::string to_string(const Tensor& t, int64_t edge_items = 3);

}  // namespace kd

// fmt::print("{}", tensor) prints what to_string() does.
template <>
struct fmt::formatter<kd::Tensor> : fmt::formatter<std::string> {
  auto format(const kd::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string>::format(kd::to_string(t), ctx);
  }
};
