#include "engine/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

// ------------------------------------------------------------------------------- storage

namespace {

// Freed blocks, by rounded size, kept for reuse up to a total of kMaxCached bytes.
class BlockCache {
 public:
  static constexpr size_t kMaxCached = size_t(2) << 30;  // 2 GiB
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCached) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

// Function-local static: constructed on first use, never destroyed (Storages may outlive main).
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();
  return *cache;
}

bool poison_empty() {
  static const bool on = [] {
    const char* v = std::getenv("KDLAB_POISON_EMPTY");
    return v && std::string(v) == "1";
  }();
  return on;
}

size_t rounded_size(size_t n) { return n == 0 ? 64 : ((n + 63) / 64) * 64; }

}  // namespace

Storage::Storage(size_t n, bool zero_fill) : nbytes(n) {
  const size_t rounded = rounded_size(n);  // aligned_alloc needs a multiple of the alignment
  data = block_cache().take(rounded);
  if (!data) data = std::aligned_alloc(64, rounded);
  KD_CHECK(data != nullptr, "out of memory allocating {} bytes for a tensor", n);
  if (zero_fill) std::memset(data, 0, rounded);
}

Storage::~Storage() { block_cache().give(data, rounded_size(nbytes)); }

size_t storage_cache_bytes() { return block_cache().cached(); }
void release_storage_cache() { block_cache().release(); }

// ------------------------------------------------------------------------------- shapes

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (int64_t d = (int64_t)shape.size() - 1; d >= 0; --d) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_str(const Shape& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

int64_t wrap_dim(int64_t dim, int64_t ndim) {
  int64_t n = ndim == 0 ? 1 : ndim;  // a 0-d tensor accepts dim 0 / -1 as PyTorch does
  KD_CHECK(dim >= -n && dim < n, "dimension {} is out of range for a tensor with {} dims (expected {} to {})",
           dim, ndim, -n, n - 1);
  return dim < 0 ? dim + n : dim;
}

Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  KD_CHECK(shape.size() == strides.size(), "as_strided: shape {} and strides {} differ in length",
           shape_str(shape), shape_str(strides));
  // bounds: the smallest and largest element reachable must lie in the storage
  int64_t lo = offset, hi = offset;
  bool empty_view = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    KD_CHECK(shape[d] >= 0, "as_strided: negative size in shape {}", shape_str(shape));
    if (shape[d] == 0) empty_view = true;
    int64_t span = (shape[d] - 1) * strides[d];
    if (span > 0) hi += span; else lo += span;
  }
  int64_t cap = (int64_t)(t.impl()->storage->nbytes / dtype_size(t.dtype()));
  KD_CHECK(empty_view || (lo >= 0 && hi < cap), "as_strided: view {} with strides {} at offset {} exceeds the storage of {} elements",
           shape_str(shape), shape_str(strides), offset, cap);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(impl);
}

// ------------------------------------------------------------------------------- metadata

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim())]; }

int64_t Tensor::numel() const { return shape_numel(shape()); }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(checked().storage->data) + offset() * (int64_t)dtype_size(dtype());
}

// ------------------------------------------------------------------------------- element access

static int64_t element_offset(const Tensor& t, const std::vector<int64_t>& idx) {
  KD_CHECK((int64_t)idx.size() == t.dim(), "index with {} entries for a tensor of shape {}", idx.size(),
           shape_str(t.shape()));
  int64_t off = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t i = idx[d] < 0 ? idx[d] + t.shape()[d] : idx[d];
    KD_CHECK(i >= 0 && i < t.shape()[d], "index {} is out of range for dim {} of size {}", idx[d], d,
             t.shape()[d]);
    off += i * t.strides()[d];
  }
  return off;
}

double Tensor::item() const {
  KD_CHECK(numel() == 1, "item() needs a tensor with one element, got shape {}", shape_str(shape()));
  return detail::load_as_double(*this, raw_data(), 0);
}

double Tensor::at(const std::vector<int64_t>& idx) const {
  return detail::load_as_double(*this, raw_data(), element_offset(*this, idx));
}

void Tensor::set(const std::vector<int64_t>& idx, double value) const {
  detail::store_from_double(dtype(), raw_data(), element_offset(*this, idx), value);
}

// ------------------------------------------------------------------------------- autograd glue

Tensor& Tensor::requires_grad_(bool on) {
  KD_CHECK(is_leaf(), "requires_grad_() can only be changed on a leaf tensor; use detach() first");
  KD_CHECK(!on || dtype() == DType::f32, "only float32 tensors can require gradients (this one is {})",
           dtype_name(dtype()));
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return checked().grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
  checked();
  impl_->grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::zero_grad() const { checked(); impl_->grad.reset(); }

void Tensor::retain_grad() const {
  KD_CHECK(requires_grad(), "retain_grad() on a tensor that does not require grad");
  impl_->retains_grad = true;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward(*this, gradient, retain_graph);
}

Tensor& Tensor::set_name(std::string name) {
  checked();
  impl_->name = std::move(name);
  return *this;
}

Tensor Tensor::to(DType dt) const {
  Tensor out = empty(shape(), dt);
  out.copy_(*this);
  return out;
}

// ------------------------------------------------------------------------------- in place

static void check_inplace(const Tensor& t, const char* what) {
  KD_CHECK(!(grad_enabled() && t.requires_grad()),
           "{} on a tensor that requires grad while grad mode is on; wrap it in kd::NoGradGuard", what);
}

// The in-place ops walk the destination as rows (detail::plan_rows: size-1 dims dropped, dims
// that are contiguous together merged), so the common layouts take one fast call per row: a
// memcpy for same-dtype contiguous rows (a permuted copy whose innermost dim stays contiguous
// included), a fill for a broadcast source, a SIMD kernel for float rows. Other rows (strided,
// or converting between dtypes) take a typed loop. Big tensors are split over threads.

namespace {

// Calls fn(T{}) with T the C++ type of dt.
template <typename F>
void with_dtype(DType dt, F&& fn) {
  switch (dt) {
    case DType::f32: fn(float{}); break;
    case DType::i64: fn(int64_t{}); break;
    case DType::u8: fn(uint8_t{}); break;
  }
}

// d[j * sd] = s[j * ss] for j < n, converted through double as load_as_double/store_from_double do.
template <typename D, typename S>
void convert_row(D* d, int64_t sd, const S* s, int64_t ss, int64_t n) {
  if constexpr (std::is_same_v<D, S>) {
    if (sd == 1 && ss == 1) {
      std::memcpy(d, s, n * sizeof(D));
    } else if (sd == 1 && ss == 0) {
      std::fill_n(d, n, s[0]);
    } else {
      for (int64_t j = 0; j < n; ++j) d[j * sd] = s[j * ss];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) d[j * sd] = static_cast<D>(static_cast<double>(s[j * ss]));
  }
}

}  // namespace

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_()");
  if (numel() == 0) return *this;
  const detail::RowPlan<1> plan = detail::plan_rows<1>(shape(), {strides()});
  with_dtype(dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* base = static_cast<T*>(raw_data());
    const T v = static_cast<T>(value);
    const int64_t sd = plan.row_stride[0];
    detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t, const std::array<int64_t, 1>& o, int64_t n) {
      T* d = base + o[0];
      if (sd == 1) {
        std::fill_n(d, n, v);
      } else {
        for (int64_t j = 0; j < n; ++j) d[j * sd] = v;
      }
    });
  });
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_()");
  Shape bs = broadcast_shapes(src.shape(), shape());
  KD_CHECK(bs == shape(), "copy_: source of shape {} does not broadcast to destination shape {}",
           shape_str(src.shape()), shape_str(shape()));
  if (numel() == 0) return *this;
  const detail::RowPlan<2> plan = detail::plan_rows<2>(shape(), {strides(), detail::broadcast_strides(src, shape())});
  const int64_t sd = plan.row_stride[0], ss = plan.row_stride[1];
  with_dtype(dtype(), [&](auto dtag) {
    with_dtype(src.dtype(), [&](auto stag) {
      using D = decltype(dtag);
      using S = decltype(stag);
      D* dst = static_cast<D*>(raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t, const std::array<int64_t, 2>& o, int64_t n) {
        convert_row(dst + o[0], sd, s + o[1], ss, n);
      });
    });
  });
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_()");
  KD_CHECK(dtype() == DType::f32 && other.dtype() == DType::f32, "add_ needs float32 tensors");
  Shape bs = broadcast_shapes(other.shape(), shape());
  KD_CHECK(bs == shape(), "add_: shape {} does not broadcast to {}", shape_str(other.shape()), shape_str(shape()));
  if (numel() == 0) return *this;
  float* d = data<float>();
  const float* s = other.data<float>();
  const float a = (float)alpha;
  const detail::RowPlan<2> plan = detail::plan_rows<2>(shape(), {strides(), detail::broadcast_strides(other, shape())});
  const int64_t sd = plan.row_stride[0], ss = plan.row_stride[1];
  const kernels::CpuKernels& cpu = kernels::cpu();
  detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t, const std::array<int64_t, 2>& o, int64_t n) {
    if (sd == 1 && ss == 1) {
      cpu.axpy(a, s + o[1], d + o[0], n);  // d += a * s
    } else {
      for (int64_t j = 0; j < n; ++j) d[o[0] + j * sd] += a * s[o[1] + j * ss];
    }
  });
  return *this;
}

Tensor& Tensor::mul_(double s) {
  check_inplace(*this, "mul_()");
  KD_CHECK(dtype() == DType::f32, "mul_ needs a float32 tensor");
  if (numel() == 0) return *this;
  float* d = data<float>();
  const float f = (float)s;
  const detail::RowPlan<1> plan = detail::plan_rows<1>(shape(), {strides()});
  const int64_t sd = plan.row_stride[0];
  const kernels::CpuKernels& cpu = kernels::cpu();
  detail::run_rows(plan, detail::kElementwiseGrain, [&](int64_t, const std::array<int64_t, 1>& o, int64_t n) {
    if (sd == 1) {
      cpu.mul_scalar(d + o[0], f, d + o[0], n);
    } else {
      for (int64_t j = 0; j < n; ++j) d[o[0] + j * sd] *= f;
    }
  });
  return *this;
}

// ------------------------------------------------------------------------------- factories

static Tensor allocate(const Shape& shape, DType dtype, bool zero_fill) {
  for (int64_t s : shape) KD_CHECK(s >= 0, "negative size in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>((size_t)shape_numel(shape) * dtype_size(dtype), zero_fill);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor empty(const Shape& shape, DType dtype) {
  Tensor t = allocate(shape, dtype, false);
  if (poison_empty()) {
    if (dtype == DType::f32) std::fill_n(t.data<float>(), t.numel(), std::numeric_limits<float>::quiet_NaN());
    else std::memset(t.raw_data(), 0xAB, t.numel() * dtype_size(dtype));
  }
  return t;
}

Tensor zeros(const Shape& shape, DType dtype) { return allocate(shape, dtype, true); }
Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }
Tensor full(const Shape& shape, double value, DType dtype) {
  if (value == 0.0) return zeros(shape, dtype);
  Tensor t = allocate(shape, dtype, false);
  t.fill_(value);
  return t;
}
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.dtype()); }
Tensor scalar_tensor(double value, DType dtype) { return full({}, value, dtype); }

Tensor arange(int64_t start, int64_t end, int64_t step, DType dtype) {
  KD_CHECK(step != 0, "arange: step must not be 0");
  int64_t n = std::max<int64_t>(0, (end - start + step + (step > 0 ? -1 : 1)) / step);
  Tensor t = empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) detail::store_from_double(dtype, t.raw_data(), i, (double)(start + i * step));
  return t;
}

template <typename T>
static Tensor from_values(const std::vector<T>& values, const Shape& shape) {
  KD_CHECK((int64_t)values.size() == shape_numel(shape), "from_vector: {} values for shape {} ({} elements)",
           values.size(), shape_str(shape), shape_numel(shape));
  Tensor t = empty(shape, dtype_of<T>());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}
Tensor from_vector(const std::vector<float>& v, const Shape& s) { return from_values(v, s); }
Tensor from_vector(const std::vector<int64_t>& v, const Shape& s) { return from_values(v, s); }
Tensor from_vector(const std::vector<uint8_t>& v, const Shape& s) { return from_values(v, s); }

Tensor rand(const Shape& shape, Generator& gen) {
  Tensor t = empty(shape);
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = gen.uniform();
  return t;
}

Tensor randn(const Shape& shape, Generator& gen) {
  Tensor t = empty(shape);
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = (float)gen.normal();
  return t;
}

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen) {
  Tensor t = empty(shape);
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = (float)(lo + (hi - lo) * gen.uniform_double());
  return t;
}

Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen) {
  Tensor t = empty(shape, DType::i64);
  int64_t* d = t.data<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = gen.randint(lo, hi);
  return t;
}

std::vector<float> to_float_vector(const Tensor& t) {
  std::vector<float> v(t.numel());
  const void* base = t.raw_data();
  detail::for_each_offset<1>(t.shape(), {t.strides()}, [&](int64_t i, const std::array<int64_t, 1>& o) {
    v[i] = (float)detail::load_as_double(t, base, o[0]);
  });
  return v;
}

std::vector<int64_t> to_int_vector(const Tensor& t) {
  std::vector<int64_t> v(t.numel());
  const void* base = t.raw_data();
  detail::for_each_offset<1>(t.shape(), {t.strides()}, [&](int64_t i, const std::array<int64_t, 1>& o) {
    v[i] = (int64_t)detail::load_as_double(t, base, o[0]);
  });
  return v;
}

// ------------------------------------------------------------------------------- printing

static std::string format_value(const Tensor& t, double v) {
  if (t.dtype() != DType::f32) return fmt::format("{}", (int64_t)v);
  return fmt::format("{:.4f}", v);
}

// Recursive NumPy-like printer: at most 2*edge items per dim, "..." between.
static void print_rec(const Tensor& t, std::vector<int64_t>& idx, int64_t d, int64_t edge, std::string& out,
                      int indent) {
  const int64_t n = t.shape()[d];
  const bool elide = n > 2 * edge;
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == edge) {
      out += (d + 1 == t.dim()) ? "..., " : fmt::format("...,\n{:{}}", "", indent + 1);
      i = n - edge;
    }
    idx[d] = i;
    if (d + 1 == t.dim()) {
      out += format_value(t, t.at(idx));
    } else {
      print_rec(t, idx, d + 1, edge, out, indent + 1);
    }
    if (i + 1 < n) out += (d + 1 == t.dim()) ? ", " : fmt::format(",\n{:{}}", "", indent + 1);
  }
  out += ']';
}

std::string to_string(const Tensor& t, int64_t edge_items) {
  if (!t.defined()) return "Tensor(undefined)";
  std::string body;
  if (t.dim() == 0) {
    body = format_value(t, t.item());
  } else if (t.numel() == 0) {
    body = "[]";
  } else {
    std::vector<int64_t> idx(t.dim(), 0);
    print_rec(t, idx, 0, edge_items, body, 7);
  }
  std::string extra = t.requires_grad() ? (t.grad_fn() ? ", grad_fn=" + t.impl()->grad_fn->op : ", requires_grad") : "";
  return fmt::format("tensor({}, shape={}, dtype={}{})", body, shape_str(t.shape()), dtype_name(t.dtype()), extra);
}

}  // namespace kd
