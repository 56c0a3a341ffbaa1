#include "engine/kernels/conv_ref.h"

namespace kd::kernels {

void im2col(const float* x, const ConvGeometry& g, float* col) {
  const int64_t L = g.OH * g.OW;
  for (int64_t c = 0; c < g.C; ++c) {
    const float* xc = x + c * g.H * g.W;  // (H, W)
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        float* row = col + ((c * g.kh + i) * g.kw + j) * L;  // (OH, OW)
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t h = oh * g.sh - g.ph + i * g.dh;
          float* out = row + oh * g.OW;
          if (h < 0 || h >= g.H) {
            for (int64_t ow = 0; ow < g.OW; ++ow) out[ow] = 0.f;
            continue;
          }
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t w = ow * g.sw - g.pw + j * g.dw;
            out[ow] = (w >= 0 && w < g.W) ? xc[h * g.W + w] : 0.f;
          }
        }
      }
    }
  }
}

void col2im(const float* col, const ConvGeometry& g, float* x) {
  const int64_t L = g.OH * g.OW;
  for (int64_t c = 0; c < g.C; ++c) {
    float* xc = x + c * g.H * g.W;  // (H, W)
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        const float* row = col + ((c * g.kh + i) * g.kw + j) * L;  // (OH, OW)
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const int64_t h = oh * g.sh - g.ph + i * g.dh;
          if (h < 0 || h >= g.H) continue;
          const float* in = row + oh * g.OW;
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t w = ow * g.sw - g.pw + j * g.dw;
            if (w >= 0 && w < g.W) xc[h * g.W + w] += in[ow];
          }
        }
      }
    }
  }
}

}  // namespace kd::kernels
