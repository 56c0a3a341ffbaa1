// onnx_export.cpp: the traced forward pass as an ONNX graph (see onnx_export.h).
#include "deploy/onnx_export.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/trace.h"
#include "engine/version.h"

namespace kd::deploy {

std::string OnnxExportReport::str() const {
  std::string ops;
  for (auto& [k, v] : op_counts) ops += fmt::format("{}{} {}", ops.empty() ? "" : ", ", k, v);
  return fmt::format("{} nodes ({}), {} initializers, {} batch norms folded into convolutions", nodes, ops,
                     initializers, folded_batch_norms);
}

namespace {

using Attrs = std::map<std::string, std::vector<double>>;

// A node of the graph before it is written: an ONNX op type, value names, attributes.
struct GraphNode {
  GraphNode() = default;
  GraphNode(std::string t, std::vector<std::string> in, std::vector<std::string> out = {},
            std::map<std::string, int64_t> i1 = {})
      : type(std::move(t)), inputs(std::move(in)), outputs(std::move(out)), int1(std::move(i1)) {}
  std::string type;
  std::vector<std::string> inputs, outputs;
  std::map<std::string, std::vector<int64_t>> ints;  // INTS attributes
  std::map<std::string, int64_t> int1;               // INT attributes
  std::map<std::string, float> floats;               // FLOAT attributes
  bool removed = false;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(const nn::Module& model) {
    for (auto& [name, t] : model.state_dict()) param_names_[t.impl()] = name;  // weights keep their names
  }

  // The name of a value: a dynamic one (from the input) must have been produced by a traced op;
  // a constant becomes an initializer (once).
  std::string value(const Tensor& t, const std::string& op, bool dynamic) {
    auto it = names_.find(t.impl());
    if (it != names_.end()) return it->second;
    KD_CHECK(!dynamic,
             "cannot export: the forward pass runs '{}' on values computed from the input ({} {}), before {}; the ONNX "
             "exporter does not know that op (deploy/onnx_export.cpp lists the ones it does)",
             t.grad_fn() ? t.grad_fn()->op : std::string("an untraced op"), t.is_leaf() ? "a leaf" : "a result",
             shape_str(t.shape()), op);
    auto p = param_names_.find(t.impl());
    std::string name = p != param_names_.end() ? p->second : fmt::format("const_{}", consts_++);
    add_initializer(name, t);
    names_[t.impl()] = name;
    return name;
  }
  // A new constant initializer (not tied to a tensor of the trace).
  std::string constant(const Tensor& t, const std::string& hint) {
    const std::string name = fmt::format("{}_{}", hint, consts_++);
    add_initializer(name, t);
    return name;
  }
  std::string output(const Tensor& t, const std::string& hint) {
    const std::string name = fmt::format("{}_{}", hint, values_++);
    names_[t.impl()] = name;
    return name;
  }
  void alias(const Tensor& out, const std::string& name) { names_[out.impl()] = name; }
  bool known(const Tensor& t) const { return names_.count(t.impl()) > 0; }

  int64_t batch = 0;  // the traced batch size (the dynamic dimension)
  std::vector<GraphNode> nodes;
  std::vector<std::pair<std::string, Tensor>> initializers;  // f32 or i64
  std::map<std::string, size_t> producer;                    // value name -> node index

  void add(GraphNode n) {
    for (const std::string& o : n.outputs) producer[o] = nodes.size();
    nodes.push_back(std::move(n));
  }
  Tensor initializer(const std::string& name) const {
    for (auto& [n, t] : initializers)
      if (n == name) return t;
    return Tensor();
  }

 private:
  void add_initializer(const std::string& name, const Tensor& t) {
    NoGradGuard ng;
    initializers.push_back({name, t.detach().contiguous().clone()});
  }
  std::unordered_map<const void*, std::string> names_, param_names_;
  int64_t consts_ = 0, values_ = 0;
};

std::vector<int64_t> ints(const std::vector<double>& v) { return std::vector<int64_t>(v.begin(), v.end()); }

// One traced op as ONNX nodes.
void translate(GraphBuilder& g, const TracedOp& t) {
  const std::string& op = t.op;
  auto in = [&](size_t i) { return g.value(t.inputs[i], op, t.input_requires_grad[i]); };
  auto attr = [&](const char* k) { return t.attrs.at(k); };
  GraphNode n;
  if (op == "contiguous") {  // a copy into another memory layout: the same value in ONNX
    g.alias(t.output, in(0));
    return;
  }
  if (op == "conv2d") {
    n.type = "Conv";
    n.inputs = {in(0), in(1)};
    if (t.inputs[2].defined()) n.inputs.push_back(in(2));
    const Shape& w = t.inputs[1].shape();
    const auto pad = ints(attr("padding"));
    n.ints = {{"kernel_shape", {w[2], w[3]}},
              {"strides", ints(attr("stride"))},
              {"pads", {pad[0], pad[1], pad[0], pad[1]}},
              {"dilations", ints(attr("dilation"))}};
    n.int1 = {{"group", (int64_t)attr("groups")[0]}};
  } else if (op == "batch_norm") {
    KD_CHECK(attr("training")[0] == 0, "cannot export a batch norm in training mode; the exporter puts the model in eval mode");
    const int64_t C = t.inputs[0].size(1);
    n.type = "BatchNormalization";
    n.inputs = {in(0), t.inputs[1].defined() ? in(1) : g.constant(ones({C}), "bn_scale"),
                t.inputs[2].defined() ? in(2) : g.constant(zeros({C}), "bn_bias"), in(3), in(4)};
    n.floats = {{"epsilon", (float)attr("eps")[0]}};
  } else if (op == "relu") {
    n.type = "Relu";
    n.inputs = {in(0)};
  } else if (op == "relu6") {
    n.type = "Clip";
    n.inputs = {in(0), g.constant(full({}, 0.0f), "clip_min"), g.constant(full({}, 6.0f), "clip_max")};
  } else if (op == "add") {
    n.type = "Add";
    n.inputs = {in(0), in(1)};
  } else if (op == "max_pool2d" || op == "avg_pool2d") {
    n.type = op == "max_pool2d" ? "MaxPool" : "AveragePool";
    n.inputs = {in(0)};
    const auto pad = ints(attr("padding"));
    n.ints = {{"kernel_shape", ints(attr("kernel"))}, {"strides", ints(attr("stride"))}, {"pads", {pad[0], pad[1], pad[0], pad[1]}}};
    n.int1 = {{"ceil_mode", (int64_t)attr("ceil_mode")[0]}};
    if (op == "avg_pool2d") n.int1["count_include_pad"] = (int64_t)attr("count_include_pad")[0];
  } else if (op == "adaptive_avg_pool2d") {
    const Shape& s = t.inputs[0].shape();
    const auto o = ints(attr("output_size"));
    n.inputs = {in(0)};
    if (o[0] == 1 && o[1] == 1) {
      n.type = "GlobalAveragePool";
    } else {
      KD_CHECK(s[2] % o[0] == 0 && s[3] % o[1] == 0,
               "cannot export adaptive_avg_pool2d from {}x{} to {}x{}: ONNX has no adaptive pool, and the sizes do "
               "not divide", s[2], s[3], o[0], o[1]);
      n.type = "AveragePool";
      n.ints = {{"kernel_shape", {s[2] / o[0], s[3] / o[1]}}, {"strides", {s[2] / o[0], s[3] / o[1]}}};
    }
  } else if (op == "view") {
    const Shape& a = t.inputs[0].shape();
    const Shape& b = t.output.shape();
    KD_CHECK(!a.empty() && !b.empty() && a[0] == b[0] && a[0] == g.batch,
             "cannot export a reshape from {} to {}: it changes the batch dimension, which the ONNX model keeps dynamic",
             shape_str(a), shape_str(b));
    n.inputs = {in(0)};
    if (b.size() == 2 && a.size() >= 2) {  // flatten(1)
      n.type = "Flatten";
      n.int1 = {{"axis", 1}};
    } else {
      n.type = "Reshape";
      Tensor target = empty({(int64_t)b.size()}, DType::i64);
      target.data<int64_t>()[0] = 0;  // 0: the input's batch size
      for (size_t d = 1; d < b.size(); ++d) target.data<int64_t>()[d] = b[d];
      n.inputs.push_back(g.constant(target, "shape"));
    }
  } else if (op == "linear" && t.inputs[0].dim() != 2) {  // (..., in): x W^T (+ b)
    NoGradGuard ng;
    GraphNode mm{"MatMul", {in(0), g.constant(t.inputs[1].t().contiguous(), "weight_t")}};
    if (!t.inputs[2].defined()) {
      mm.outputs = {g.output(t.output, "MatMul")};
      g.add(std::move(mm));
      return;
    }
    mm.outputs = {fmt::format("{}_mm", in(1))};
    n.type = "Add";
    n.inputs = {mm.outputs[0], in(2)};
    g.add(std::move(mm));
  } else if (op == "linear") {
    n.type = "Gemm";
    n.inputs = {in(0), in(1)};
    if (t.inputs[2].defined()) n.inputs.push_back(in(2));
    n.int1 = {{"transB", 1}};
  } else if (op == "matmul") {
    n.type = "MatMul";
    n.inputs = {in(0), in(1)};
  } else if (op == "mul") {
    n.type = "Mul";
    n.inputs = {in(0), in(1)};
  } else if (op == "mul_scalar") {
    n.type = "Mul";
    n.inputs = {in(0), g.constant(full({}, attr("value")[0]), "scale")};
  } else if (op == "softmax") {
    n.type = "Softmax";
    n.inputs = {in(0)};
    n.int1 = {{"axis", (int64_t)attr("dim")[0]}};
  } else if (op == "layer_norm") {
    const int64_t k = (int64_t)attr("dims")[0];
    Shape ns(t.inputs[0].shape().end() - k, t.inputs[0].shape().end());
    n.type = "LayerNormalization";
    n.inputs = {in(0), t.inputs[1].defined() ? in(1) : g.constant(ones(ns), "ln_scale")};
    if (t.inputs[2].defined()) n.inputs.push_back(in(2));
    n.int1 = {{"axis", -k}};
    n.floats = {{"epsilon", (float)attr("eps")[0]}};
  } else if (op == "gelu") {  // opset 17 has no Gelu: x * 0.5 * (1 + erf(x / sqrt(2)))
    KD_CHECK(attr("tanh")[0] == 0, "cannot export gelu's tanh approximation yet (only the exact erf form)");
    const std::string x = in(0), base = fmt::format("gelu{}", g.nodes.size());
    g.add({"Div", {x, g.constant(full({}, std::sqrt(2.0)), "sqrt2")}, {base + "_d"}});
    g.add({"Erf", {base + "_d"}, {base + "_e"}});
    g.add({"Add", {base + "_e", g.constant(full({}, 1.0), "one")}, {base + "_a"}});
    g.add({"Mul", {x, base + "_a"}, {base + "_m"}});
    n.type = "Mul";
    n.inputs = {base + "_m", g.constant(full({}, 0.5), "half")};
  } else if (op == "squeeze" || op == "unsqueeze") {
    n.type = op == "squeeze" ? "Squeeze" : "Unsqueeze";
    Tensor axes = empty({1}, DType::i64);
    axes.data<int64_t>()[0] = (int64_t)attr("dim")[0];
    n.inputs = {in(0), g.constant(axes, "axes")};
  } else if (op == "expand") {  // a value from the input: broadcast to the shape, the batch kept
    const auto shape = ints(attr("shape"));
    Tensor target = empty({(int64_t)shape.size()}, DType::i64);
    for (size_t d = 0; d < shape.size(); ++d) target.data<int64_t>()[d] = d == 0 ? 1 : shape[d];
    n.type = "Expand";
    n.inputs = {in(0), g.constant(target, "expand_shape")};
  } else if (op == "cat") {
    n.type = "Concat";
    for (size_t i = 0; i < t.inputs.size(); ++i) n.inputs.push_back(in(i));
    n.int1 = {{"axis", (int64_t)attr("dim")[0]}};
  } else if (op == "permute") {
    n.type = "Transpose";
    n.inputs = {in(0)};
    n.ints = {{"perm", ints(attr("dims"))}};
  } else if (op == "slice") {
    KD_CHECK(attr("dim")[0] != 0 || t.inputs[0].size(0) != g.batch,
             "cannot export a slice of the batch dimension, which the ONNX model keeps dynamic");
    auto one = [&](const char* k, const char* hint) {
      Tensor v = empty({1}, DType::i64);
      v.data<int64_t>()[0] = (int64_t)attr(k)[0];
      return g.constant(v, hint);
    };
    n.type = "Slice";
    n.inputs = {in(0), one("start", "starts"), one("end", "ends"), one("dim", "axes"), one("step", "steps")};
  } else {
    throw Error(fmt::format("cannot export: the ONNX exporter has no translation for the traced op '{}'", op));
  }
  n.outputs = {g.output(t.output, n.type)};
  g.add(std::move(n));
}

// A constant (1, ...) expanded to the traced batch (the ViT's class token): in ONNX its batch size
// is the input's, read at run time: Expand(c, Concat(Shape(input)[0:1], the other dims)).
void expand_to_batch(GraphBuilder& g, const TracedOp& t) {
  const std::string c = g.value(t.inputs[0], "expand", false), base = fmt::format("expand{}", g.nodes.size());
  const Shape& s = t.output.shape();
  Tensor rest = empty({(int64_t)s.size() - 1}, DType::i64), zero = zeros({1}, DType::i64), one = ones({1}, DType::i64);
  for (size_t d = 1; d < s.size(); ++d) rest.data<int64_t>()[d - 1] = s[d];
  g.add({"Shape", {"input"}, {base + "_shape"}});
  g.add({"Slice", {base + "_shape", g.constant(zero, "starts"), g.constant(one, "ends")}, {base + "_batch"}});
  g.add({"Concat", {base + "_batch", g.constant(rest, "dims")}, {base + "_target"}, {{"axis", 0}}});
  g.add({"Expand", {c, base + "_target"}, {g.output(t.output, "Expand")}});
}

// Folds BatchNormalization into the Conv before it when the conv feeds nothing else.
int64_t fold_batch_norms(GraphBuilder& g) {
  std::map<std::string, int> uses;
  for (const GraphNode& n : g.nodes)
    for (const std::string& i : n.inputs) ++uses[i];
  int64_t folded = 0;
  NoGradGuard ng;
  for (GraphNode& bn : g.nodes) {
    if (bn.removed || bn.type != "BatchNormalization") continue;
    auto p = g.producer.find(bn.inputs[0]);
    if (p == g.producer.end()) continue;
    GraphNode& conv = g.nodes[p->second];
    if (conv.type != "Conv" || uses[conv.outputs[0]] != 1) continue;
    const Tensor gamma = g.initializer(bn.inputs[1]), beta = g.initializer(bn.inputs[2]);
    const Tensor mean = g.initializer(bn.inputs[3]), var = g.initializer(bn.inputs[4]);
    const Tensor w = g.initializer(conv.inputs[1]);
    if (!gamma.defined() || !beta.defined() || !mean.defined() || !var.defined() || !w.defined()) continue;
    const int64_t C = w.size(0);
    const Tensor s = mul(gamma, rsqrt(add(var, (double)bn.floats.at("epsilon"))));  // gamma / sqrt(var + eps)
    const Tensor b = conv.inputs.size() > 2 ? g.initializer(conv.inputs[2]) : zeros({C});
    const Tensor w2 = mul(w, s.reshape({C, 1, 1, 1})).contiguous();  // W' = W s_c
    const Tensor b2 = add(mul(sub(b, mean), s), beta).contiguous();  // b' = (b - mean) s + beta
    // new initializers, so that a weight shared with another node is never changed under it
    conv.inputs[1] = g.constant(w2, conv.inputs[1] + "_folded");
    if (conv.inputs.size() > 2) conv.inputs[2] = g.constant(b2, conv.inputs[2] + "_folded");
    else conv.inputs.push_back(g.constant(b2, "conv_bias_folded"));
    conv.outputs[0] = bn.outputs[0];
    g.producer[bn.outputs[0]] = p->second;
    bn.removed = true;
    ++folded;
  }
  return folded;
}

void set_tensor(onnx::TensorProto* tp, const std::string& name, const Tensor& t) {
  tp->set_name(name);
  for (int64_t d : t.shape()) tp->add_dims(d);
  if (t.dtype() == DType::i64) {
    tp->set_data_type(onnx::TensorProto::INT64);
    tp->set_raw_data(t.data<int64_t>(), sizeof(int64_t) * (size_t)t.numel());
  } else {
    KD_CHECK(t.dtype() == DType::f32, "cannot export the constant {} of type {}", name, dtype_name(t.dtype()));
    tp->set_data_type(onnx::TensorProto::FLOAT);
    tp->set_raw_data(t.data<float>(), sizeof(float) * (size_t)t.numel());
  }
}

void set_value_info(onnx::ValueInfoProto* v, const std::string& name, const Shape& shape) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* sh = tt->mutable_shape();
  sh->add_dim()->set_dim_param("batch");
  for (size_t d = 1; d < shape.size(); ++d) sh->add_dim()->set_dim_value(shape[d]);
}

}  // namespace

std::string onnx_model_bytes(nn::Classifier& model, const Tensor& example, const OnnxExportOptions& opt,
                             OnnxExportReport* report) {
  KD_CHECK(example.dim() == 4 && example.dtype() == DType::f32,
           "export: the example input must be a float32 batch (B, C, H, W), got {}", shape_str(example.shape()));
  // 1. trace the forward pass in eval mode: gradients on, for the input only
  const bool was_training = model.is_training();
  model.eval();
  // Every parameter's requires_grad is off while the graph is built (a tensor that requires grad
  // is one computed from the input), and restored afterwards, also on an error.
  struct Restore {
    nn::Classifier& model;
    bool was_training, grad_mode = grad_enabled();
    std::vector<std::pair<Tensor, bool>> grads;
    ~Restore() {
      for (auto& [p, r] : grads) p.impl()->requires_grad = r;
      set_grad_enabled(grad_mode);
      if (was_training) model.train();
    }
  } restore{model, was_training, grad_enabled(), {}};
  for (const Tensor& p : model.parameters()) {
    restore.grads.push_back({p, p.requires_grad()});
    p.impl()->requires_grad = false;
  }
  Trace trace;
  Tensor logits;
  {
    set_grad_enabled(true);
    Tensor x = example.detach().clone().requires_grad_(true);
    {
      TraceGuard guard(trace);
      logits = model.forward(x).logits;
    }
    // 2. the graph: nodes for the ops on input-derived values, initializers for the rest
    GraphBuilder g(model);
    g.alias(x, "input");
    g.batch = example.size(0);
    for (const TracedOp& t : trace.ops) {
      bool dynamic = false;
      for (bool rg : t.input_requires_grad) dynamic = dynamic || rg;
      if (dynamic) translate(g, t);
      else if (t.op == "expand" && t.output.dim() >= 1 && t.output.size(0) == g.batch && t.inputs[0].dim() == t.output.dim() &&
               t.inputs[0].size(0) == 1 && g.batch > 1)
        expand_to_batch(g, t);  // a constant broadcast to the batch: its size comes from the input
    }
    KD_CHECK(g.known(logits), "cannot export: the logits do not come from the traced ops (the model ran an op the "
                              "trace does not record after its last traced one)");
    const int64_t folded = opt.fold_batch_norm ? fold_batch_norms(g) : 0;
    const std::string out_name = g.value(logits, "the output", true);
    // 3. the protobuf
    onnx::ModelProto m;
    m.set_ir_version(opt.ir_version);
    m.set_producer_name("kdlab");
    m.set_producer_version(version_string());
    auto* opset = m.add_opset_import();
    opset->set_domain("");
    opset->set_version(opt.opset);
    for (auto& [k, v] : opt.metadata) {
      auto* e = m.add_metadata_props();
      e->set_key(k);
      e->set_value(v);
    }
    onnx::GraphProto* graph = m.mutable_graph();
    graph->set_name(opt.metadata.count("model") ? opt.metadata.at("model") : "kdlab_model");
    set_value_info(graph->add_input(), "input", example.shape());
    set_value_info(graph->add_output(), "logits", logits.shape());
    std::map<std::string, bool> used;
    OnnxExportReport rep;
    int64_t k = 0;
    for (const GraphNode& n : g.nodes) {
      if (n.removed) continue;
      onnx::NodeProto* np = graph->add_node();
      np->set_op_type(n.type);
      np->set_name(fmt::format("{}_{}", n.type, k++));
      for (const std::string& i : n.inputs) {
        np->add_input(i == out_name ? "logits" : i);
        used[i] = true;
      }
      for (const std::string& o : n.outputs) np->add_output(o == out_name ? "logits" : o);
      for (auto& [key, v] : n.ints) {
        auto* a = np->add_attribute();
        a->set_name(key);
        a->set_type(onnx::AttributeProto::INTS);
        for (int64_t x : v) a->add_ints(x);
      }
      for (auto& [key, v] : n.int1) {
        auto* a = np->add_attribute();
        a->set_name(key);
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(v);
      }
      for (auto& [key, v] : n.floats) {
        auto* a = np->add_attribute();
        a->set_name(key);
        a->set_type(onnx::AttributeProto::FLOAT);
        a->set_f(v);
      }
      ++rep.nodes;
      ++rep.op_counts[n.type];
    }
    for (auto& [name, t] : g.initializers) {
      if (!used.count(name)) continue;  // folded away
      set_tensor(graph->add_initializer(), name, t);
      ++rep.initializers;
    }
    rep.folded_batch_norms = folded;
    if (report) *report = rep;
    std::string bytes;
    KD_CHECK(m.SerializeToString(&bytes), "export: the ONNX model could not be serialised");
    return bytes;
  }
}

OnnxExportReport export_onnx(nn::Classifier& model, const Tensor& example, const std::string& path,
                             const OnnxExportOptions& options) {
  OnnxExportReport rep;
  const std::string bytes = onnx_model_bytes(model, example, options, &rep);
  write_file_atomic(path, bytes);
  return rep;
}

}  // namespace kd::deploy
