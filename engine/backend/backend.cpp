#include "engine/backend/backend.h"

#include <atomic>
#include <cstdlib>

#include "engine/kernels/cpu_kernels.h"

namespace kd::backend {

namespace {

Backend default_backend() {
  if (const char* v = std::getenv("KDLAB_BACKEND"); v && *v) return parse_backend(v);
  return onednn_available() ? Backend::onednn : Backend::cpu;
}

// -1 until the first active_backend() or set_backend() call, then the Backend's value.
std::atomic<int> g_backend{-1};

}  // namespace

bool onednn_available() {
#ifdef KDLAB_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

const char* backend_name(Backend b) { return b == Backend::onednn ? "onednn" : "cpu"; }

Backend parse_backend(const std::string& name) {
  if (name == "cpu") return Backend::cpu;
  if (name == "onednn") {
    KD_CHECK(onednn_available(),
             "backend 'onednn' asked for (--backend or KDLAB_BACKEND), but this kdlab was built without oneDNN; "
             "install libdnnl-dev ocl-icd-opencl-dev and reconfigure with -DKDLAB_WITH_DNNL=ON, or use the 'cpu' backend");
    return Backend::onednn;
  }
  throw Error(fmt::format("unknown backend '{}' (--backend or KDLAB_BACKEND); known: cpu, onednn", name));
}

Backend active_backend() {
  int b = g_backend.load(std::memory_order_relaxed);
  if (b < 0) {
    b = (int)default_backend();
    g_backend.store(b, std::memory_order_relaxed);
  }
  return (Backend)b;
}

void set_backend(Backend b) {
  KD_CHECK(b != Backend::onednn || onednn_available(),
           "set_backend(onednn): this kdlab was built without oneDNN; use Backend::cpu");
  g_backend.store((int)b, std::memory_order_relaxed);
}

// ------------------------------------------------------------------ the per-op decisions

ConvPath choose_conv_path(const ConvShape& s) {
  const ConvPath path = active_backend() == Backend::onednn ? ConvPath::onednn : ConvPath::im2col;
  if (kernels::verbose())
    kernels::log_path("conv2d", s.x,
                      fmt::format("{} [w {} stride ({}, {}) pad ({}, {}) dil ({}, {}) groups {}]",
                                  path == ConvPath::onednn ? "onednn" : "im2col", shape_str(s.w), s.stride.h,
                                  s.stride.w, s.padding.h, s.padding.w, s.dilation.h, s.dilation.w, s.groups));
  return path;
}

NormPath choose_batch_norm_path(const Shape& x, bool training) {
  // Our tensors are NCHW, and for that layout oneDNN 2.6 has only a generic C++ batch norm
  // (ncsp_bnorm): the engine's own kernels (SIMD, threaded) beat it on every shape measured, by 3 to
  // 10x (docs/PERFORMANCE.md), and even the scalar ones match it. oneDNN's fast batch norms want
  // blocked or channels-last data, which would cost a reorder each way. So the reference path runs
  // batch norm on both backends; onednn::batch_norm stays available (and tested) for layouts where
  // that changes.
  const NormPath path = NormPath::reference;
  if (kernels::verbose())
    kernels::log_path("batch_norm", x,
                      fmt::format("{} [{}]", path == NormPath::onednn ? "onednn" : "reference",
                                  training ? "training" : "eval"));
  return path;
}

PoolPath choose_pool_path(PoolKind kind, const Shape& x, const kernels::PoolGeometry& g, bool ceil_mode,
                          bool count_include_pad) {
  PoolPath path = active_backend() == Backend::onednn ? PoolPath::onednn : PoolPath::reference;
  if (kind == PoolKind::avg && ceil_mode && count_include_pad) {
    // the last ceil_mode window may end past the right padding
    const bool past_h = (g.OH - 1) * g.sh + g.kh > g.H + 2 * g.ph;
    const bool past_w = (g.OW - 1) * g.sw + g.kw > g.W + 2 * g.pw;
    if (past_h || past_w) path = PoolPath::reference;
  }
  if (kernels::verbose())
    kernels::log_path(kind == PoolKind::max ? "max_pool2d" : "avg_pool2d", x,
                      fmt::format("{} [kernel ({}, {}) stride ({}, {}) pad ({}, {}){}]",
                                  path == PoolPath::onednn ? "onednn" : "reference", g.kh, g.kw, g.sh, g.sw, g.ph,
                                  g.pw, ceil_mode ? " ceil_mode" : ""));
  return path;
}

LinearPath choose_linear_path(const Shape& x, const Shape& w) {
  const LinearPath path = active_backend() == Backend::onednn ? LinearPath::onednn : LinearPath::sgemm;
  if (kernels::verbose())
    kernels::log_path("linear", x, fmt::format("{} [w ({}, {})]", path == LinearPath::onednn ? "onednn inner product" : "sgemm",
                                               w[0], w[1]));
  return path;
}

}  // namespace kd::backend
