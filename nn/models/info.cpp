#include <unordered_set>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/models/model.h"

namespace kd::nn {

// MACs of one node, from its op name, its inputs' shapes and its output shape.
static int64_t node_macs(const Node& n) {
  const int64_t out = shape_numel(n.out_shape);
  if (n.op == "conv2d") {  // each output element: Cin/groups * kh * kw products
    const Shape& w = n.inputs[1].shape();
    return out * w[1] * w[2] * w[3];
  }
  if (n.op == "conv_transpose2d") {  // each input element scatters into Cout/groups * kh * kw outputs
    const Shape& w = n.inputs[1].shape();
    return n.inputs[0].numel() * w[1] * w[2] * w[3];
  }
  if (n.op == "linear") return out * n.inputs[1].shape()[1];
  if (n.op == "matmul" || n.op == "bmm") {
    const Tensor& a = n.inputs[0];
    return out * a.shape().back();
  }
  return 0;
}

int64_t count_macs(const Tensor& root) {
  if (!root.grad_fn()) return 0;
  int64_t total = 0;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{root.grad_fn().get()};
  seen.insert(stack.back());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    total += node_macs(*n);
    for (const Tensor& in : n->inputs)
      if (in.defined() && in.grad_fn() && seen.insert(in.grad_fn().get()).second) stack.push_back(in.grad_fn().get());
  }
  return total;
}

ModelInfo describe_model(Classifier& model, const Shape& input_shape) {
  KD_CHECK(input_shape.size() == 3, "describe_model: input shape must be (C, H, W), got {}", shape_str(input_shape));
  const bool was_training = model.is_training();
  model.eval();
  // A graph is needed to count MACs, so record it (input requires grad) without touching weights.
  Tensor x = zeros({1, input_shape[0], input_shape[1], input_shape[2]}).requires_grad_();
  ModelOutput out = model.forward(x);
  ModelInfo info;
  info.parameters = model.num_parameters();
  info.macs_per_image = count_macs(out.logits);
  info.logits = out.logits.shape();
  for (auto& f : out.feats) info.feats.push_back(f.shape());
  for (auto& f : out.preact_feats) info.preact_feats.push_back(f.shape());
  if (out.pooled.defined()) info.pooled = out.pooled.shape();
  model.train(was_training);
  return info;
}

}  // namespace kd::nn
