// gemm.h: the one matrix-multiply entry point of the engine.
//
//   C = alpha * op(A) @ op(B) + beta * C        op(X) = X or X^T
//
// All matrices are row-major. op(A) is (M, K), op(B) is (K, N), C is (M, N). The leading
// dimension is the distance in floats between two consecutive rows of the matrix as it is
// stored: A is stored as (M, K) with lda >= K, or as (K, M) with lda >= M when trans_a.
// With beta == 0, C is written without being read (NaNs in C do not leak through), as BLAS.
//
// sgemm calls OpenBLAS (cblas_sgemm); sgemm_reference is the naive triple loop it is tested
// against. Every matrix product in the engine (matmul, linear, conv) goes through sgemm.
#pragma once
#include <cstdint>

namespace kd::kernels {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same contract, as three plain loops (accumulating in double). Slow; for tests.
void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace kd::kernels
