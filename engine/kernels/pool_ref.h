// pool_ref.h: scalar reference kernels for 2-D pooling, one (H, W) plane at a time.
//
// Window (oh, ow) of max/avg pooling covers rows oh*sh - ph ... oh*sh - ph + kh - 1 and the
// same for columns; positions in the padding are skipped (max) or counted as zeros (avg with
// count_include_pad). Adaptive average pooling uses PyTorch's windows
//   start = floor(i * H / OH),  end = ceil((i + 1) * H / OH).
// The backward kernels accumulate (+=) into dx.
#pragma once
#include <cstdint>

namespace kd::kernels {

struct PoolGeometry {
  int64_t H, W;    // input plane
  int64_t OH, OW;  // output plane
  int64_t kh, kw;  // window
  int64_t sh, sw;  // stride
  int64_t ph, pw;  // padding on each side
};

// y (OH, OW) = max over each window of x (H, W); argmax holds the flat index h*W + w of the
// first maximum (a NaN wins, as PyTorch).
void max_pool2d_plane(const float* x, const PoolGeometry& g, float* y, int64_t* argmax);
// dx[argmax[o]] += dy[o]
void max_pool2d_backward_plane(const float* dy, const int64_t* argmax, int64_t n_out, float* dx);

// y = mean over each window: divided by the window area clipped to input + padding when
// count_include_pad, else by the number of input pixels in it.
void avg_pool2d_plane(const float* x, const PoolGeometry& g, bool count_include_pad, float* y);
void avg_pool2d_backward_plane(const float* dy, const PoolGeometry& g, bool count_include_pad, float* dx);

void adaptive_avg_pool2d_plane(const float* x, int64_t H, int64_t W, int64_t OH, int64_t OW, float* y);
void adaptive_avg_pool2d_backward_plane(const float* dy, int64_t H, int64_t W, int64_t OH, int64_t OW, float* dx);

}  // namespace kd::kernels
