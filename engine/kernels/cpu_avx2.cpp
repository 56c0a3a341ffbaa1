// The AVX2 + FMA kernel table: 8 floats per register, maskload/maskstore for the tails.
// Compiled with -mavx2 -mfma (CMakeLists.txt); called only when CPUID reports both
// (kernels/cpu_dispatch.cpp).
#include <immintrin.h>

#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/cpu_simd_body.h"

namespace kd::kernels {

namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int64_t W = 8;
  // all-ones in lanes 0..k-1 (k < 8): the mask maskload/maskstore take
  static __m256i first(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V load_tail(const float* p, int64_t k, float fill) {
    const __m256i m = first(k);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store_tail(float* p, V v, int64_t k) { _mm256_maskstore_ps(p, first(k), v); }

  static V set1(float s) { return _mm256_set1_ps(s); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V select_gt0(V y, V g) { return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), g); }
  static V even(V a, V b) {  // lanes 0, 2, ..., 14 of the 16 floats a, b
    const V m = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static float reduce_add(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // 8 -> 4
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                         // 4 -> 2
    s = _mm_add_ss(s, _mm_movehdup_ps(s));                                          // 2 -> 1
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(V v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // 4 doubles
  using D = __m256d;
  static D lo(V v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static D hi(V v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  static V narrow(D l, D h) { return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(l)), _mm256_cvtpd_ps(h), 1); }
  static D set1d(double s) { return _mm256_set1_pd(s); }
  static D addd(D a, D b) { return _mm256_add_pd(a, b); }
  static D subd(D a, D b) { return _mm256_sub_pd(a, b); }
  static D muld(D a, D b) { return _mm256_mul_pd(a, b); }
  static D divd(D a, D b) { return _mm256_div_pd(a, b); }
  static D fmaddd(D a, D b, D c) { return _mm256_fmadd_pd(a, b, c); }
  static D mind(D a, D b) { return _mm256_min_pd(a, b); }
  static D maxd(D a, D b) { return _mm256_max_pd(a, b); }
  static D floord(D v) { return _mm256_floor_pd(v); }
  static D pow2d(D n) {  // the double with exponent field n + 1023
    const __m256i e = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvttpd_epi32(n)), _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
  }
  static D zero_below(D x, double t, D v) { return _mm256_and_pd(_mm256_cmp_pd(x, set1d(t), _CMP_NLT_UQ), v); }
  static double reduce_addd(D v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
};

}  // namespace

const CpuKernels& avx2_kernels() {
  static const CpuKernels table = Simd<Avx2>::table(Isa::avx2, "avx2");
  return table;
}

}  // namespace kd::kernels
