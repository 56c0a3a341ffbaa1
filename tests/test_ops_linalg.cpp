// Linear algebra: the sgemm wrapper against its reference loop, golden values from PyTorch
// (tests/reference/gen_linalg.py), gradcheck, and error messages.
#include <cmath>

#include "engine/kernels/gemm.h"
#include "engine/version.h"
#include "test_util.h"

using namespace kd;
using kdtest::json;

TEST_CASE("OpenBLAS kernel set: the fallback warning names the fix, and only for pre-AVX2 kernels on AVX2 CPUs") {
  CHECK(!kd::blas_core().empty());
  // OpenBLAS 0.3.21 on an Emerald Rapids (family 6 model 207) picks Prescott: the case that cost 13%.
  const std::string w512 = kd::blas_core_warning_for("Prescott", "avx512");
  CHECK(w512.find("'Prescott'") != std::string::npos);
  CHECK(w512.find("OPENBLAS_CORETYPE=SkylakeX") != std::string::npos);
  CHECK(kd::blas_core_warning_for("Nehalem", "avx2").find("OPENBLAS_CORETYPE=Haswell") != std::string::npos);
  CHECK(kd::blas_core_warning_for("core2", "avx2").find("OPENBLAS_CORETYPE=Haswell") != std::string::npos);
  CHECK(kd::blas_core_warning_for("Sandybridge", "avx512").find("SkylakeX") != std::string::npos);
  CHECK(kd::blas_core_warning_for("SkylakeX", "avx512").empty());
  CHECK(kd::blas_core_warning_for("Cooperlake", "avx512").empty());
  CHECK(kd::blas_core_warning_for("Haswell", "avx2").empty());
  CHECK(kd::blas_core_warning_for("Zen", "avx2").empty());
  CHECK(kd::blas_core_warning_for("Prescott", "scalar").empty());  // nothing better to choose
}

TEST_CASE("gemm: OpenBLAS sgemm matches the reference loop on odd sizes, all transposes") {
  Generator gen(3);
  struct Sizes {
    int64_t M, N, K;
  };
  for (Sizes s : {Sizes{1, 1, 1}, Sizes{3, 5, 7}, Sizes{17, 13, 9}, Sizes{33, 1, 65}, Sizes{1, 31, 4}, Sizes{5, 6, 0}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(ta);
        CAPTURE(tb);
        // stored shapes with a padded leading dimension (ld = row length + 3)
        const int64_t a_rows = ta ? s.K : s.M, a_cols = ta ? s.M : s.K;
        const int64_t b_rows = tb ? s.N : s.K, b_cols = tb ? s.K : s.N;
        const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = s.N + 2;
        std::vector<float> A = to_float_vector(randn({std::max<int64_t>(a_rows, 1), lda}, gen));
        std::vector<float> B = to_float_vector(randn({std::max<int64_t>(b_rows, 1), ldb}, gen));
        std::vector<float> C0 = to_float_vector(randn({s.M, ldc}, gen));
        for (auto [alpha, beta] : {std::pair{1.f, 0.f}, std::pair{0.5f, 1.f}, std::pair{-2.f, 0.25f}}) {
          std::vector<float> C = C0, R = C0;
          kernels::sgemm(ta, tb, s.M, s.N, s.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          kernels::sgemm_reference(ta, tb, s.M, s.N, s.K, alpha, A.data(), lda, B.data(), ldb, beta, R.data(), ldc);
          double max_err = 0;
          for (size_t i = 0; i < C.size(); ++i) max_err = std::max(max_err, (double)std::fabs(C[i] - R[i]));
          CHECK(max_err < 1e-4);
        }
      }
    }
  }
}

TEST_CASE("gemm: beta = 0 overwrites C without reading it, and the reference is exact on a known product") {
  // A (2, 3) @ B (3, 2) = [[4, 5], [8, 12]] for A = [[1, 2, 0], [3, 4, 1]], B = [[0, 1], [2, 2], [0, 1]]
  std::vector<float> A{1, 2, 0, 3, 4, 1}, B{0, 1, 2, 2, 0, 1};
  std::vector<float> C(4, NAN), R(4, NAN);
  kernels::sgemm(false, false, 2, 2, 3, 1.f, A.data(), 3, B.data(), 2, 0.f, C.data(), 2);
  kernels::sgemm_reference(false, false, 2, 2, 3, 1.f, A.data(), 3, B.data(), 2, 0.f, R.data(), 2);
  CHECK(C == std::vector<float>{4, 5, 8, 12});
  CHECK(R == std::vector<float>{4, 5, 8, 12});
  CHECK_THROWS_WITH_SUBSTR(kernels::sgemm(false, false, 2, 2, 3, 1.f, A.data(), 2, B.data(), 2, 0.f, C.data(), 2),
                           "lda 2 is smaller than the stored row length 3");
}

TEST_CASE("linalg: golden values and gradients from PyTorch") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"matmul", [](const V& x, const json&) { return V{matmul(x[0], x[1])}; }},
      {"matmul_bt", [](const V& x, const json&) { return V{matmul(x[0], x[1].t())}; }},
      {"matmul_at", [](const V& x, const json&) { return V{matmul(x[0].transpose(-1, -2), x[1])}; }},
      {"bmm", [](const V& x, const json&) { return V{bmm(x[0], x[1])}; }},
      {"linear", [](const V& x, const json&) { return V{linear(x[0], x[1], x[2])}; }},
  };
  CHECK(kdtest::run_golden_file("golden_linalg.json", table) >= 18);
}

TEST_CASE("linalg: any operand layout gives the product of the contiguous copies") {
  Generator gen(5);
  auto same = [](const Tensor& got, const Tensor& want) {
    kdtest::Closeness c = kdtest::allclose(got, want, 1e-5, 1e-5);
    INFO(c.msg);
    CHECK(c.ok);
  };
  Tensor a = randn({4, 6}, gen), b = randn({6, 5}, gen);
  same(matmul(a.slice(1, 0, 6, 2), b.slice(0, 0, 6, 2)), matmul(a.slice(1, 0, 6, 2).clone(), b.slice(0, 0, 6, 2).clone()));
  same(matmul(a.t().t(), b), matmul(a, b));
  Tensor row = randn({1, 6}, gen);
  same(matmul(row.expand({4, 6}), b), matmul(row.expand({4, 6}).clone(), b));  // stride-0 rows: copied for BLAS
  Tensor batch = randn({3, 6, 4}, gen);
  same(matmul(batch.transpose(1, 2), b), matmul(batch.transpose(1, 2).clone(), b));
  // a batch dim broadcast by expand (stride 0) is walked, not copied
  same(matmul(a, b.unsqueeze(0).expand({3, 6, 5})), matmul(a, b.unsqueeze(0).expand({3, 6, 5}).clone()));
  // the empty inner dimension gives zeros, as torch.matmul
  Tensor z = matmul(zeros({3, 0}), zeros({0, 2}));
  CHECK(z.shape() == Shape{3, 2});
  CHECK(to_float_vector(z) == std::vector<float>(6, 0.f));
  // a 1x1 result of two vectors is 0-d
  Tensor dot = matmul(from_vector(std::vector<float>{1, 2, 3}, {3}), from_vector(std::vector<float>{4, 5, 6}, {3}));
  CHECK(dot.dim() == 0);
  CHECK(dot.item() == doctest::Approx(32.0));
}

TEST_CASE("linalg: gradcheck") {
  Generator gen(2);
  auto leaf = [](Tensor t) { return t.requires_grad_(); };
  using V = std::vector<Tensor>;
  auto mm = [](const V& x) { return matmul(x[0], x[1]); };
  SUBCASE("matmul 2-D and 1-D operands") {
    CHECK_GRADCHECK(mm, V{leaf(randn({3, 4}, gen)), leaf(randn({4, 2}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({4}, gen)), leaf(randn({4}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({4}, gen)), leaf(randn({4, 3}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({3, 4}, gen)), leaf(randn({4}, gen))});
  }
  SUBCASE("matmul with broadcast batch dims") {
    CHECK_GRADCHECK(mm, V{leaf(randn({2, 1, 3, 4}, gen)), leaf(randn({3, 4, 2}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({2, 3, 4}, gen)), leaf(randn({4, 2}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({3, 4}, gen)), leaf(randn({2, 4, 2}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({4}, gen)), leaf(randn({2, 4, 3}, gen))});
    CHECK_GRADCHECK(mm, V{leaf(randn({2, 3, 4}, gen)), leaf(randn({4}, gen))});
  }
  SUBCASE("non-contiguous operands") {
    V in{leaf(randn({4, 3}, gen)), leaf(randn({5, 4}, gen))};
    CHECK_GRADCHECK([](const V& x) { return matmul(x[0].t(), x[1].t()); }, in);
    V sl{leaf(randn({3, 6}, gen)), leaf(randn({2, 3, 4}, gen))};
    CHECK_GRADCHECK([](const V& x) { return matmul(x[0].slice(1, 0, 6, 2), x[1]); }, sl);
  }
  SUBCASE("bmm") {
    V in{leaf(randn({2, 3, 4}, gen)), leaf(randn({2, 4, 3}, gen))};
    CHECK_GRADCHECK([](const V& x) { return bmm(x[0], x[1]); }, in);
    CHECK_GRADCHECK([](const V& x) { return bmm(x[0], x[0].transpose(1, 2)); }, V{in[0]});
  }
  SUBCASE("linear") {
    V in{leaf(randn({2, 3, 4}, gen)), leaf(randn({5, 4}, gen)), leaf(randn({5}, gen))};
    CHECK_GRADCHECK([](const V& x) { return linear(x[0], x[1], x[2]); }, in);
    CHECK_GRADCHECK([](const V& x) { return linear(x[0], x[1]); }, V{in[0], in[1]});
    CHECK_GRADCHECK([](const V& x) { return linear(x[0], x[1], x[2]); }, V{leaf(randn({4}, gen)), in[1], in[2]});
    // a transposed input and a weight that is a view of a (in, out) matrix
    V tv{leaf(randn({4, 3}, gen)), leaf(randn({4, 5}, gen)), in[2]};
    CHECK_GRADCHECK([](const V& x) { return linear(x[0].t(), x[1].t(), x[2]); }, tv);
  }
}

TEST_CASE("linalg: errors name the problem") {
  CHECK_THROWS_WITH_SUBSTR(matmul(zeros({2, 3}), zeros({4, 5})), "shapes (2, 3) and (4, 5) cannot be multiplied");
  CHECK_THROWS_WITH_SUBSTR(matmul(zeros({3}), zeros({4})), "cannot be multiplied");
  CHECK_THROWS_WITH_SUBSTR(matmul(zeros({2, 2, 3}), zeros({3, 3, 1})), "do not broadcast");
  CHECK_THROWS_WITH_SUBSTR(matmul(zeros({}), zeros({3})), "at least 1 dim");
  CHECK_THROWS_WITH_SUBSTR(matmul(zeros({2, 3}, DType::i64), zeros({3, 2})), "float32");
  CHECK_THROWS_WITH_SUBSTR(bmm(zeros({2, 3}), zeros({3, 2})), "two 3-D tensors");
  CHECK_THROWS_WITH_SUBSTR(bmm(zeros({2, 3, 4}), zeros({3, 4, 2})), "batch sizes differ: 2 vs 3");
  CHECK_THROWS_WITH_SUBSTR(linear(zeros({2, 3}), zeros({4, 5})), "does not end in in_features = 5");
  CHECK_THROWS_WITH_SUBSTR(linear(zeros({2, 5}), zeros({4, 5}), zeros({3})), "bias must have shape (4)");
  CHECK_THROWS_WITH_SUBSTR(linear(zeros({2, 5}), zeros({5})), "weight must be 2-D");
}
