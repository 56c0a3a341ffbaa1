#include "engine/kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>

#include "engine/error.h"
#include "engine/parallel.h"

namespace kd::kernels {

// The leading dimensions BLAS requires: at least the stored row length, and at least 1.
static void check_gemm_args(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                            int64_t ldc) {
  KD_CHECK(M >= 0 && N >= 0 && K >= 0, "sgemm: negative size M={} N={} K={}", M, N, K);
  const int64_t a_row = trans_a ? M : K, b_row = trans_b ? K : N;
  KD_CHECK(lda >= std::max<int64_t>(1, a_row), "sgemm: lda {} is smaller than the stored row length {} of A{}", lda,
           a_row, trans_a ? " (transposed)" : "");
  KD_CHECK(ldb >= std::max<int64_t>(1, b_row), "sgemm: ldb {} is smaller than the stored row length {} of B{}", ldb,
           b_row, trans_b ? " (transposed)" : "");
  KD_CHECK(ldc >= std::max<int64_t>(1, N), "sgemm: ldc {} is smaller than the row length N={} of C", ldc, N);
  for (int64_t v : {M, N, K, lda, ldb, ldc})
    KD_CHECK(v <= INT_MAX, "sgemm: size {} does not fit the 32-bit integers of this OpenBLAS build; split the product", v);
}

// C = beta * C, treating beta == 0 as "overwrite" (as BLAS does).
static void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  num_threads();  // the first call applies KDLAB_NUM_THREADS to OpenBLAS too (engine/parallel.h)
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.f) {  // nothing to multiply: C = beta C
    scale_c(M, N, beta, C, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)M,
              (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];  // op(A)[i, k]
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];  // op(B)[k, j]
        acc += (double)a * (double)b;
      }
      float& c = C[i * ldc + j];
      c = (float)(alpha * acc) + (beta == 0.f ? 0.f : beta * c);
    }
  }
}

}  // namespace kd::kernels
