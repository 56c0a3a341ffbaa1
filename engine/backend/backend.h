// backend.h: which implementation runs the heavy neural-network ops, and the one function per
// op that decides it.
//
// Two backends:
//   cpu     the engine's own kernels: im2col + sgemm convolutions, plain loops for batch-norm
//           and pooling (engine/kernels/, engine/ops/). Always built; it is the reference every
//           other path is tested against.
//   onednn  Intel's oneDNN library (engine/backend/onednn.h), when kdlab was built with it
//           (CMake finds libdnnl and defines KDLAB_HAVE_DNNL).
//
// The active backend is process-wide, like the grad mode: set_backend() (the CLI's
// `--backend`), else the environment variable KDLAB_BACKEND=cpu|onednn, else onednn when it
// is built in and cpu otherwise.
//
// Each op asks its choose_*_path() function which path runs for the shape at hand; the rules
// live in these functions and nowhere else. With KDLAB_VERBOSE=1 each of them prints the path
// it chose, once per distinct shape (kernels::log_path), e.g.
//   [kdlab] conv2d (64, 16, 32, 32) w (16, 16, 3, 3) stride 1 pad 1 dil 1 groups 1 -> onednn
#pragma once
#include <string>

#include "engine/kernels/pool_ref.h"
#include "engine/ops.h"

namespace kd::backend {

enum class Backend { cpu, onednn };

bool onednn_available();  // built with oneDNN
const char* backend_name(Backend b);
// "cpu" or "onednn"; any other name, or onednn in a build without it, is an error saying so.
Backend parse_backend(const std::string& name);

Backend active_backend();
void set_backend(Backend b);  // onednn in a build without it is an error

// ------------------------------------------------------------------ the per-op decisions

enum class ConvPath { im2col, onednn };
struct ConvShape {
  Shape x;  // (B, Cin, H, W)
  Shape w;  // (Cout, Cin/groups, kh, kw)
  Int2 stride, padding, dilation;
  int64_t groups;
};
// conv2d: oneDNN for every 2-D convolution when that backend is active, else im2col + sgemm.
ConvPath choose_conv_path(const ConvShape& s);

enum class NormPath { reference, onednn };
// batch_norm on x (B, C, ...): the reference path on both backends (oneDNN's batch norm for
// plain NCHW data is slower than ours; see backend.cpp).
NormPath choose_batch_norm_path(const Shape& x, bool training);

enum class PoolPath { reference, onednn };
enum class PoolKind { max, avg };
// max_pool2d / avg_pool2d on x (B, C, H, W): oneDNN when that backend is active, except an average pool whose
// ceil_mode window runs past the padding while counting the padding (oneDNN would count the
// extra right padding in the divisor, PyTorch does not).
PoolPath choose_pool_path(PoolKind kind, const Shape& x, const kernels::PoolGeometry& g, bool ceil_mode,
                          bool count_include_pad);

enum class LinearPath { sgemm, onednn };
// linear on x (..., in) with weight (out, in): oneDNN's inner product when that backend is
// active, else one OpenBLAS sgemm.
LinearPath choose_linear_path(const Shape& x, const Shape& w);

}  // namespace kd::backend
