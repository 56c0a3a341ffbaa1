// peft.cpp: LoRA and residual adapters; the equations are in peft.h.
#include "nn/peft.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/init.h"

namespace kd::nn {

// ------------------------------------------------------------------ the spec

std::string PeftSpec::to_string() const {
  std::string s = kind + ":";
  if (kind == "lora") s += fmt::format("r={},alpha={},dropout={},", r, alpha, dropout);
  s += "targets=" + fmt::format("{}", fmt::join(targets, "+"));
  if (!parts.empty()) s += ",parts=" + parts;
  if (!adapter_type.empty()) s += ",type=" + adapter_type;
  if (adapter_type == "houlsby" || adapter_type == "adaptformer") s += fmt::format(",bottleneck={}", bottleneck);
  if (scale >= 0) s += fmt::format(",scale={}", scale);
  return s;
}

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

PeftSpec parse_peft_spec(const std::string& text) {
  const std::string form =
      "give --peft lora:r=8,alpha=16,dropout=0.1,targets=attn.qkv+mlp.* (parts=q+v for a fused qkv) or "
      "adapter:targets=*";
  const size_t colon = text.find(':');
  PeftSpec spec;
  spec.kind = text.substr(0, colon);
  KD_CHECK(spec.kind == "lora" || spec.kind == "adapter", "--peft {}: unknown kind '{}'; {}", text, spec.kind, form);
  bool alpha_given = false;
  if (colon != std::string::npos && colon + 1 < text.size())
    for (const std::string& field : split(text.substr(colon + 1), ',')) {
      const size_t eq = field.find('=');
      KD_CHECK(eq != std::string::npos, "--peft {}: '{}' is not key=value; {}", text, field, form);
      const std::string key = field.substr(0, eq), value = field.substr(eq + 1);
      char* end = nullptr;
      if (key == "targets") {
        spec.targets = split(value, '+');
      } else if (key == "parts" && spec.kind == "lora") {
        spec.parts = value;
      } else if (key == "type" && spec.kind == "adapter") {
        KD_CHECK(value == "residual" || value == "houlsby" || value == "adaptformer",
                 "--peft {}: adapter type '{}'; give residual (CNNs), houlsby or adaptformer (the ViT)", text, value);
        spec.adapter_type = value;
      } else if ((key == "bottleneck" || key == "scale") && spec.kind == "adapter") {
        const double v = std::strtod(value.c_str(), &end);
        KD_CHECK(end && *end == '\0' && !value.empty() && v > 0, "--peft {}: {}={} must be a positive number", text,
                 key, value);
        if (key == "bottleneck") spec.bottleneck = (int64_t)v;
        if (key == "scale") spec.scale = v;
      } else if ((key == "r" || key == "alpha" || key == "dropout") && spec.kind == "lora") {
        const double v = std::strtod(value.c_str(), &end);
        KD_CHECK(end && *end == '\0' && !value.empty(), "--peft {}: {}={} is not a number", text, key, value);
        if (key == "r") spec.r = (int64_t)v;
        if (key == "alpha") spec.alpha = v, alpha_given = true;
        if (key == "dropout") spec.dropout = v;
      } else {
        throw Error(fmt::format("--peft {}: unknown field '{}' for {}; {}", text, key, spec.kind, form));
      }
    }
  if (!alpha_given) spec.alpha = (double)spec.r;
  KD_CHECK(spec.kind != "lora" || spec.r >= 1, "--peft {}: the rank r must be >= 1", text);
  KD_CHECK(spec.dropout >= 0 && spec.dropout < 1, "--peft {}: dropout must be in [0, 1)", text);
  if (spec.targets.empty()) spec.targets = {"*"};
  return spec;
}

// '*' matches any run of characters (dots included); the rest must be equal.
static bool glob(const char* p, const char* s) {
  if (*p == '\0') return *s == '\0';
  if (*p == '*') return glob(p + 1, s) || (*s != '\0' && glob(p, s + 1));
  return *s == *p && glob(p + 1, s + 1);
}

bool peft_name_matches(const std::string& pattern, const std::string& name) {
  if (glob(pattern.c_str(), name.c_str())) return true;
  for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
    if (glob(pattern.c_str(), name.c_str() + dot + 1)) return true;  // a suffix after a dot
  return false;
}

// ------------------------------------------------------------------ LoRA

// A fused qkv with the update on some slices (loralib's MergedLinear): slice p of `parts` has its
// own factors A_p = A[p r .. p r + r] (r, d_in) and B_p = B[p s .. p s + s] (s, r), s = d_out / 3;
// f(A_p, B_p) computes that slice's rows, and the other slices' rows are 0 (along `dim`).
template <class F>
static Tensor per_part(const LoraBranch& l, int64_t slice, int64_t dim, F&& f) {
  std::vector<Tensor> pieces;
  for (int64_t p = 0; p < l.parts_total; ++p) {
    const auto it = std::find(l.parts.begin(), l.parts.end(), p);
    if (it == l.parts.end()) {
      pieces.push_back(Tensor());  // filled with zeros of the computed pieces' shape below
      continue;
    }
    const int64_t k = it - l.parts.begin();
    pieces.push_back(f(l.A.slice(0, k * l.r, (k + 1) * l.r), l.B.slice(0, k * slice, (k + 1) * slice)));
  }
  Shape zero_shape;
  for (const Tensor& t : pieces)
    if (t.defined()) zero_shape = t.shape();
  for (Tensor& t : pieces)
    if (!t.defined()) t = zeros(zero_shape);
  return cat(pieces, dim);
}

Tensor LoraBranch::delta(const Tensor& x, bool training) {
  const Tensor xd = dropout > 0 ? kd::dropout(x, dropout, training, gen) : x;
  if (groups == 0) {  // Linear: (..., d_in) -> (..., d_out) = scale * x A^T B^T
    if (parts.empty()) return mul(linear(linear(xd, A), B), scale);
    const int64_t slice = B.size(0) / (int64_t)parts.size();
    return mul(per_part(*this, slice, -1, [&](const Tensor& Ap, const Tensor& Bp) { return linear(linear(xd, Ap), Bp); }),
               scale);
  }
  // Conv2d: A as a k x k convolution to g*r channels, B as a grouped 1 x 1 convolution
  const Tensor h = conv2d(conv2d(xd, A, Tensor(), stride, padding, dilation, groups), B, Tensor(), 1, 0, 1, groups);
  return mul(h, scale);
}

Tensor LoraBranch::delta_weight() const {
  NoGradGuard ng;
  if (groups == 0 && parts.empty()) return mul(matmul(B, A), scale);  // (d_out, d_in)
  if (groups == 0) {
    const int64_t slice = B.size(0) / (int64_t)parts.size();
    return mul(per_part(*this, slice, 0, [](const Tensor& Ap, const Tensor& Bp) { return matmul(Bp, Ap); }), scale);
  }
  // per group j: dW[o in j] = B[o] (r) . A[j r .. j r + r] (r, C_in/g, kh, kw)
  const int64_t Cout = B.size(0), cout_g = Cout / groups, K = A.size(1) * A.size(2) * A.size(3);
  std::vector<Tensor> per_group;
  for (int64_t j = 0; j < groups; ++j) {
    const Tensor Bj = B.slice(0, j * cout_g, (j + 1) * cout_g).reshape({cout_g, r});  // (Cout/g, r)
    const Tensor Aj = A.slice(0, j * r, (j + 1) * r).reshape({r, K});                // (r, Cin/g kh kw)
    per_group.push_back(matmul(Bj, Aj));                                              // (Cout/g, K)
  }
  return mul(cat(per_group, 0).reshape({Cout, A.size(1), A.size(2), A.size(3)}), scale);
}

void LoraBranch::merge(Tensor& weight) {
  KD_CHECK(!merged_, "LoRA: this layer's update is merged already");
  NoGradGuard ng;
  weight.add_(delta_weight());
  merged_ = true;
}

void LoraBranch::unmerge(Tensor& weight) {
  KD_CHECK(merged_, "LoRA: this layer's update is not merged");
  NoGradGuard ng;
  weight.add_(delta_weight(), -1.0);
  merged_ = false;
}

static void freeze_layer(Tensor& weight, Tensor& bias) {
  weight.requires_grad_(false);
  if (bias.defined()) bias.requires_grad_(false);
}

void add_lora(Linear& layer, const PeftSpec& spec, Generator& gen) {
  KD_CHECK(!layer.branch, "LoRA: this Linear has a PEFT branch already");
  auto l = std::make_shared<LoraBranch>();
  const int64_t d_out = layer.weight.size(0), d_in = layer.weight.size(1);
  int64_t rows = d_out;
  if (!spec.parts.empty()) {  // a fused qkv: slices q, k, v
    l->parts_total = 3;
    for (const std::string& p : split(spec.parts, '+')) {
      KD_CHECK(p == "q" || p == "k" || p == "v", "LoRA parts={}: name slices of a fused qkv, q, k and v (e.g. q+v)",
               spec.parts);
      l->parts.push_back(p == "q" ? 0 : p == "k" ? 1 : 2);
    }
    KD_CHECK(d_out % 3 == 0, "LoRA parts={}: the layer's output ({}) is not a fused q|k|v of three equal slices",
             spec.parts, d_out);
    rows = d_out / 3 * (int64_t)l->parts.size();
  }
  const int64_t pairs = l->parts.empty() ? 1 : (int64_t)l->parts.size();  // a qkv: one pair per slice
  Tensor A = empty({pairs * spec.r, d_in});
  init::pytorch_default_weight_(A, gen);  // kaiming_uniform_(a = sqrt(5)), as loralib
  l->A = layer.register_parameter("lora_A", A);
  l->B = layer.register_parameter("lora_B", zeros({rows, spec.r}));
  l->scale = spec.alpha / (double)spec.r;
  l->dropout = spec.dropout;
  l->gen = Generator(gen.next_u64());
  l->r = spec.r;
  freeze_layer(layer.weight, layer.bias);
  layer.branch = l;
}

void add_lora(Conv2d& layer, const PeftSpec& spec, Generator& gen) {
  KD_CHECK(!layer.branch, "LoRA: this Conv2d has a PEFT branch already");
  KD_CHECK(spec.parts.empty(), "LoRA parts= applies to a fused qkv Linear, not to a convolution");
  auto l = std::make_shared<LoraBranch>();
  const Shape w = layer.weight.shape();  // (Cout, Cin/g, kh, kw)
  const int64_t g = layer.groups;
  Tensor A = empty({g * spec.r, w[1], w[2], w[3]});  // g pairs of factors, one per group
  init::pytorch_default_weight_(A, gen);
  l->A = layer.register_parameter("lora_A", A);
  l->B = layer.register_parameter("lora_B", zeros({w[0], spec.r, 1, 1}));
  l->scale = spec.alpha / (double)spec.r;
  l->dropout = spec.dropout;
  l->gen = Generator(gen.next_u64());
  l->stride = layer.stride;
  l->padding = layer.padding;
  l->dilation = layer.dilation;
  l->groups = g;
  l->r = spec.r;
  freeze_layer(layer.weight, layer.bias);
  layer.branch = l;
}

// ------------------------------------------------------------------ residual adapters

Tensor ConvAdapterBranch::delta(const Tensor& x, bool) { return conv2d(x, W, Tensor(), stride, 0, 1, groups); }

void ConvAdapterBranch::merge(Tensor& weight) {
  KD_CHECK(!merged_, "adapter: this layer's adapter is merged already");
  NoGradGuard ng;
  const int64_t ch = weight.size(2) / 2, cw = weight.size(3) / 2;  // the centre tap
  Tensor centre = weight.slice(2, ch, ch + 1).slice(3, cw, cw + 1);  // a view of (Cout, Cin/g, 1, 1)
  centre.add_(W);
  merged_ = true;
}

void ConvAdapterBranch::unmerge(Tensor& weight) {
  KD_CHECK(merged_, "adapter: this layer's adapter is not merged");
  NoGradGuard ng;
  const int64_t ch = weight.size(2) / 2, cw = weight.size(3) / 2;
  Tensor centre = weight.slice(2, ch, ch + 1).slice(3, cw, cw + 1);
  centre.add_(W, -1.0);
  merged_ = false;
}

// A k x k convolution whose centre tap reads the pixel a 1 x 1 of the same stride reads.
static bool residual_adapter_fits(const Conv2d& c) {
  const int64_t kh = c.weight.size(2), kw = c.weight.size(3);
  return kh % 2 == 1 && kw % 2 == 1 && kh > 1 && c.padding.h == c.dilation.h * (kh - 1) / 2 &&
         c.padding.w == c.dilation.w * (kw - 1) / 2;
}

void add_conv_adapter(Conv2d& layer) {
  KD_CHECK(!layer.branch, "adapter: this Conv2d has a PEFT branch already");
  const Shape w = layer.weight.shape();
  KD_CHECK(w[2] % 2 == 1 && w[3] % 2 == 1 && w[2] > 1,
           "adapter: a residual adapter goes beside a k x k convolution with odd k > 1, not {}x{}", w[2], w[3]);
  KD_CHECK(layer.padding.h == layer.dilation.h * (w[2] - 1) / 2 && layer.padding.w == layer.dilation.w * (w[3] - 1) / 2,
           "adapter: the convolution's padding must keep its centre tap on the pixel a 1x1 reads "
           "(padding = dilation * (k - 1) / 2)");
  auto a = std::make_shared<ConvAdapterBranch>();
  a->W = layer.register_parameter("adapter", zeros({w[0], w[1], 1, 1}));
  a->stride = layer.stride;
  a->groups = layer.groups;
  freeze_layer(layer.weight, layer.bias);
  layer.branch = a;
}

void add_block_adapters(TransformerBlock& block, const PeftSpec& spec, Generator& gen) {
  KD_CHECK(!block.adapter_attn && !block.adapter_mlp && !block.adapter_par, "adapter: this block has adapters already");
  const int64_t D = block.norm1->normalized_shape.back();
  if (spec.adapter_type == "adaptformer") {
    const double s = spec.scale >= 0 ? spec.scale : 0.1;
    block.adapter_par = block.register_module("adapter_par", std::make_shared<BottleneckAdapter>(D, spec.bottleneck, gen, true, s));
  } else {  // houlsby
    const double s = spec.scale >= 0 ? spec.scale : 1.0;
    block.adapter_attn =
        block.register_module("adapter_attn", std::make_shared<BottleneckAdapter>(D, spec.bottleneck, gen, false, s));
    block.adapter_mlp =
        block.register_module("adapter_mlp", std::make_shared<BottleneckAdapter>(D, spec.bottleneck, gen, false, s));
  }
  for (auto& norm : {block.norm1, block.norm2})  // the block's LayerNorms train with the adapters
    for (auto& [n, t] : norm->named_parameters()) t.requires_grad_(true);
}

// ------------------------------------------------------------------ a whole model

std::string PeftReport::to_string() const {
  std::string s = fmt::format("{} layer(s) wrapped; trainable {} of {} parameters ({:.2f}%)", layers.size(), trainable,
                              total, total ? 100.0 * trainable / total : 0.0);
  if (!task_norms.empty()) s += fmt::format("; {} task-specific BatchNorm(s)", task_norms.size());
  return s;
}

PeftReport apply_peft(Module& model, const PeftSpec& spec, uint64_t seed, const std::string& classifier) {
  Generator gen(seed);
  model.freeze();
  PeftReport report;
  std::vector<std::string> eligible;
  const auto modules = model.named_modules();
  for (size_t i = 0; i < modules.size(); ++i) {
    const auto& [name, m] = modules[i];
    auto* lin = dynamic_cast<Linear*>(m);
    auto* conv = dynamic_cast<Conv2d*>(m);
    auto* block = dynamic_cast<TransformerBlock*>(m);
    const std::string& type = spec.adapter_type;
    const bool residual = conv && residual_adapter_fits(*conv) && (type.empty() || type == "residual");
    const bool bottleneck = block && type != "residual";
    const bool fits = spec.kind == "lora" ? (lin || conv) : (residual || bottleneck);
    if (!fits || (!classifier.empty() && name == classifier)) continue;
    eligible.push_back(name);
    bool hit = false;
    for (const std::string& t : spec.targets) hit = hit || peft_name_matches(t, name);
    if (!hit) continue;
    if (spec.kind == "lora" && lin) add_lora(*lin, spec, gen);
    if (spec.kind == "lora" && conv) add_lora(*conv, spec, gen);
    if (spec.kind == "adapter" && bottleneck) {
      add_block_adapters(*block, spec, gen);
      report.task_norms.push_back(name + ".norm1");
      report.task_norms.push_back(name + ".norm2");
    } else if (spec.kind == "adapter") {
      add_conv_adapter(*conv);
      // the BatchNorm right after it (the next module in registration order) becomes the task's own
      if (i + 1 < modules.size())
        if (auto* bn = dynamic_cast<BatchNorm*>(modules[i + 1].second)) {
          for (auto& [n, t] : bn->named_parameters()) t.requires_grad_(true);
          report.task_norms.push_back(modules[i + 1].first);
        }
    }
    report.layers.push_back(name);
  }
  if (report.layers.empty()) {
    const size_t shown = std::min<size_t>(eligible.size(), 6);
    throw Error(fmt::format("--peft {}: no layer matches the targets {}; layers it applies to are named like {}{}",
                            spec.to_string(), fmt::join(spec.targets, ", "),
                            fmt::join(eligible.begin(), eligible.begin() + (long)shown, ", "),
                            eligible.size() > shown ? ", ..." : ""));
  }
  report.trainable = model.num_parameters(true);
  report.total = model.num_parameters();
  return report;
}

// Calls f(layer, its weight, its branch slot) for every Linear and Conv2d with a branch: the one
// walk that merging, unmerging and removing share.
template <class F>
static void for_each_branch(Module& model, F&& f) {
  for (auto& [name, m] : model.named_modules()) {
    if (auto* lin = dynamic_cast<Linear*>(m); lin && lin->branch) f(*lin, lin->weight, lin->branch);
    if (auto* conv = dynamic_cast<Conv2d*>(m); conv && conv->branch) f(*conv, conv->weight, conv->branch);
  }
}

static void merge_one(Tensor& weight, Branch& b, bool merge) {
  if (auto* l = dynamic_cast<LoraBranch*>(&b)) merge ? l->merge(weight) : l->unmerge(weight);
  if (auto* a = dynamic_cast<ConvAdapterBranch*>(&b)) merge ? a->merge(weight) : a->unmerge(weight);
}

// The parameters a branch registers on its layer (removed with it).
static std::vector<const char*> branch_parameter_names(const Branch& b) {
  if (dynamic_cast<const LoraBranch*>(&b)) return {"lora_A", "lora_B"};
  if (dynamic_cast<const ConvAdapterBranch*>(&b)) return {"adapter"};
  return {};
}

void merge_peft(Module& model) {
  for_each_branch(model, [](Module&, Tensor& w, std::shared_ptr<Branch>& b) {
    if (!b->merged()) merge_one(w, *b, true);
  });
}

void unmerge_peft(Module& model) {
  for_each_branch(model, [](Module&, Tensor& w, std::shared_ptr<Branch>& b) {
    if (b->merged()) merge_one(w, *b, false);
  });
}

void merge_and_remove_peft(Module& model) {
  for (auto& [name, m] : model.named_modules())
    if (auto* block = dynamic_cast<TransformerBlock*>(m))
      KD_CHECK(!block->adapter_attn && !block->adapter_mlp && !block->adapter_par,
               "{} has bottleneck adapters (houlsby / adaptformer), which are not linear and cannot be merged into its "
               "weights; use the model with its adapters (the base weights plus peft.safetensors)", name);
  merge_peft(model);
  for_each_branch(model, [](Module& layer, Tensor&, std::shared_ptr<Branch>& b) {
    for (const char* n : branch_parameter_names(*b)) layer.remove_parameter(n);
    b.reset();
  });
}

static bool is_branch_parameter(const std::string& name) {
  const std::string leaf = name.substr(name.rfind('.') + 1);
  return leaf == "lora_A" || leaf == "lora_B" || leaf == "adapter";
}

NamedTensors peft_state(const Module& model) {
  NamedTensors out;
  for (auto& [n, t] : model.named_parameters())
    if (is_branch_parameter(n) || t.requires_grad()) out.push_back({n, t});
  // every buffer (the BatchNorms' running statistics): a PEFT run trains in training mode, so the
  // statistics follow the task's data, frozen layers' included, and they belong to the task
  for (auto& [n, t] : model.named_buffers()) out.push_back({n, t});
  return out;
}

void set_trainable(Module& model, const std::string& what, const std::string& head_prefix) {
  KD_CHECK(what == "peft" || what == "head" || what == "all",
           "--train-only {}: give peft (the PEFT parameters), head (those and the classifier) or all", what);
  if (what == "all") {
    model.unfreeze();
    return;
  }
  if (what == "head") {
    bool found = false;
    for (auto& [n, t] : model.named_parameters())
      if (n.rfind(head_prefix + ".", 0) == 0) t.requires_grad_(true), found = true;
    KD_CHECK(found, "--train-only head: the model has no parameters under '{}.'", head_prefix);
  }
}

std::string state_hash(const NamedTensors& state) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  };
  for (auto& [n, t] : state) {
    mix(n.data(), n.size());
    for (int64_t d : t.shape()) mix(&d, sizeof d);
    const Tensor c = t.contiguous();
    mix(c.raw_data(), (size_t)c.numel() * dtype_size(c.dtype()));
  }
  return fmt::format("{:016x}", h);
}

}  // namespace kd::nn
