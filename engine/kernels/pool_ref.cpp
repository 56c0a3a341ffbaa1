#include "engine/kernels/pool_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kd::kernels {

void max_pool2d_plane(const float* x, const PoolGeometry& g, float* y, int64_t* argmax) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.ph, 0), h1 = std::min(oh * g.sh - g.ph + g.kh, g.H);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pw, 0), w1 = std::min(ow * g.sw - g.pw + g.kw, g.W);
      float best = -std::numeric_limits<float>::infinity();
      int64_t best_i = h0 * g.W + w0;
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) {
          const float v = x[h * g.W + w];
          if (v > best || std::isnan(v)) {  // as PyTorch: a NaN propagates, and nothing beats it
            best = v;
            best_i = h * g.W + w;
          }
        }
      y[oh * g.OW + ow] = best;
      argmax[oh * g.OW + ow] = best_i;
    }
  }
}

void max_pool2d_backward_plane(const float* dy, const int64_t* argmax, int64_t n_out, float* dx) {
  for (int64_t o = 0; o < n_out; ++o) dx[argmax[o]] += dy[o];
}

// The window of output (oh, ow) clipped to the input, and the divisor PyTorch uses for it.
struct AvgWindow {
  int64_t h0, h1, w0, w1;
  int64_t divisor;
};

static AvgWindow avg_window(const PoolGeometry& g, int64_t oh, int64_t ow, bool count_include_pad) {
  int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int64_t h1 = std::min(h0 + g.kh, g.H + g.ph), w1 = std::min(w0 + g.kw, g.W + g.pw);
  const int64_t padded_area = (h1 - h0) * (w1 - w0);  // the window clipped to input + padding
  h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, g.H), w1 = std::min(w1, g.W);
  const int64_t inside = std::max<int64_t>(h1 - h0, 0) * std::max<int64_t>(w1 - w0, 0);
  return {h0, h1, w0, w1, count_include_pad ? padded_area : inside};
}

void avg_pool2d_plane(const float* x, const PoolGeometry& g, bool count_include_pad, float* y) {
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const AvgWindow win = avg_window(g, oh, ow, count_include_pad);
      double s = 0;
      for (int64_t h = win.h0; h < win.h1; ++h)
        for (int64_t w = win.w0; w < win.w1; ++w) s += x[h * g.W + w];
      y[oh * g.OW + ow] = win.divisor > 0 ? (float)(s / (double)win.divisor) : 0.f;
    }
}

void avg_pool2d_backward_plane(const float* dy, const PoolGeometry& g, bool count_include_pad, float* dx) {
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const AvgWindow win = avg_window(g, oh, ow, count_include_pad);
      if (win.divisor <= 0) continue;
      const float share = dy[oh * g.OW + ow] / (float)win.divisor;
      for (int64_t h = win.h0; h < win.h1; ++h)
        for (int64_t w = win.w0; w < win.w1; ++w) dx[h * g.W + w] += share;
    }
}

static int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }  // floor
static int64_t adaptive_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }  // ceil

void adaptive_avg_pool2d_plane(const float* x, int64_t H, int64_t W, int64_t OH, int64_t OW, float* y) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
      double s = 0;
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) s += x[h * W + w];
      y[oh * OW + ow] = (float)(s / (double)((h1 - h0) * (w1 - w0)));
    }
  }
}

void adaptive_avg_pool2d_backward_plane(const float* dy, int64_t H, int64_t W, int64_t OH, int64_t OW, float* dx) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
      const float share = dy[oh * OW + ow] / (float)((h1 - h0) * (w1 - w0));
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) dx[h * W + w] += share;
    }
  }
}

}  // namespace kd::kernels
