// autograd.h: define-by-run reverse-mode automatic differentiation.
//
// Every differentiable op computes its result, then calls record() with the op's name, its
// inputs, the tensors its backward needs (saved), and a backward function. record() attaches
// a Node to the result. backward() walks the nodes in reverse topological order, calls each
// backward function with the gradient of the node's output, and accumulates (+=) gradients
// into the inputs: into .grad for leaves, into the producing node for intermediate tensors.
//
// The one piece of thread-local state in kdlab is the grad mode (NoGradGuard).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

struct Node {
  // Returns d(loss)/d(input_i) for every input (an undefined Tensor where there is none).
  using BackwardFn = std::function<std::vector<Tensor>(const Node& node, const Tensor& grad_out)>;

  std::string op;              // "conv2d", "add", ...
  std::vector<Tensor> inputs;  // may contain undefined tensors (e.g. no bias)
  std::vector<Tensor> saved;   // detached copies of what backward reads
  BackwardFn backward;
  Shape out_shape;
  std::weak_ptr<TensorImpl> output;  // for retain_grad and the graph printer
  bool released = false;       // saved tensors freed by a backward() without retain_graph

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();  // frees the graph behind it iteratively: deep graphs must not overflow the stack
};

// Grad mode. While disabled, ops record nothing.
bool grad_enabled();
void set_grad_enabled(bool on);

// Disables recording in a scope; restores the previous mode on exit.
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Attach a Node to `out` if grad mode is on and any input requires grad; returns `out`.
Tensor record(Tensor out, std::string op, std::vector<Tensor> inputs, std::vector<Tensor> saved,
              Node::BackwardFn backward);

// The engine behind Tensor::backward.
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

// A printable graph: one line per node (op name, output shape, inputs and whether they
// require grad), indented by depth from the root.
std::string graph_string(const Tensor& root);

}  // namespace kd
