// trace.cpp: see trace.h.
#include "engine/trace.h"

namespace kd {

namespace {
thread_local Trace* g_trace = nullptr;
}

Trace* active_trace() { return g_trace; }

TraceGuard::TraceGuard(Trace& trace) : prev_(g_trace) { g_trace = &trace; }
TraceGuard::~TraceGuard() { g_trace = prev_; }
TracePause::TracePause() : prev_(g_trace) { g_trace = nullptr; }
TracePause::~TracePause() { g_trace = prev_; }

const Tensor& trace_op(const char* op, std::vector<Tensor> inputs, std::map<std::string, std::vector<double>> attrs,
                       const Tensor& out) {
  if (!g_trace) return out;
  std::vector<bool> rg;
  for (const Tensor& t : inputs) rg.push_back(t.defined() && t.requires_grad());
  g_trace->ops.push_back({op, std::move(inputs), std::move(rg), std::move(attrs), out});
  return out;
}

}  // namespace kd
