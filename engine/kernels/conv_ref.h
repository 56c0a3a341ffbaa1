// conv_ref.h: im2col / col2im, the scalar reference kernels behind conv2d and conv_transpose2d.
//
// A convolution of one image (and one group) is one matrix product once the input is unrolled:
//   col (C*kh*kw, OH*OW)   row (c, i, j), column (oh, ow) holds the input pixel
//                          x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]   (0 in the padding)
//   y (Cout, OH*OW) = W (Cout, C*kh*kw) @ col
// col2im is the adjoint of im2col: every col entry is added back onto the pixel it was read from,
// which turns dcol = W^T dy into the gradient of the image.
#pragma once
#include <cstdint>

namespace kd::kernels {

// The geometry of one convolution, per image and per group.
struct ConvGeometry {
  int64_t C, H, W;  // input channels (of one group), height, width
  int64_t kh, kw;   // kernel size
  int64_t sh, sw;   // stride
  int64_t ph, pw;   // zero padding on each side
  int64_t dh, dw;   // dilation
  int64_t OH, OW;   // output height and width
};

// x (C, H, W) contiguous -> col (C*kh*kw, OH*OW) contiguous, padding read as 0.
void im2col(const float* x, const ConvGeometry& g, float* col);

// col (C*kh*kw, OH*OW) -> x (C, H, W): x += the entries of col at the pixels im2col read them from
// (entries that fall in the padding are dropped). Accumulates: zero x first for a plain col2im.
void col2im(const float* col, const ConvGeometry& g, float* x);

}  // namespace kd::kernels
