// cpu_kernels.h: the CPU kernels behind the hot ops, in three instruction sets.
//
// Each kernel works on contiguous float arrays through raw pointers, single-threaded (the ops
// split the work over threads, engine/parallel.h). There are three tables of them:
//   scalar   plain C++ loops (kernels/cpu_scalar.cpp): the reference, always available
//   avx2     AVX2 + FMA, 8 floats per register (kernels/cpu_avx2.cpp)
//   avx512   AVX-512, 16 floats per register (kernels/cpu_avx512.cpp)
// The two SIMD tables share one source (kernels/cpu_simd_body.h) written against a small
// vector type; each .cpp compiles it with its own ISA flags (CMakeLists.txt), so the rest of
// the engine is built for the baseline x86-64 and runs on any CPU.
//
// cpu() is the table in use: the best the CPU supports (CPUID), chosen once at the first call,
// or the one named by the environment variable KDLAB_ISA=scalar|avx2|avx512 (asking for an
// ISA the CPU lacks is an error). Tests switch tables with set_isa().
//
// Sums accumulate in double in the scalar kernels; the SIMD kernels add floats in vector lanes
// over blocks of at most 256 elements and the block sums in double, so they agree with the
// reference to about 1e-6 relative (tests/test_simd.cpp documents the tolerances).
#pragma once
#include <cstdint>
#include <string>

#include "engine/kernels/conv_ref.h"
#include "engine/tensor.h"

namespace kd::kernels {

enum class Isa { scalar, avx2, avx512 };

struct CpuKernels {
  Isa isa;
  const char* name;  // "scalar", "avx2", "avx512"

  // ---- elementwise, n elements
  void (*add)(const float* a, const float* b, float* out, int64_t n);  // out = a + b
  void (*sub)(const float* a, const float* b, float* out, int64_t n);  // out = a - b
  void (*mul)(const float* a, const float* b, float* out, int64_t n);  // out = a * b
  void (*add_scalar)(const float* a, float s, float* out, int64_t n);  // out = a + s
  void (*mul_scalar)(const float* a, float s, float* out, int64_t n);  // out = a * s
  void (*rsub_scalar)(float s, const float* a, float* out, int64_t n); // out = s - a
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);      // y += alpha * x
  void (*relu)(const float* x, float* out, int64_t n);                 // out = max(x, 0)
  // out = y > 0 ? g : 0, with y = relu(x) the forward output
  void (*relu_backward)(const float* y, const float* g, float* out, int64_t n);

  // ---- reductions over one contiguous row of n elements
  double (*sum)(const float* x, int64_t n);                          // sum x
  double (*sum_sq_dev)(const float* x, float mean, int64_t n);       // sum (x - mean)^2
  double (*dot_centered)(const float* g, const float* x, float mean, int64_t n);  // sum g (x - mean)

  // ---- batch norm rows (one (b, c) plane of n elements, per-channel constants)
  void (*scale_shift)(const float* x, float scale, float shift, float* out, int64_t n);  // out = x*scale + shift
  // out = a*g + b*x + c  (the batch-norm input gradient, see ops/norm.cpp)
  void (*affine2)(const float* g, const float* x, float a, float b, float c, float* out, int64_t n);

  // ---- softmax over one contiguous row of n elements (n >= 1)
  void (*softmax_row)(const float* x, float* out, int64_t n);
  void (*log_softmax_row)(const float* x, float* out, int64_t n);

  // ---- GELU, the exact (erf) form: Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt 2) / 2
  void (*gelu)(const float* x, float* out, int64_t n);                         // out = x Phi(x)
  // out = g (Phi(x) + x phi(x)), phi the normal density: the input gradient of GELU
  void (*gelu_backward)(const float* x, const float* g, float* out, int64_t n);

  // ---- convolution unrolling (contract: kernels/conv_ref.h)
  void (*im2col)(const float* x, const ConvGeometry& g, float* col);
  void (*col2im)(const float* col, const ConvGeometry& g, float* x);
};

// The three tables; avx2_kernels()/avx512_kernels() exist in every build, but may only be called
// on a CPU that has the ISA (isa_supported).
const CpuKernels& scalar_kernels();
const CpuKernels& avx2_kernels();
const CpuKernels& avx512_kernels();

bool isa_supported(Isa isa);                  // from CPUID
Isa parse_isa(const std::string& name);       // "scalar" | "avx2" | "avx512", else a clear error
const char* isa_name(Isa isa);

// The table in use (see the top of this file).
const CpuKernels& cpu();
// Switch tables (tests, teaching). Errors if the CPU lacks the ISA. Not thread-safe: call it
// between ops, not while one is running.
void set_isa(Isa isa);

// KDLAB_VERBOSE=1: print "[kdlab] op shape -> path" to stderr, once per distinct line, so a
// training run shows which kernel ran for which shape without flooding the terminal.
bool verbose();
void log_path(const char* op, const Shape& shape, const std::string& path);

}  // namespace kd::kernels
