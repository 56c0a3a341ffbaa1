#include "engine/autograd.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"

namespace kd {

static thread_local bool g_grad_enabled = true;
bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

Tensor record(Tensor out, std::string op, std::vector<Tensor> inputs, std::vector<Tensor> saved,
              Node::BackwardFn backward) {
  if (!grad_enabled()) return out;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->op = std::move(op);
  node->inputs = std::move(inputs);
  // Saved tensors are detached: a node that saves its own output must not own it (no cycles).
  for (Tensor& s : saved) node->saved.push_back(s.defined() ? s.detach() : Tensor());
  node->backward = std::move(backward);
  node->out_shape = out.shape();
  node->output = out.impl_ptr();
  out.impl()->grad_fn = node;
  out.impl()->requires_grad = true;
  return out;
}

// Dropping the last handle to a deep graph would otherwise free it recursively (tensor -> node
// -> input tensor -> node -> ...), several stack frames per op: a chain of ~100k ops (a loss
// summed over an epoch without detach()) overflows the stack. So a dying node takes the nodes
// that only it keeps alive off its inputs and frees them here in a loop, each with no inputs left.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  auto take_inputs = [&pending](std::vector<Tensor>& tensors) {
    for (Tensor& t : tensors) {
      if (!t.defined() || t.impl_ptr().use_count() != 1) continue;  // someone else holds the tensor
      std::shared_ptr<Node>& fn = t.impl()->grad_fn;
      if (fn && fn.use_count() == 1) pending.push_back(std::move(fn));
    }
    tensors.clear();
  };
  take_inputs(inputs);
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    if (node.use_count() == 1) take_inputs(node->inputs);
  }  // `node` dies here with its inputs already cleared: no recursion
}

// Nodes reachable from `root`, ordered so that every node comes before the nodes it feeds on
// (reverse topological order of the forward pass). Iterative DFS: deep nets have deep graphs.
static std::vector<Node*> topo_order(Node* root) {
  std::vector<Node*> order;  // post-order: inputs before consumers
  std::unordered_set<Node*> seen{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      if (in.defined() && in.grad_fn() && seen.insert(in.grad_fn().get()).second)
        stack.push_back({in.grad_fn().get(), 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  return {order.rbegin(), order.rend()};
}

static void accumulate_leaf(const Tensor& leaf, const Tensor& g) {
  Tensor cur = leaf.grad();
  if (!cur.defined()) {
    leaf.set_grad(g.clone());  // own the memory: g may be a view or an expanded tensor
  } else {
    cur.add_(g);
  }
}

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  KD_CHECK(root.requires_grad(),
           "backward() on a tensor that does not require grad: no input of the computation had "
           "requires_grad set (call requires_grad_() on the parameters first), or it ran under NoGradGuard");
  Tensor grad = gradient;
  if (!grad.defined()) {
    KD_CHECK(root.numel() == 1,
             "backward() without a gradient needs a scalar (one-element) tensor, got shape {}; pass "
             "d(loss)/d(output) of that shape, e.g. t.backward(ones_like(t))",
             shape_str(root.shape()));
    grad = ones_like(root);
  }
  KD_CHECK(grad.shape() == root.shape(), "backward(): gradient of shape {} for a tensor of shape {}",
           shape_str(grad.shape()), shape_str(root.shape()));
  NoGradGuard no_grad;
  if (root.is_leaf()) {
    accumulate_leaf(root, grad);
    return;
  }
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = grad;
  for (Node* node : topo_order(root.grad_fn().get())) {
    auto it = grads.find(node);
    if (it == grads.end()) continue;  // no gradient reached this node
    Tensor g = it->second;
    grads.erase(it);
    KD_CHECK(!node->released,
             "backward through the graph a second time (at op '{}'): its saved tensors were freed by the "
             "first backward(). Call backward(gradient, /*retain_graph=*/true) the first time if you need "
             "to backpropagate twice",
             node->op);
    if (auto out = node->output.lock(); out && out->retains_grad) {
      Tensor o(out);
      if (o.grad().defined()) o.grad().add_(g); else o.set_grad(g.clone());
    }
    std::vector<Tensor> in_grads = node->backward(*node, g);
    KD_CHECK(in_grads.size() == node->inputs.size(), "internal error: backward of '{}' returned {} gradients for {} inputs",
             node->op, in_grads.size(), node->inputs.size());
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Tensor& in = node->inputs[i];
      const Tensor& gi = in_grads[i];
      if (!in.defined() || !in.requires_grad() || !gi.defined()) continue;
      KD_CHECK(gi.shape() == in.shape(), "internal error: backward of '{}' gave a gradient of shape {} for input {} of shape {}",
               node->op, shape_str(gi.shape()), i, shape_str(in.shape()));
      if (in.grad_fn()) {
        Tensor& acc = grads[in.grad_fn().get()];
        acc = acc.defined() ? add(acc, gi) : gi;
      } else {
        accumulate_leaf(in, gi);
      }
    }
    if (!retain_graph) {
      node->saved.clear();
      node->backward = nullptr;
      node->released = true;
    }
  }
}

static std::string describe(const Tensor& t) {
  std::string s = shape_str(t.shape());
  if (!t.name().empty()) s = t.name() + " " + s;
  if (!t.requires_grad()) return s + " (no grad)";
  if (t.is_leaf()) return s + " (leaf, requires grad)";
  return s + " <- " + t.grad_fn()->op;
}

std::string graph_string(const Tensor& root) {
  if (!root.defined() || !root.grad_fn())
    return fmt::format("{} (no graph: a leaf or a tensor without grad)\n", describe(root));
  // Depth-first from the root: each node once (a shared node reached again says "see above"),
  // leaves printed directly under the node that reads them.
  std::string out;
  std::unordered_set<Node*> printed;
  std::vector<std::pair<Node*, int>> stack{{root.grad_fn().get(), 0}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    std::string pad(2 * std::min(depth, 40), ' ');  // capped: a deep chain must not print quadratic whitespace
    if (!printed.insert(node).second) {
      out += fmt::format("{}{} -> {} (see above)\n", pad, node->op, shape_str(node->out_shape));
      continue;
    }
    out += fmt::format("{}{} -> {}{}\n", pad, node->op, shape_str(node->out_shape), node->released ? " [freed]" : "");
    for (const Tensor& in : node->inputs)
      if (in.defined() && !in.grad_fn()) out += fmt::format("{}  {}\n", pad, describe(in));
    for (auto it = node->inputs.rbegin(); it != node->inputs.rend(); ++it)
      if (it->defined() && it->grad_fn()) stack.push_back({it->grad_fn().get(), depth + 1});
  }
  return out;
}

}  // namespace kd
