// The AVX-512 kernel table: 16 floats per register, masked loads and stores for the tails.
// Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma (CMakeLists.txt); called
// only when CPUID reports these (kernels/cpu_dispatch.cpp).
#include <immintrin.h>

#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/cpu_simd_body.h"

namespace kd::kernels {

namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int64_t W = 16;
  static __mmask16 first(int64_t k) { return (__mmask16)((1u << k) - 1u); }  // lanes 0..k-1, k < 16

  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_tail(const float* p, int64_t k, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first(k), p);
  }
  static void store_tail(float* p, V v, int64_t k) { _mm512_mask_storeu_ps(p, first(k), v); }

  static V set1(float s) { return _mm512_set1_ps(s); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V select_gt0(V y, V g) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), g); }
  static V even(V a, V b) {  // lanes 0, 2, ..., 30 of the 32 floats a, b
    return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  }
  static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(V v) { return _mm512_reduce_max_ps(v); }

  // 8 doubles
  using D = __m512d;
  static D lo(V v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static D hi(V v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
  static V narrow(D l, D h) { return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(l)), _mm512_cvtpd_ps(h), 1); }
  static D set1d(double s) { return _mm512_set1_pd(s); }
  static D addd(D a, D b) { return _mm512_add_pd(a, b); }
  static D subd(D a, D b) { return _mm512_sub_pd(a, b); }
  static D muld(D a, D b) { return _mm512_mul_pd(a, b); }
  static D divd(D a, D b) { return _mm512_div_pd(a, b); }
  static D fmaddd(D a, D b, D c) { return _mm512_fmadd_pd(a, b, c); }
  static D mind(D a, D b) { return _mm512_min_pd(a, b); }
  static D maxd(D a, D b) { return _mm512_max_pd(a, b); }
  static D floord(D v) { return _mm512_roundscale_pd(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static D pow2d(D n) {  // the double with exponent field n + 1023
    return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(_mm512_cvttpd_epi64(n), _mm512_set1_epi64(1023)), 52));
  }
  static D zero_below(D x, double t, D v) { return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, set1d(t), _CMP_NLT_UQ), v); }
  static double reduce_addd(D v) { return _mm512_reduce_add_pd(v); }
};

}  // namespace

const CpuKernels& avx512_kernels() {
  static const CpuKernels table = Simd<Avx512>::table(Isa::avx512, "avx512");
  return table;
}

}  // namespace kd::kernels
