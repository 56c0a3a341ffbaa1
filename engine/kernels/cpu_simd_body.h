// cpu_simd_body.h: the SIMD kernels, written once against a small vector type S.
//
// Included by kernels/cpu_avx2.cpp (S = 8 floats, AVX2+FMA) and kernels/cpu_avx512.cpp
// (S = 16 floats, AVX-512), each compiled with its own ISA flags. Everything here lives in an
// anonymous namespace, so the two copies never meet at link time.
//
// What S provides (all static):
//   V                       the register type; W floats per register
//   load(p) store(p, v)     W floats, unaligned
//   load_tail(p, k, fill)   the first k < W floats, the other lanes set to fill (no read past p+k)
//   store_tail(p, v, k)     the first k < W lanes (no write past p+k)
//   set1(s) add sub mul fmadd(a, b, c) = a*b + c, max(a, b) = a > b ? a : b, min(a, b) = a < b ? a : b
//   select_gt0(y, g)        y > 0 ? g : 0, per lane
//   even(a, b)              the even-indexed floats of the 2W floats a, b (a stride-2 gather)
//   reduce_add(v) reduce_max(v)
//   D                       a register of W/2 doubles; lo(v) hi(v) widen the halves of v, narrow(lo, hi)
//                           rounds back; set1d addd subd muld divd fmaddd mind maxd floord reduce_addd
//                           as for floats; pow2d(n) = 2^n for whole-number n in [-1022, 1023];
//                           zero_below(x, t, v) = x < t ? 0 : v (a NaN x keeps v)
//
// Every loop has the same shape: full registers, then one masked tail, so any length works
// (0 included) and nothing is read or written outside [p, p + n).
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/kernels/cpu_kernels.h"

namespace kd::kernels {
namespace {

template <class S>
struct Simd {
  using V = typename S::V;
  static constexpr int64_t W = S::W;
  // Sums add floats in vector lanes over blocks of this many elements, then the block sums in
  // double: at most 256 / W terms per lane, so the float error stays near 1e-7 relative.
  static constexpr int64_t kBlock = 256;

  static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
  static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

  // ------------------------------------------------------------ elementwise maps
  // out[i] = op(a[i], b[i])
  template <class Op>
  static void map2(const float* a, const float* b, float* out, int64_t n, Op op) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(out + i, op(S::load(a + i), S::load(b + i)));
    if (i < n) S::store_tail(out + i, op(S::load_tail(a + i, n - i, 0.f), S::load_tail(b + i, n - i, 0.f)), n - i);
  }
  // out[i] = op(a[i])
  template <class Op>
  static void map1(const float* a, float* out, int64_t n, Op op) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(out + i, op(S::load(a + i)));
    if (i < n) S::store_tail(out + i, op(S::load_tail(a + i, n - i, 0.f)), n - i);
  }

  static void add(const float* a, const float* b, float* out, int64_t n) {
    map2(a, b, out, n, [](V x, V y) { return S::add(x, y); });
  }
  static void sub(const float* a, const float* b, float* out, int64_t n) {
    map2(a, b, out, n, [](V x, V y) { return S::sub(x, y); });
  }
  static void mul(const float* a, const float* b, float* out, int64_t n) {
    map2(a, b, out, n, [](V x, V y) { return S::mul(x, y); });
  }
  static void add_scalar(const float* a, float s, float* out, int64_t n) {
    const V vs = S::set1(s);
    map1(a, out, n, [vs](V x) { return S::add(x, vs); });
  }
  static void mul_scalar(const float* a, float s, float* out, int64_t n) {
    const V vs = S::set1(s);
    map1(a, out, n, [vs](V x) { return S::mul(x, vs); });
  }
  static void rsub_scalar(float s, const float* a, float* out, int64_t n) {
    const V vs = S::set1(s);
    map1(a, out, n, [vs](V x) { return S::sub(vs, x); });
  }
  static void axpy(float alpha, const float* x, float* y, int64_t n) {
    const V va = S::set1(alpha);
    map2(x, y, y, n, [va](V xv, V yv) { return S::fmadd(va, xv, yv); });
  }
  static void relu(const float* x, float* out, int64_t n) {
    const V zero = S::set1(0.f);
    // max(x, 0) returns its second operand for a NaN x: 0, as the reference's x > 0 ? x : 0
    map1(x, out, n, [zero](V v) { return S::max(v, zero); });
  }
  static void relu_backward(const float* y, const float* g, float* out, int64_t n) {
    map2(y, g, out, n, [](V yv, V gv) { return S::select_gt0(yv, gv); });
  }

  // ------------------------------------------------------------ row reductions
  // sum over [p, p + n) of f(load), block by block (see kBlock)
  template <class F>
  static double block_sum(int64_t n, F f) {
    double total = 0;
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t m = min64(kBlock, n - start);
      V acc0 = S::set1(0.f), acc1 = S::set1(0.f);
      int64_t i = 0;
      for (; i + 2 * W <= m; i += 2 * W) {
        acc0 = f(acc0, start + i, W);
        acc1 = f(acc1, start + i + W, W);
      }
      for (; i < m; i += W) acc0 = f(acc0, start + i, min64(W, m - i));
      total += (double)S::reduce_add(S::add(acc0, acc1));
    }
    return total;
  }
  // the W (or k < W, zero-filled) floats at p + i
  static V load_n(const float* p, int64_t i, int64_t k) { return k == W ? S::load(p + i) : S::load_tail(p + i, k, 0.f); }

  static double sum(const float* x, int64_t n) {
    return block_sum(n, [x](V acc, int64_t i, int64_t k) { return S::add(acc, load_n(x, i, k)); });
  }
  static double sum_sq_dev(const float* x, float mean, int64_t n) {
    const V vm = S::set1(mean);
    return block_sum(n, [x, mean, vm](V acc, int64_t i, int64_t k) {
      // lanes past the tail read as the mean itself, so they add (mean - mean)^2 = 0
      const V d = S::sub(k == W ? S::load(x + i) : S::load_tail(x + i, k, mean), vm);
      return S::fmadd(d, d, acc);
    });
  }
  static double dot_centered(const float* g, const float* x, float mean, int64_t n) {
    const V vm = S::set1(mean);
    return block_sum(n, [g, x, vm](V acc, int64_t i, int64_t k) {
      // g's tail lanes are 0, so (x - mean) there does not matter
      return S::fmadd(load_n(g, i, k), S::sub(load_n(x, i, k), vm), acc);
    });
  }

  // ------------------------------------------------------------ batch-norm rows
  static void scale_shift(const float* x, float scale, float shift, float* out, int64_t n) {
    const V a = S::set1(scale), b = S::set1(shift);
    map1(x, out, n, [a, b](V v) { return S::fmadd(v, a, b); });
  }
  static void affine2(const float* g, const float* x, float a, float b, float c, float* out, int64_t n) {
    const V va = S::set1(a), vb = S::set1(b), vc = S::set1(c);
    map2(g, x, out, n, [va, vb, vc](V gv, V xv) { return S::fmadd(va, gv, S::fmadd(vb, xv, vc)); });
  }

  // ------------------------------------------------------------ softmax rows
  // Softmax rows run in double lanes, as the reference runs in double: each register of W floats
  // is widened to two halves of doubles (S::D), so the float results round as the reference's
  // do, and softmax and log_softmax of the same logits stay consistent to the last bit (a KL
  // divergence of a distribution with itself is 0 to float precision, not a few 1e-7).
  using D = typename S::D;

  // exp(x) in double: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two, fdlibm's constants),
  // exp(r) by its Taylor polynomial of degree 9 (relative error < 1e-11), times 2^n. Below -110
  // (where the float result is 0 anyway) and for -inf the result is exactly 0; a NaN stays NaN
  // (min/max return their second operand, x, for a NaN, and zero_below keeps NaN lanes).
  static D exp_d(D x) {
    const D xc = S::maxd(S::set1d(-110.0), S::mind(S::set1d(89.0), x));
    const D n = S::floord(S::fmaddd(xc, S::set1d(1.4426950408889634), S::set1d(0.5)));  // round(x / ln2)
    D r = S::fmaddd(n, S::set1d(-6.93147180369123816490e-01), xc);
    r = S::fmaddd(n, S::set1d(-1.90821492927058770002e-10), r);
    D p = S::set1d(1.0 / 362880.0);  // 1/9!
    for (double c : {1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0})
      p = S::fmaddd(p, r, S::set1d(c));  // Horner: ... r/1! + 1
    return S::zero_below(x, -110.0, S::muld(p, S::pow2d(n)));
  }

  // f(i, k, lo, hi) for each register of the row: k floats at x + i (k < W only at the tail,
  // whose other lanes read as `fill`), widened to two halves of doubles.
  template <class F>
  static void each_widened(const float* x, int64_t n, float fill, F f) {
    for (int64_t i = 0; i < n; i += W) {
      const int64_t k = min64(W, n - i);
      const V v = k == W ? S::load(x + i) : S::load_tail(x + i, k, fill);
      f(i, k, S::lo(v), S::hi(v));
    }
  }
  static void store_n(float* out, int64_t i, int64_t k, V v) {
    if (k == W) S::store(out + i, v);
    else S::store_tail(out + i, v, k);
  }

  static float row_max(const float* x, int64_t n) {
    V m = S::set1(-INFINITY);
    int64_t i = 0;
    for (; i + W <= n; i += W) m = S::max(S::load(x + i), m);
    if (i < n) m = S::max(S::load_tail(x + i, n - i, -INFINITY), m);
    const float mx = S::reduce_max(m);
    return (std::isinf(mx) && mx < 0) ? 0.f : mx;  // a row of -inf: exp(-inf - 0) = 0, then 0/0 as PyTorch
  }
  // sum exp(x - mx) in double; the tail's spare lanes read -inf and add exp(-inf) = 0
  static double sum_exp(const float* x, float mx, int64_t n) {
    const D vm = S::set1d(mx);
    D acc = S::set1d(0.0);
    each_widened(x, n, -INFINITY, [&](int64_t, int64_t, D lo, D hi) {
      acc = S::addd(acc, S::addd(exp_d(S::subd(lo, vm)), exp_d(S::subd(hi, vm))));
    });
    return S::reduce_addd(acc);
  }
  // softmax = exp(x - max) / sum exp(x - max)
  static void softmax_row(const float* x, float* out, int64_t n) {
    const float mx = row_max(x, n);
    const D vm = S::set1d(mx), vs = S::set1d(sum_exp(x, mx, n));
    each_widened(x, n, 0.f, [&](int64_t i, int64_t k, D lo, D hi) {
      store_n(out, i, k, S::narrow(S::divd(exp_d(S::subd(lo, vm)), vs), S::divd(exp_d(S::subd(hi, vm)), vs)));
    });
  }
  // log_softmax = x - max - log(sum exp(x - max))
  static void log_softmax_row(const float* x, float* out, int64_t n) {
    const float mx = row_max(x, n);
    const D vm = S::set1d(mx), vl = S::set1d(std::log(sum_exp(x, mx, n)));
    each_widened(x, n, 0.f, [&](int64_t i, int64_t k, D lo, D hi) {
      store_n(out, i, k, S::narrow(S::subd(S::subd(lo, vm), vl), S::subd(S::subd(hi, vm), vl)));
    });
  }

  // ------------------------------------------------------------ GELU
  // In double lanes, like softmax. libm's erfc has no SIMD form, so the tail probability
  // h = Phi(-|x|) = erfc(z) / 2, z = |x| / sqrt 2, comes from the Chebyshev fit of Numerical
  // Recipes' erfcc: erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), P of degree 9, relative error
  // below 1.2e-7 for every z >= 0. Then Phi(x) = h for x < 0 and 1 - h for x >= 0: no cancellation
  // in either tail. The results stay within 2 float ulps of the scalar reference's (measured over
  // [-14, 14]; tests/test_simd.cpp).
  static D abs_d(D x) { return S::maxd(x, S::subd(S::set1d(0.0), x)); }
  static D normal_cdf_d(D x) {
    const D z = S::muld(abs_d(x), S::set1d(0.7071067811865476));
    const D t = S::divd(S::set1d(1.0), S::fmaddd(z, S::set1d(0.5), S::set1d(1.0)));
    D p = S::set1d(0.17087277);
    for (double c : {-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
                     1.00002368, -1.26551223})
      p = S::fmaddd(p, t, S::set1d(c));  // Horner in t
    const D h = S::muld(S::set1d(0.5), S::muld(t, exp_d(S::subd(p, S::muld(z, z)))));  // Phi(-|x|)
    // x >= 0: 1 - h = h + (1 - 2h); x < 0: h (zero_below drops the correction; a NaN x keeps it)
    return S::addd(h, S::zero_below(x, 0.0, S::fmaddd(h, S::set1d(-2.0), S::set1d(1.0))));
  }
  static D gelu_d(D x) { return S::muld(x, normal_cdf_d(x)); }
  static D gelu_grad_d(D x) {  // Phi(x) + x phi(x)
    const D pdf = S::muld(exp_d(S::muld(S::set1d(-0.5), S::muld(x, x))), S::set1d(0.3989422804014327));
    return S::fmaddd(x, pdf, normal_cdf_d(x));
  }
  static void gelu(const float* x, float* out, int64_t n) {
    each_widened(x, n, 0.f, [&](int64_t i, int64_t k, D lo, D hi) { store_n(out, i, k, S::narrow(gelu_d(lo), gelu_d(hi))); });
  }
  static void gelu_backward(const float* x, const float* g, float* out, int64_t n) {
    each_widened(x, n, 0.f, [&](int64_t i, int64_t k, D lo, D hi) {
      const V gv = load_n(g, i, k);
      store_n(out, i, k, S::narrow(S::muld(S::lo(gv), gelu_grad_d(lo)), S::muld(S::hi(gv), gelu_grad_d(hi))));
    });
  }

  // ------------------------------------------------------------ im2col / col2im
  // Short rows (an image row is often 8 to 32 floats): inline register copies beat a call to
  // memcpy / memset.
  static void copy(const float* in, float* out, int64_t n) {
    map1(in, out, n, [](V v) { return v; });
  }
  // out[ow] = in[2 * ow] for ow in [lo, hi): a stride-2 row, W outputs from two registers while
  // the 2W floats read stay below in + 2 * vec_end (the end of the input row), then one by one.
  static void copy_even(const float* in, float* out, int64_t lo, int64_t hi, int64_t vec_end) {
    int64_t ow = lo;
    for (; ow + W <= min64(hi, vec_end); ow += W)
      S::store(out + ow, S::even(S::load(in + 2 * ow), S::load(in + 2 * ow + W)));
    for (; ow < hi; ++ow) out[ow] = in[2 * ow];
  }
  static void zero(float* out, int64_t n) {
    const V z = S::set1(0.f);
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(out + i, z);
    if (i < n) S::store_tail(out + i, z, n - i);
  }

  // The output columns ow whose input column w = ow * stride + base lies in [0, W): [lo, hi).
  static void valid_columns(int64_t base, int64_t width, int64_t stride, int64_t OW, int64_t& lo, int64_t& hi) {
    lo = base >= 0 ? 0 : (-base + stride - 1) / stride;
    hi = width - base <= 0 ? 0 : (width - base + stride - 1) / stride;
    hi = min64(hi, OW);
    lo = min64(lo, hi);
  }

  // A "same" convolution row block (stride 1, output rows as long as input rows): the (OH, W)
  // block of kernel tap (i, j) is x shifted by (dh, dw) = (i*dil_h - pad_h, j*dil_w - pad_w). In
  // flat indices, out[k] = x[k + dh*W + dw] for every output row whose input row exists, except
  // the |dw| columns at the edge that fall in the padding: one long copy, then zero those.
  static void im2col_same_block(const float* xc, const ConvGeometry& g, int64_t dh, int64_t dw, float* out) {
    const int64_t W_ = g.W, HW = g.H * g.W;
    const int64_t oh0 = min64(g.OH, max64(0, -dh)), oh1 = max64(oh0, min64(g.OH, g.H - dh));  // rows inside x
    zero(out, oh0 * W_);
    zero(out + oh1 * W_, (g.OH - oh1) * W_);
    if (oh1 == oh0) return;
    if (dw >= W_ || dw <= -W_) {  // every column in the padding
      zero(out + oh0 * W_, (oh1 - oh0) * W_);
      return;
    }
    // the flat run, clipped to x's plane: the clipped ends are edge columns, zeroed below anyway
    const int64_t k0 = oh0 * W_, k1 = oh1 * W_, shift = dh * W_ + dw;
    const int64_t c0 = max64(k0, -shift), c1 = min64(k1, HW - shift);
    copy(xc + c0 + shift, out + c0, c1 - c0);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      float* r = out + oh * W_;
      for (int64_t ow = 0; ow < -dw; ++ow) r[ow] = 0.f;          // left padding (dw < 0)
      for (int64_t ow = W_ - dw; ow < W_; ++ow) r[ow] = 0.f;     // right padding (dw > 0)
    }
  }

  // As the reference (kernels/conv_ref.cpp), but each output row is split into the zero
  // padding on the left, the columns read from x (one contiguous copy when the stride is 1),
  // and the padding on the right: no bounds test per element. A "same" convolution (stride 1,
  // OW == W: the 3x3 pad-1 layers of every ResNet) copies a whole tap block at once.
  static void im2col(const float* x, const ConvGeometry& g, float* col) {
    const int64_t L = g.OH * g.OW;
    if (g.sh == 1 && g.sw == 1 && g.OW == g.W) {
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j)
            im2col_same_block(x + c * g.H * g.W, g, i * g.dh - g.ph, j * g.dw - g.pw,
                              col + ((c * g.kh + i) * g.kw + j) * L);
      return;
    }
    for (int64_t c = 0; c < g.C; ++c) {
      const float* xc = x + c * g.H * g.W;  // (H, W)
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          float* row = col + ((c * g.kh + i) * g.kw + j) * L;  // (OH, OW)
          const int64_t base = j * g.dw - g.pw;
          int64_t lo, hi;
          valid_columns(base, g.W, g.sw, g.OW, lo, hi);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t h = oh * g.sh - g.ph + i * g.dh;
            float* out = row + oh * g.OW;
            if (h < 0 || h >= g.H) {
              zero(out, g.OW);
              continue;
            }
            const float* in = xc + h * g.W + base;  // in[ow * sw] is column ow
            for (int64_t ow = 0; ow < lo; ++ow) out[ow] = 0.f;
            if (g.sw == 1) {
              copy(in + lo, out + lo, hi - lo);
            } else if (g.sw == 2) {
              copy_even(in, out, lo, hi, (g.W - base) / 2);  // in[2 * ow] is inside the row below this
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * g.sw];
            }
            for (int64_t ow = hi; ow < g.OW; ++ow) out[ow] = 0.f;
          }
        }
      }
    }
  }

  static void col2im(const float* col, const ConvGeometry& g, float* x) {
    const int64_t L = g.OH * g.OW;
    for (int64_t c = 0; c < g.C; ++c) {
      float* xc = x + c * g.H * g.W;  // (H, W)
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          const float* row = col + ((c * g.kh + i) * g.kw + j) * L;  // (OH, OW)
          const int64_t base = j * g.dw - g.pw;
          int64_t lo, hi;
          valid_columns(base, g.W, g.sw, g.OW, lo, hi);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t h = oh * g.sh - g.ph + i * g.dh;
            if (h < 0 || h >= g.H) continue;
            const float* in = row + oh * g.OW;
            float* out = xc + h * g.W + base;  // out[ow * sw] is column ow
            if (g.sw == 1) {
              add(out + lo, in + lo, out + lo, hi - lo);  // x += col, vectorised
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) out[ow * g.sw] += in[ow];
            }
          }
        }
      }
    }
  }

  static CpuKernels table(Isa isa, const char* name) {
    return CpuKernels{isa,          name,        add,          sub,         mul,           add_scalar,  mul_scalar,
                      rsub_scalar,  axpy,        relu,         relu_backward, sum,         sum_sq_dev,  dot_centered,
                      scale_shift,  affine2,     softmax_row,  log_softmax_row, gelu,      gelu_backward,
                      im2col,       col2im};
  }
};

}  // namespace
}  // namespace kd::kernels
