// trace.h: a record of the ops one forward pass ran, for exporters (deploy/onnx_export.h).
//
// Inside a TraceGuard, every traceable op appends {its name, its inputs, its attributes, its
// output} to the active Trace, in the order it ran. The ops keep their own names ("conv2d",
// "batch_norm", ...) and attributes; translating them into another format is the exporter's
// job, so the engine knows nothing of ONNX. Which tensors depend on the traced input is read from
// autograd: the exporter traces with gradients on for the input only, so a tensor that requires
// grad came from the input, and one an untraced op made is caught by its autograd node's name.
//
// Traceable ops: conv2d, batch_norm, relu, relu6, add, max_pool2d, avg_pool2d, adaptive_avg_pool2d,
// view (and so reshape and flatten), contiguous, permute (transpose), slice, squeeze, unsqueeze,
// expand, cat, linear, matmul, mul (by a tensor or a number), softmax, layer_norm, gelu: what the
// models of the zoo run. Any other op that runs on the input is refused by the exporter, which
// names it.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

struct TracedOp {
  std::string op;                                    // the op's name, as autograd records it
  std::vector<Tensor> inputs;                        // undefined where the op had none (no bias)
  // Whether each input required grad when the op ran (read then: an op may later give the same
  // tensor a gradient history of its own, as cat does to the buffer it filled).
  std::vector<bool> input_requires_grad;
  std::map<std::string, std::vector<double>> attrs;  // "stride" -> {2, 2}, "eps" -> {1e-5}, ...
  Tensor output;
};

struct Trace {
  std::vector<TracedOp> ops;
};

// The trace being recorded on this thread, or null.
Trace* active_trace();

// Records into `trace` while it lives (not nested).
class TraceGuard {
 public:
  explicit TraceGuard(Trace& trace);
  ~TraceGuard();
  TraceGuard(const TraceGuard&) = delete;
  TraceGuard& operator=(const TraceGuard&) = delete;

 private:
  Trace* prev_;
};

// Records nothing while it lives: a traced op made of other ops (matmul's reshapes) records
// itself only.
class TracePause {
 public:
  TracePause();
  ~TracePause();
  TracePause(const TracePause&) = delete;
  TracePause& operator=(const TracePause&) = delete;

 private:
  Trace* prev_;
};

// Appends one op to the active trace (nothing when none is active); returns `out`.
const Tensor& trace_op(const char* op, std::vector<Tensor> inputs, std::map<std::string, std::vector<double>> attrs,
                       const Tensor& out);

}  // namespace kd
