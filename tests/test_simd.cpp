// SIMD kernels against the scalar reference, on the same inputs (kernels/cpu_kernels.h).
//
// Two levels, for every instruction set this CPU supports (avx2, avx512):
//   1. each kernel of the table against scalar_kernels(), on awkward lengths (0, 1, around the
//      register widths 8 and 16, long), unaligned pointers, with guard values around the output
//      to catch writes past the end;
//   2. each op that uses the kernels (elementwise with broadcasting, relu, batch_norm, conv2d,
//      sum/mean, softmax, pooling, copy_), forward and backward, run once with the scalar table
//      and once with the SIMD one: channels not a multiple of 8 or 16, batch 1, stride 2,
//      groups and depthwise, padding, 1x1 kernels, non-square maps, non-contiguous inputs.
// Plus the threading: the same op with 1 and 2 threads, and twice with 2 (bitwise equal).
//
// Tolerances (documented here and in docs/PERFORMANCE.md):
//   exact          add, sub, mul, the scalar forms, relu and its backward, im2col, col2im, copies
//                  (the same IEEE operation per element, in the same order)
//   1e-6 relative  axpy, scale_shift, affine2 (one fused multiply-add instead of two roundings),
//                  sums (float lanes over blocks of 256 then double, vs double throughout), taken
//                  relative to the sum of the magnitudes of the terms
//   1 ulp          softmax / log_softmax rows (both compute in double; the SIMD exp is a
//                  polynomial with relative error < 1e-11, so the float results round alike)
//   1e-5 relative  whole ops (rounding differences above, carried through a few steps)
#include <cmath>
#include <limits>

#include "engine/backend/backend.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/parallel.h"
#include "test_util.h"

using namespace kd;
using kernels::CpuKernels;
using kernels::Isa;
using V = std::vector<Tensor>;

namespace {

// The SIMD tables this CPU can run.
std::vector<const CpuKernels*> simd_tables() {
  std::vector<const CpuKernels*> t;
  if (kernels::isa_supported(Isa::avx2)) t.push_back(&kernels::avx2_kernels());
  if (kernels::isa_supported(Isa::avx512)) t.push_back(&kernels::avx512_kernels());
  return t;
}

const std::vector<int64_t> kLengths = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 100, 255, 256, 257, 1000, 4099};

// Random floats in [-2, 2) (deterministic).
std::vector<float> random_vector(int64_t n, uint64_t seed) {
  Generator gen(seed);
  std::vector<float> v(n);
  for (float& x : v) x = 4.f * gen.uniform() - 2.f;
  return v;
}

// An output buffer with kGuard sentinel floats on both sides; out() starts one float past a
// 64-byte boundary (unaligned), and guards_intact() says nothing was written outside [0, n).
constexpr int64_t kGuard = 32;
constexpr float kSentinel = -12345.f;
struct Guarded {
  std::vector<float> buf;
  int64_t n;
  explicit Guarded(int64_t n_) : buf(n_ + 2 * kGuard + 1, kSentinel), n(n_) {}
  float* out() { return buf.data() + kGuard + 1; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard + 1; ++i)
      if (buf[i] != kSentinel) return false;
    for (int64_t i = kGuard + 1 + n; i < (int64_t)buf.size(); ++i)
      if (buf[i] != kSentinel) return false;
    return true;
  }
};

// Inputs one float off alignment too.
struct Input {
  std::vector<float> buf;
  Input(int64_t n, uint64_t seed) : buf(n + 1) {
    std::vector<float> v = random_vector(n, seed);
    std::copy(v.begin(), v.end(), buf.begin() + 1);
  }
  const float* p() const { return buf.data() + 1; }
  float* p() { return buf.data() + 1; }
};

// max_i |a_i - b_i| <= atol + rtol |b_i|
bool close_arrays(const float* a, const float* b, int64_t n, double rtol, double atol, std::string* where) {
  for (int64_t i = 0; i < n; ++i) {
    const bool both_nan = std::isnan(a[i]) && std::isnan(b[i]);
    if (both_nan || a[i] == b[i]) continue;
    if (!(std::fabs((double)a[i] - b[i]) <= atol + rtol * std::fabs((double)b[i]))) {
      *where = fmt::format("element {}: {} vs reference {}", i, a[i], b[i]);
      return false;
    }
  }
  return true;
}

// Restores the kernel table, the backend and the thread count a test changes.
struct StateGuard {
  Isa isa = kernels::cpu().isa;
  backend::Backend be = backend::active_backend();
  int threads = num_threads();
  StateGuard() { backend::set_backend(backend::Backend::cpu); }  // the CPU path is what these tests check
  ~StateGuard() {
    kernels::set_isa(isa);
    backend::set_backend(be);
    set_num_threads(threads);
  }
};

}  // namespace

// ===================================================================== kernel level

TEST_CASE("simd kernels: elementwise maps equal the scalar reference exactly, any length") {
  const CpuKernels& ref = kernels::scalar_kernels();
  for (const CpuKernels* k : simd_tables()) {
    for (int64_t n : kLengths) {
      CAPTURE(k->name);
      CAPTURE(n);
      Input a(n, 1 + n), b(n, 1000 + n);
      std::vector<float> want(n);
      std::string where;  // filled by close_arrays, printed on failure
      INFO(where);
      auto check_binary = [&](auto fn_ref, auto fn_simd, const char* name) {
        Guarded got(n);
        fn_ref(a.p(), b.p(), want.data(), n);
        fn_simd(a.p(), b.p(), got.out(), n);
        INFO(name);
        CHECK(close_arrays(got.out(), want.data(), n, 0, 0, &where));
        CHECK(got.guards_intact());
      };
      check_binary(ref.add, k->add, "add");
      check_binary(ref.sub, k->sub, "sub");
      check_binary(ref.mul, k->mul, "mul");
      check_binary(ref.relu_backward, k->relu_backward, "relu_backward");
      auto check_unary = [&](auto run, const char* name) {
        Guarded got(n);
        run(ref, want.data());
        run(*k, got.out());
        INFO(name);
        CHECK(close_arrays(got.out(), want.data(), n, 0, 0, &where));
        CHECK(got.guards_intact());
      };
      check_unary([&](const CpuKernels& t, float* o) { t.add_scalar(a.p(), 0.37f, o, n); }, "add_scalar");
      check_unary([&](const CpuKernels& t, float* o) { t.mul_scalar(a.p(), -1.7f, o, n); }, "mul_scalar");
      check_unary([&](const CpuKernels& t, float* o) { t.rsub_scalar(2.5f, a.p(), o, n); }, "rsub_scalar");
      check_unary([&](const CpuKernels& t, float* o) { t.relu(a.p(), o, n); }, "relu");
    }
  }
}

TEST_CASE("simd kernels: relu keeps the reference's NaN, -0 and infinity handling") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {nan, -0.f, 0.f, inf, -inf, 1e-40f, -1e-40f, 3.f, -3.f};
  const std::vector<float> g = {1.f, 2.f, 3.f, inf, nan, 5.f, 6.f, nan, 7.f};
  const int64_t n = (int64_t)x.size();
  const CpuKernels& ref = kernels::scalar_kernels();
  std::vector<float> want(n), got(n);
  std::string where;  // filled by close_arrays, printed on failure
  INFO(where);
  for (const CpuKernels* k : simd_tables()) {
    CAPTURE(k->name);
    ref.relu(x.data(), want.data(), n);
    k->relu(x.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i) CHECK(std::signbit(got[i]) == std::signbit(want[i]));
    CHECK(close_arrays(got.data(), want.data(), n, 0, 0, &where));
    ref.relu_backward(x.data(), g.data(), want.data(), n);
    k->relu_backward(x.data(), g.data(), got.data(), n);
    CHECK(close_arrays(got.data(), want.data(), n, 0, 0, &where));
  }
}

TEST_CASE("simd kernels: fused multiply-adds within 1e-6 of the reference") {
  const CpuKernels& ref = kernels::scalar_kernels();
  for (const CpuKernels* k : simd_tables()) {
    for (int64_t n : kLengths) {
      CAPTURE(k->name);
      CAPTURE(n);
      Input g(n, 7 + n), x(n, 70 + n), y(n, 700 + n);
      std::string where;  // filled by close_arrays, printed on failure
      INFO(where);
      {  // axpy: y += alpha x, in place
        std::vector<float> want(y.p(), y.p() + n);
        Guarded got(n);
        std::copy(y.p(), y.p() + n, got.out());
        ref.axpy(0.3f, x.p(), want.data(), n);
        k->axpy(0.3f, x.p(), got.out(), n);
        CHECK(close_arrays(got.out(), want.data(), n, 1e-6, 1e-6, &where));
        CHECK(got.guards_intact());
      }
      {
        std::vector<float> want(n);
        Guarded got(n);
        ref.scale_shift(x.p(), 1.3f, -0.4f, want.data(), n);
        k->scale_shift(x.p(), 1.3f, -0.4f, got.out(), n);
        CHECK(close_arrays(got.out(), want.data(), n, 1e-6, 1e-6, &where));
        CHECK(got.guards_intact());
      }
      {
        std::vector<float> want(n);
        Guarded got(n);
        ref.affine2(g.p(), x.p(), 0.9f, -0.2f, 0.05f, want.data(), n);
        k->affine2(g.p(), x.p(), 0.9f, -0.2f, 0.05f, got.out(), n);
        CHECK(close_arrays(got.out(), want.data(), n, 1e-6, 1e-6, &where));
        CHECK(got.guards_intact());
      }
    }
  }
}

TEST_CASE("simd kernels: row sums within 1e-6 of the double reference") {
  const CpuKernels& ref = kernels::scalar_kernels();
  std::vector<int64_t> lengths = kLengths;
  lengths.push_back(100003);  // many blocks of 256
  for (const CpuKernels* k : simd_tables()) {
    for (int64_t n : lengths) {
      CAPTURE(k->name);
      CAPTURE(n);
      Input g(n, 11 + n), x(n, 110 + n);
      for (int64_t i = 0; i < n; ++i) x.p()[i] += 5.f;  // a mean away from 0, as activations have
      const float mean = 5.1f;
      double mag_x = 0, mag_sq = 0, mag_dot = 0;  // sums of the magnitudes of the terms
      for (int64_t i = 0; i < n; ++i) {
        mag_x += std::fabs(x.p()[i]);
        mag_sq += ((double)x.p()[i] - mean) * ((double)x.p()[i] - mean);
        mag_dot += std::fabs((double)g.p()[i] * ((double)x.p()[i] - mean));
      }
      CHECK(std::fabs(k->sum(x.p(), n) - ref.sum(x.p(), n)) <= 1e-6 * mag_x + 1e-12);
      CHECK(std::fabs(k->sum_sq_dev(x.p(), mean, n) - ref.sum_sq_dev(x.p(), mean, n)) <= 1e-6 * mag_sq + 1e-12);
      CHECK(std::fabs(k->dot_centered(g.p(), x.p(), mean, n) - ref.dot_centered(g.p(), x.p(), mean, n)) <=
            1e-6 * mag_dot + 1e-12);
    }
  }
}

TEST_CASE("simd kernels: softmax and log_softmax rows") {
  const CpuKernels& ref = kernels::scalar_kernels();
  const float inf = std::numeric_limits<float>::infinity();
  for (const CpuKernels* k : simd_tables()) {
    std::vector<std::vector<float>> rows;
    for (int64_t n : kLengths)
      if (n > 0) {
        std::vector<float> r = random_vector(n, 31 + n);
        for (float& v : r) v *= 8.f;  // logits spanning e^-16 .. e^16
        rows.push_back(r);
      }
    rows.push_back({1000.f, 999.f, -1000.f});                // large logits: only the max shift keeps them finite
    rows.push_back({-inf, 0.5f, -inf, 1.5f, -inf});          // masked entries
    rows.push_back({-inf, -inf, -inf});                      // all masked: NaN, as PyTorch
    rows.push_back({1.f, std::numeric_limits<float>::quiet_NaN(), 2.f});  // a NaN poisons the row
    rows.push_back(std::vector<float>(19, -100.f));          // ties, far below 0
    for (const auto& r : rows) {
      const int64_t n = (int64_t)r.size();
      CAPTURE(k->name);
      CAPTURE(n);
      std::vector<float> want(n);
      Guarded got(n);
      std::string where;  // filled by close_arrays, printed on failure
      INFO(where);
      ref.softmax_row(r.data(), want.data(), n);
      k->softmax_row(r.data(), got.out(), n);
      CHECK(close_arrays(got.out(), want.data(), n, 2.5e-7, 1e-37, &where));  // within 1 ulp
      CHECK(got.guards_intact());
      ref.log_softmax_row(r.data(), want.data(), n);
      k->log_softmax_row(r.data(), got.out(), n);
      CHECK(close_arrays(got.out(), want.data(), n, 2.5e-7, 1e-7, &where));
      CHECK(got.guards_intact());
    }
  }
}

TEST_CASE("simd kernels: GELU and its backward within 2 float ulps of the reference") {
  // The reference is libm's erfc in double; the SIMD kernels use a degree-9 Chebyshev fit of erfc
  // (relative error < 1.2e-7), so a float result may differ by 1 or 2 ulps (<= 2.4e-7 relative).
  const CpuKernels& ref = kernels::scalar_kernels();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x;
  for (int i = -140000; i <= 140000; i += 7) x.push_back(i * 1e-4f);  // a dense sweep of [-14, 14]
  for (float v : {0.f, -0.f, 1e-30f, -1e-30f, 1e-40f, 3e4f, -3e4f, -9.3f, 40.f, -40.f, inf, -inf, nan}) x.push_back(v);
  const int64_t n = (int64_t)x.size();
  std::vector<float> g = random_vector(n, 77);
  for (const CpuKernels* k : simd_tables()) {
    CAPTURE(k->name);
    std::string where;
    INFO(where);
    std::vector<float> want(n);
    Guarded got(n);
    ref.gelu(x.data(), want.data(), n);
    k->gelu(x.data(), got.out(), n);
    CHECK(close_arrays(got.out(), want.data(), n, 3e-7, 1e-37, &where));
    CHECK(got.guards_intact());
    ref.gelu_backward(x.data(), g.data(), want.data(), n);
    k->gelu_backward(x.data(), g.data(), got.out(), n);
    // the derivative crosses 0 near x = -0.75: there the error is absolute (about 1e-7 Phi(x))
    CHECK(close_arrays(got.out(), want.data(), n, 3e-7, 1e-7, &where));
    CHECK(got.guards_intact());
    for (int64_t m : kLengths) {  // every tail length, inputs and output off alignment
      CAPTURE(m);
      Input a(m, 5 + m);
      Guarded out(m);
      std::vector<float> w(m);
      ref.gelu(a.p(), w.data(), m);
      k->gelu(a.p(), out.out(), m);
      CHECK(close_arrays(out.out(), w.data(), m, 3e-7, 1e-37, &where));
      CHECK(out.guards_intact());
    }
  }
  // The values themselves: gelu(0) = 0, gelu(x) -> x for large x, -> 0 (not NaN) for large -x.
  std::vector<float> v = {0.f, 40.f, -40.f, 1.f};
  std::vector<float> out(4);
  ref.gelu(v.data(), out.data(), 4);
  CHECK(out[0] == 0.f);
  CHECK(out[1] == 40.f);
  CHECK(out[2] == 0.f);  // -40 Phi(-40) underflows to -0
  CHECK(out[3] == doctest::Approx(0.8413447460685429).epsilon(1e-7));  // Phi(1)
}

TEST_CASE("simd kernels: im2col and col2im equal the reference exactly") {
  auto geometry = [](int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t s, int64_t p, int64_t d,
                     int64_t ph = -1) {
    kernels::ConvGeometry g{C, H, W, kh, kw, s, s, ph >= 0 ? ph : p, p, d, d, 0, 0};
    g.OH = (H + 2 * g.ph - d * (kh - 1) - 1) / s + 1;
    g.OW = (W + 2 * g.pw - d * (kw - 1) - 1) / s + 1;
    return g;
  };
  const std::vector<kernels::ConvGeometry> cases = {
      geometry(3, 5, 7, 3, 3, 1, 1, 1),     // non-square map, padding 1
      geometry(5, 32, 32, 3, 3, 1, 1, 1),   // a CIFAR layer, channels not a multiple of 8
      geometry(4, 9, 9, 3, 3, 2, 1, 1),     // stride 2
      geometry(2, 8, 11, 3, 3, 1, 2, 2),    // dilation 2
      geometry(3, 6, 6, 1, 1, 1, 0, 1),     // 1x1
      geometry(2, 7, 5, 3, 1, 1, 1, 1, 1),  // 3x1 kernel, padding only in height
      geometry(1, 4, 4, 3, 3, 1, 3, 1),     // padding wider than the kernel: rows entirely padding
      geometry(2, 17, 19, 5, 5, 3, 2, 1),   // stride 3, 5x5
      geometry(2, 6, 7, 5, 3, 1, 1, 1, 2),  // "same" 5x3 kernel, padding (2, 1)
      geometry(2, 3, 3, 9, 9, 1, 4, 1),     // "same" with taps shifted past the whole row
      geometry(3, 1, 8, 3, 3, 1, 1, 1),     // a single input row
      geometry(3, 6, 40, 3, 3, 2, 1, 1),    // stride 2, rows long enough for the register gather
      geometry(2, 5, 37, 1, 1, 2, 0, 1),    // 1x1 stride 2 (a ResNet shortcut), odd width
      geometry(2, 4, 34, 3, 3, 2, 0, 1),    // stride 2 without padding: the gather ends at the row end
  };
  const CpuKernels& ref = kernels::scalar_kernels();
  for (const CpuKernels* k : simd_tables()) {
    for (const auto& g : cases) {
      CAPTURE(k->name);
      CAPTURE(g.C);
      CAPTURE(g.H);
      CAPTURE(g.W);
      CAPTURE(g.kh);
      CAPTURE(g.sh);
      const int64_t col_n = g.C * g.kh * g.kw * g.OH * g.OW, img_n = g.C * g.H * g.W;
      Input x(img_n, 5), col(col_n, 6);
      std::string where;  // filled by close_arrays, printed on failure
      INFO(where);
      std::vector<float> want(col_n);
      Guarded got(col_n);
      ref.im2col(x.p(), g, want.data());
      k->im2col(x.p(), g, got.out());
      CHECK(close_arrays(got.out(), want.data(), col_n, 0, 0, &where));
      CHECK(got.guards_intact());
      std::vector<float> want_img(x.p(), x.p() + img_n);  // col2im accumulates onto x
      Guarded got_img(img_n);
      std::copy(x.p(), x.p() + img_n, got_img.out());
      ref.col2im(col.p(), g, want_img.data());
      k->col2im(col.p(), g, got_img.out());
      CHECK(close_arrays(got_img.out(), want_img.data(), img_n, 0, 0, &where));
      CHECK(got_img.guards_intact());
    }
  }
}

TEST_CASE("simd kernels: the table in use and KDLAB_ISA") {
  CHECK(std::string(kernels::scalar_kernels().name) == "scalar");
  CHECK(kernels::isa_supported(Isa::scalar));
  CHECK(kernels::parse_isa("avx512") == Isa::avx512);
  CHECK_THROWS_WITH_SUBSTR(kernels::parse_isa("sse4"), "use scalar, avx2 or avx512");
  if (!kernels::isa_supported(Isa::avx512)) {
    StateGuard guard;
    CHECK_THROWS_WITH_SUBSTR(kernels::set_isa(Isa::avx512), "does not support the avx512 instruction set");
  }
  const char* env = std::getenv("KDLAB_ISA");
  if (env && *env) CHECK(std::string(kernels::cpu().name) == env);
}

// ===================================================================== op level

namespace {

// Runs `run` (which builds its inputs from a fixed seed and returns outputs and gradients) with
// the scalar table, then with each SIMD table, and compares everything.
void compare_isas(const std::function<V()>& run, double rtol = 1e-5, double atol = 1e-5) {
  StateGuard guard;
  kernels::set_isa(Isa::scalar);
  const V want = run();
  for (const CpuKernels* k : simd_tables()) {
    kernels::set_isa(k->isa);
    const V got = run();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      CAPTURE(k->name);
      CAPTURE(i);
      REQUIRE(got[i].defined() == want[i].defined());
      if (!want[i].defined()) continue;
      auto c = kdtest::allclose(got[i], want[i], rtol, atol);
      INFO(c.msg);
      CHECK(c.ok);
    }
  }
}

// Forward of f on leaves built from `shapes`, then backward with a random upstream gradient:
// returns {output, grad of each leaf}. transform may make non-contiguous views of the leaves.
V forward_backward(const std::vector<Shape>& shapes, uint64_t seed, const std::function<Tensor(const V&)>& f) {
  Generator gen(seed);
  V leaves;
  for (const Shape& s : shapes) leaves.push_back(randn(s, gen).requires_grad_());
  Tensor y = f(leaves);
  Tensor gy = randn(y.shape(), gen);
  y.backward(gy);
  V out{y.detach()};
  for (const Tensor& l : leaves) out.push_back(l.grad());
  return out;
}

}  // namespace

TEST_CASE("simd ops: elementwise arithmetic with broadcasting and views, forward and backward") {
  auto binary = [](Tensor (*op)(const Tensor&, const Tensor&)) {
    return [op](const V& x) { return op(x[0], x[1]); };
  };
  for (auto op : {static_cast<Tensor (*)(const Tensor&, const Tensor&)>(add),
                  static_cast<Tensor (*)(const Tensor&, const Tensor&)>(sub),
                  static_cast<Tensor (*)(const Tensor&, const Tensor&)>(mul)}) {
    compare_isas([&] { return forward_backward({{3, 5, 7, 9}, {3, 5, 7, 9}}, 1, binary(op)); });  // same shapes
    compare_isas([&] { return forward_backward({{2, 13, 5, 3}, {1, 13, 1, 1}}, 2, binary(op)); });  // per channel
    compare_isas([&] { return forward_backward({{1, 13, 1, 1}, {2, 13, 5, 3}}, 3, binary(op)); });  // value + row
    compare_isas([&] { return forward_backward({{6, 19}, {19}}, 4, binary(op)); });                // per column
    compare_isas([&] { return forward_backward({{1}, {17}}, 5, binary(op)); });
    compare_isas([&] { return forward_backward({{1, 1}, {1, 1}}, 6, binary(op)); });               // batch of 1, 1 element
    compare_isas([&] {  // a transposed (strided) operand
      return forward_backward({{9, 7}, {7, 9}}, 7, [op](const V& x) { return op(x[0], x[1].t()); });
    });
    compare_isas([&] { return forward_backward({{2, 70000}, {2, 70000}}, 8, binary(op)); });  // split over threads
  }
  compare_isas([] { return forward_backward({{5, 33}}, 9, [](const V& x) { return relu(x[0]); }); });
  compare_isas([] { return forward_backward({{4, 3, 5}}, 10, [](const V& x) { return relu(x[0].permute({2, 0, 1})); }); });
  compare_isas([] {
    return forward_backward({{3, 37}}, 11, [](const V& x) { return sub(rsub(2.0, mul(add(x[0], 0.5), 3.0)), 1.0); });
  });
  compare_isas([] { return forward_backward({{3, 37}}, 12, [](const V& x) { return neg(x[0]); }); });
  // relu backward fed a broadcast (expanded) gradient: sum's backward
  compare_isas([] { return forward_backward({{4, 6, 3}}, 13, [](const V& x) { return sum(relu(x[0]), {1}); }); });
}

TEST_CASE("simd ops: batch_norm, training and eval, forward and backward") {
  for (Shape shape : std::vector<Shape>{{1, 3, 5, 7}, {4, 13, 3, 3}, {2, 16, 8, 8}, {7, 5}, {3, 9, 17}}) {
    CAPTURE(shape_str(shape));
    const int64_t C = shape[1];
    for (bool training : {true, false}) {
      if (!training || shape_numel(shape) / C > 1) {
        compare_isas([&] {
          Tensor rm = full({C}, 0.1), rv = full({C}, 1.3);
          V r = forward_backward({shape, {C}, {C}}, 20, [&](const V& x) {
            return batch_norm(x[0], add(x[1], 2.0), x[2], rm, rv, training, 0.1, 1e-5);
          });
          r.push_back(rm);
          r.push_back(rv);
          return r;
        });
      }
    }
  }
  // no affine, and a non-contiguous input
  compare_isas([] {
    return forward_backward({{2, 4, 4, 6}}, 21, [](const V& x) {
      return batch_norm(x[0].permute({0, 3, 1, 2}), Tensor(), Tensor(), Tensor(), Tensor(), true);
    });
  });
}

TEST_CASE("simd ops: conv2d forward and backward on awkward shapes") {
  struct ConvCase {
    Shape x, w;
    Int2 stride, padding, dilation;
    int64_t groups;
    bool bias;
  };
  const std::vector<ConvCase> cases = {
      {{2, 3, 9, 7}, {5, 3, 3, 3}, 1, 1, 1, 1, true},     // channels 3 -> 5, non-square
      {{1, 5, 8, 8}, {6, 5, 3, 3}, 2, 1, 1, 1, false},    // batch 1, stride 2
      {{2, 4, 7, 7}, {6, 2, 3, 3}, 1, 1, 1, 2, true},     // groups 2
      {{2, 6, 6, 5}, {6, 1, 3, 3}, 1, 1, 1, 6, false},    // depthwise
      {{3, 7, 5, 6}, {9, 7, 1, 1}, 1, 0, 1, 1, true},     // 1x1 (no im2col)
      {{2, 3, 10, 9}, {4, 3, 3, 3}, 1, 2, 2, 1, false},   // dilation 2
      {{2, 3, 6, 6}, {4, 3, 1, 1}, 2, 0, 1, 1, false},    // 1x1 stride 2 (im2col)
      {{1, 17, 11, 13}, {19, 17, 5, 3}, {2, 1}, {2, 1}, 1, 1, true},
  };
  for (const ConvCase& c : cases) {
    CAPTURE(shape_str(c.x));
    CAPTURE(shape_str(c.w));
    compare_isas([&] {
      std::vector<Shape> shapes{c.x, c.w};
      if (c.bias) shapes.push_back({c.w[0]});
      return forward_backward(shapes, 30, [&](const V& x) {
        return conv2d(x[0], x[1], c.bias ? x[2] : Tensor(), c.stride, c.padding, c.dilation, c.groups);
      });
    });
  }
  compare_isas([] {  // conv_transpose2d runs the same kernels the other way round
    return forward_backward({{2, 4, 5, 6}, {4, 3, 3, 3}}, 31,
                            [](const V& x) { return conv_transpose2d(x[0], x[1], Tensor(), 2, 1, 1); });
  });
}

TEST_CASE("simd ops: sum, mean, softmax, pooling") {
  using F = std::function<Tensor(const V&)>;
  const std::vector<std::pair<Shape, F>> cases = {
      {{3, 5, 4, 7}, [](const V& x) { return sum(x[0], {0, 2, 3}); }},  // (A, K, R) without a copy
      {{3, 5, 4, 7}, [](const V& x) { return mean(x[0], {1}); }},
      {{6, 19}, [](const V& x) { return sum(x[0], {0}); }},  // column sums
      {{6, 19}, [](const V& x) { return mean(x[0]); }},
      {{5, 7, 3}, [](const V& x) { return sum(x[0].transpose(0, 2), {2}); }},  // permuted copy first
      {{9, 100}, [](const V& x) { return softmax(x[0], 1); }},
      {{9, 17}, [](const V& x) { return log_softmax(x[0], -1); }},
      {{2, 5, 3}, [](const V& x) { return softmax(x[0], 1); }},  // not the last dim: the reference loop
      {{2, 13, 8, 8}, [](const V& x) { return adaptive_avg_pool2d(x[0], 1); }},
      {{2, 3, 7, 9}, [](const V& x) { return adaptive_avg_pool2d(x[0], {3, 2}); }},
      {{2, 3, 9, 8}, [](const V& x) { return max_pool2d(x[0], 3, 2, 1); }},
      {{1, 5, 9, 8}, [](const V& x) { return avg_pool2d(x[0], 2); }},
      {{3, 17, 37}, [](const V& x) { return gelu(x[0]); }},                // GELU and its fused backward
      {{4, 65, 48}, [](const V& x) { return layer_norm(x[0], {48}, Tensor(), Tensor()); }},  // rows over threads
      {{5, 3, 7}, [](const V& x) { return layer_norm(add(x[0], 40.0), {3, 7}, Tensor(), Tensor()); }},  // mean >> std
  };
  uint64_t seed = 40;
  for (const auto& [shape, f] : cases) {
    CAPTURE(shape_str(shape));
    compare_isas([&, s = seed++] { return forward_backward({shape}, s, f); });
  }
}

TEST_CASE("simd ops: layer_norm with weight and bias, forward and backward") {
  for (Shape shape : std::vector<Shape>{{2, 5, 33}, {3, 1, 16}, {7, 5}}) {
    CAPTURE(shape_str(shape));
    const int64_t R = shape.back();
    compare_isas([&] {
      return forward_backward({shape, {R}, {R}}, 50, [R](const V& x) { return layer_norm(x[0], {R}, x[1], x[2]); });
    });
  }
}

TEST_CASE("copy_ fast paths: permutations, broadcasts, dtype conversions") {
  Generator gen(60);
  Tensor x = randn({4, 3, 5, 6}, gen);
  // dst.copy_(src) against element-by-element reads, converted as a C++ cast would
  auto check_copy = [](const Tensor& src, DType dt) {
    Tensor dst = empty(src.shape(), dt);
    dst.copy_(src);
    std::vector<int64_t> idx(src.dim(), 0);
    for (int64_t i = 0; i < src.numel(); ++i) {
      int64_t r = i;
      for (int64_t d = src.dim() - 1; d >= 0; --d) {
        idx[d] = r % src.shape()[d];
        r /= src.shape()[d];
      }
      const double v = src.at(idx);
      const double want = dt == DType::f32 ? (double)(float)v : dt == DType::i64 ? (double)(int64_t)v : (double)(uint8_t)v;
      if (dst.at(idx) != want) return false;
    }
    return true;
  };
  CHECK(check_copy(x, DType::f32));
  CHECK(check_copy(x.permute({0, 2, 3, 1}), DType::f32));           // NCHW -> NHWC order
  CHECK(check_copy(x.permute({1, 0, 2, 3}), DType::f32));           // (C, B, H, W): rows stay contiguous
  CHECK(check_copy(x.transpose(2, 3), DType::f32));                 // a true transpose of the inner dims
  CHECK(check_copy(x.slice(3, 1, 6, 2), DType::f32));               // strided slice
  CHECK(check_copy(x.select(1, 2).unsqueeze(1).expand({4, 7, 5, 6}), DType::f32));  // broadcast
  CHECK(check_copy(mul(x, 10.0).permute({3, 2, 1, 0}), DType::i64));  // float -> int64 (truncation)
  Tensor ints = arange(0, 24).reshape({2, 3, 4});
  CHECK(check_copy(ints.permute({2, 0, 1}), DType::f32));           // int64 -> float
  CHECK(check_copy(ints.transpose(0, 2), DType::u8));
  Tensor big = randn({3, 50000}, gen);                              // split over threads
  CHECK(check_copy(big.t(), DType::f32));
  Tensor f = empty({3, 4});
  f.fill_(2.5);
  CHECK(to_float_vector(f) == std::vector<float>(12, 2.5f));
  Tensor col = zeros({4, 3}).t();  // a non-contiguous fill
  col.fill_(-1.0);
  CHECK(to_float_vector(col) == std::vector<float>(12, -1.f));
}

TEST_CASE("threads: results with 1 and 2 threads agree, and repeat bit for bit") {
  StateGuard guard;
  auto step = [] {
    return forward_backward({{4, 5, 9, 9}, {7, 5, 3, 3}, {7}}, 70, [](const V& x) {
      Tensor y = conv2d(x[0], x[1], Tensor(), 1, 1);
      y = batch_norm(y, add(x[2], 1.0), x[2], Tensor(), Tensor(), true);
      return relu(add(y, mul(y, 0.5)));
    });
  };
  set_num_threads(1);
  const V one = step();
  set_num_threads(2);
  const V two = step(), again = step();
  for (size_t i = 0; i < one.size(); ++i) {
    auto c = kdtest::allclose(two[i], one[i], 1e-5, 1e-5);
    INFO(c.msg);
    CHECK(c.ok);
    CHECK(to_float_vector(two[i]) == to_float_vector(again[i]));
  }
  CHECK(num_threads() == 2);
  CHECK_THROWS_WITH_SUBSTR(set_num_threads(0), "at least 1 thread");
}
