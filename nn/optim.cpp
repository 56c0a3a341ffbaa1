#include "nn/optim.h"

#include <cmath>
#include <set>

#include "engine/autograd.h"

namespace kd::nn {

using json = nlohmann::json;

// ------------------------------------------------------------------------------ groups

ParamGroup make_group(const std::string& name, const NamedTensors& params, double lr, double weight_decay,
                      double momentum) {
  ParamGroup g;
  g.name = name;
  g.lr = lr;
  g.weight_decay = weight_decay;
  g.momentum = momentum;
  for (const auto& [n, t] : params) {
    if (!t.requires_grad()) continue;  // frozen
    g.params.push_back(t);
    g.param_names.push_back(n);
  }
  return g;
}

std::vector<ParamGroup> split_decay_groups(const NamedTensors& params, double lr, double weight_decay,
                                           double momentum, const std::string& prefix) {
  NamedTensors decay, no_decay;
  for (const auto& p : params) (p.second.dim() >= 2 ? decay : no_decay).push_back(p);
  std::vector<ParamGroup> out;
  ParamGroup d = make_group(prefix + "decay", decay, lr, weight_decay, momentum);
  ParamGroup nd = make_group(prefix + "no_decay", no_decay, lr, 0.0, momentum);
  if (!d.params.empty()) out.push_back(std::move(d));
  if (!nd.params.empty()) out.push_back(std::move(nd));
  return out;
}

NamedTensors with_prefix(const NamedTensors& tensors, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [n, t] : tensors) out.emplace_back(prefix + n, t);
  return out;
}

std::vector<ParamGroup> training_param_groups(const NamedTensors& model, const NamedTensors& helpers, double lr,
                                              double helper_lr, double weight_decay, double momentum,
                                              bool no_decay_1d) {
  std::vector<ParamGroup> out;
  auto add = [&](const std::string& side, const NamedTensors& params, double side_lr) {
    NamedTensors named = with_prefix(params, side + ".");
    if (no_decay_1d) {
      for (auto& g : split_decay_groups(named, side_lr, weight_decay, momentum, side + ".")) out.push_back(std::move(g));
    } else {
      ParamGroup g = make_group(side, named, side_lr, weight_decay, momentum);
      if (!g.params.empty()) out.push_back(std::move(g));
    }
  };
  add("model", model, lr);
  add("helpers", helpers, helper_lr);
  return out;
}

// ------------------------------------------------------------------------------ Optimizer

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  KD_CHECK(!groups_.empty(), "an optimizer needs at least one parameter group");
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    if (g.param_names.empty())
      for (size_t i = 0; i < g.params.size(); ++i) g.param_names.push_back(fmt::format("{}.{}", g.name, i));
    KD_CHECK(g.param_names.size() == g.params.size(), "parameter group '{}' has {} parameters but {} names", g.name,
             g.params.size(), g.param_names.size());
    KD_CHECK(g.lr >= 0 && g.weight_decay >= 0 && g.momentum >= 0,
             "parameter group '{}': lr ({}), weight_decay ({}) and momentum ({}) must be >= 0", g.name, g.lr,
             g.weight_decay, g.momentum);
    g.initial_lr = g.lr;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      const std::string& n = g.param_names[i];
      KD_CHECK(p.defined() && p.dtype() == DType::f32 && p.is_contiguous(),
               "optimizer parameter '{}' must be a defined, contiguous float32 tensor", n);
      KD_CHECK(names.insert(n).second, "the optimizer parameter name '{}' appears twice", n);
      KD_CHECK(seen.insert(p.impl()).second,
               "parameter '{}' appears in more than one place in the optimizer's groups; give each tensor once", n);
    }
    state_.emplace_back(g.params.size());
  }
}

void Optimizer::step() {
  NoGradGuard no_grad;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& param = g.params[i];
      Tensor grad = param.grad();
      if (!grad.defined()) continue;  // no gradient this step: leave the parameter and its state alone
      KD_CHECK(grad.shape() == param.shape() && grad.dtype() == DType::f32,
               "the gradient of '{}' has shape {} ({}) but the parameter is {} (float32)", g.param_names[i],
               shape_str(grad.shape()), dtype_name(grad.dtype()), shape_str(param.shape()));
      if (!grad.is_contiguous()) grad = grad.contiguous();
      update(g, state_[gi][i], param, param.data<float>(), grad.data<float>(), param.numel());
    }
  }
  ++steps_;
}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.zero_grad();
}

double Optimizer::lr(size_t group) const {
  KD_CHECK(group < groups_.size(), "optimizer has {} groups; no group {}", groups_.size(), group);
  return groups_[group].lr;
}

void Optimizer::set_lr(double lr) {
  for (auto& g : groups_) g.lr = lr;
}

void Optimizer::set_lr(size_t group, double lr) {
  KD_CHECK(group < groups_.size(), "optimizer has {} groups; no group {}", groups_.size(), group);
  groups_[group].lr = lr;
}

void Optimizer::scale_lr(double factor) {
  for (auto& g : groups_) g.lr = g.initial_lr * factor;
}

float* Optimizer::buffer(ParamState& state, const std::string& name, const Tensor& param, bool* created) {
  auto it = state.buffers.find(name);
  bool fresh = it == state.buffers.end();
  if (fresh) it = state.buffers.emplace(name, zeros(param.shape())).first;
  if (created) *created = fresh;
  return it->second.data<float>();
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState out;
  json groups = json::array();
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    groups.push_back({{"name", g.name},
                      {"lr", g.lr},
                      {"initial_lr", g.initial_lr},
                      {"weight_decay", g.weight_decay},
                      {"momentum", g.momentum},
                      {"params", g.param_names}});
    for (size_t i = 0; i < g.params.size(); ++i) {
      const ParamState& s = state_[gi][i];
      const std::string& n = g.param_names[i];
      if (s.step == 0 && s.buffers.empty()) continue;  // never updated
      out.tensors.emplace_back("step." + n, scalar_tensor((double)s.step, DType::i64));
      for (const auto& [b, t] : s.buffers) out.tensors.emplace_back(b + "." + n, t.clone());
    }
  }
  out.scalars = {{"type", type_name()}, {"steps", steps_}, {"options", options_json()}, {"groups", groups}};
  return out;
}

void Optimizer::load_state_dict(const OptimizerState& state) {
  const json& s = state.scalars;
  KD_CHECK(s.is_object() && s.contains("type") && s.contains("groups") && s.contains("steps") && s.contains("options"),
           "optimizer state: the scalars lack type / steps / options / groups");
  KD_CHECK(s["type"] == type_name(), "optimizer state was saved by {} but this optimizer is {}",
           s["type"].get<std::string>(), type_name());
  const json& groups = s["groups"];
  KD_CHECK(groups.is_array() && groups.size() == groups_.size(),
           "optimizer state has {} parameter groups but this optimizer has {}", groups.size(), groups_.size());

  // Where each parameter name lives, and check the groups line up.
  std::map<std::string, std::pair<size_t, size_t>> where;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    const json& sg = groups[gi];
    KD_CHECK(sg["name"] == g.name, "optimizer state: group {} is '{}' in the file but '{}' here", gi,
             sg["name"].get<std::string>(), g.name);
    KD_CHECK(sg["params"] == json(g.param_names),
             "optimizer state: group '{}' lists different parameters in the file ({}) than here ({}); the model or "
             "the groups changed since the checkpoint",
             g.name, sg["params"].size(), g.param_names.size());
    for (size_t i = 0; i < g.params.size(); ++i) where[g.param_names[i]] = {gi, i};
  }

  // Parse every tensor name "<kind>.<param name>" and check its shape before changing anything.
  std::vector<std::string> kinds = buffer_names();
  kinds.push_back("step");
  struct Item {
    size_t gi, i;
    std::string kind;
    Tensor t;
  };
  std::vector<Item> items;
  for (const auto& [name, t] : state.tensors) {
    std::string kind;
    for (const auto& k : kinds)
      if (name.rfind(k + ".", 0) == 0) kind = k;
    KD_CHECK(!kind.empty(), "optimizer state: unexpected tensor '{}' for {} (expected {}.<parameter name>)", name,
             type_name(), fmt::join(kinds, " / "));
    std::string pname = name.substr(kind.size() + 1);
    auto it = where.find(pname);
    KD_CHECK(it != where.end(), "optimizer state: tensor '{}' names no parameter of this optimizer", name);
    auto [gi, i] = it->second;
    const Tensor& p = groups_[gi].params[i];
    if (kind == "step") {
      KD_CHECK(t.numel() == 1, "optimizer state: '{}' must hold one number, got shape {}", name, shape_str(t.shape()));
      const double v = t.item();  // a step count: a whole number an int64 holds (not NaN, Inf or 1e300)
      KD_CHECK(std::isfinite(v) && v >= 0 && v <= 9.0e15 && v == std::floor(v),
               "optimizer state: '{}' must be a whole, non-negative step count, got {} (the checkpoint is corrupt; "
               "use an earlier one or start without --resume)",
               name, v);
    } else
      KD_CHECK(t.shape() == p.shape(), "optimizer state: '{}' has shape {} but the parameter has shape {}", name,
               shape_str(t.shape()), shape_str(p.shape()));
    items.push_back({gi, i, kind, t});
  }

  // Apply.
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    const json& sg = groups[gi];
    g.lr = sg["lr"].get<double>();
    g.initial_lr = sg["initial_lr"].get<double>();
    g.weight_decay = sg["weight_decay"].get<double>();
    g.momentum = sg["momentum"].get<double>();
    for (auto& ps : state_[gi]) ps = ParamState{};
  }
  for (const Item& it : items) {
    ParamState& ps = state_[it.gi][it.i];
    if (it.kind == "step") ps.step = (int64_t)it.t.item();
    else ps.buffers[it.kind] = it.t.to(DType::f32);  // a fresh contiguous copy
  }
  steps_ = s["steps"].get<int64_t>();
  set_options_json(s["options"]);
}

// ------------------------------------------------------------------------------ SGD

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options) : Optimizer(std::move(groups)), options(options) {
  for (const auto& g : param_groups())
    KD_CHECK(!options.nesterov || (g.momentum > 0 && options.dampening == 0),
             "SGD: nesterov needs momentum > 0 and dampening 0 (group '{}' has momentum {}, dampening {})", g.name,
             g.momentum, options.dampening);
}

SGD::SGD(const NamedTensors& params, double lr, double momentum, double weight_decay, bool nesterov,
         double dampening)
    : SGD(std::vector<ParamGroup>{make_group("params", params, lr, weight_decay, momentum)},
          SGDOptions{dampening, nesterov}) {}

void SGD::update(const ParamGroup& group, ParamState& state, const Tensor& param, float* p, const float* grad,
                 int64_t n) {
  const float lr = (float)group.lr, wd = (float)group.weight_decay, mom = (float)group.momentum;
  const float keep = (float)(1.0 - options.dampening);
  float* buf = nullptr;
  bool first = false;
  if (group.momentum != 0) buf = buffer(state, "momentum_buffer", param, &first);
  for (int64_t i = 0; i < n; ++i) {
    float d = grad[i];
    if (wd != 0) d = d + wd * p[i];  // weight decay added to the gradient
    if (buf) {
      // the first step sets buf = d (no dampening), as torch.optim.SGD
      buf[i] = first ? d : buf[i] * mom + keep * d;
      d = options.nesterov ? d + mom * buf[i] : buf[i];
    }
    p[i] = p[i] - lr * d;
  }
  state.step += 1;
}

json SGD::options_json() const { return {{"dampening", options.dampening}, {"nesterov", options.nesterov}}; }

void SGD::set_options_json(const json& j) {
  options.dampening = j.at("dampening").get<double>();
  options.nesterov = j.at("nesterov").get<bool>();
}

// ------------------------------------------------------------------------------ Adam / AdamW

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options, bool decoupled)
    : Optimizer(std::move(groups)), options(options), decoupled_(decoupled) {
  KD_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1 && options.eps >= 0,
           "Adam: betas must lie in [0, 1) and eps >= 0 (got beta1 {}, beta2 {}, eps {})", options.beta1,
           options.beta2, options.eps);
}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options) : Adam(std::move(groups), options, false) {}

Adam::Adam(const NamedTensors& params, double lr, double weight_decay, AdamOptions options)
    : Adam(std::vector<ParamGroup>{make_group("params", params, lr, weight_decay)}, options, false) {}

AdamW::AdamW(const NamedTensors& params, double lr, double weight_decay, AdamOptions options)
    : Adam(std::vector<ParamGroup>{make_group("params", params, lr, weight_decay)}, options, true) {}

void Adam::update(const ParamGroup& group, ParamState& state, const Tensor& param, float* p, const float* grad,
                  int64_t n) {
  float* m = buffer(state, "exp_avg", param);     // first moment
  float* v = buffer(state, "exp_avg_sq", param);  // second moment
  state.step += 1;
  const double t = (double)state.step;
  // Bias corrections in double, as torch computes them in Python.
  const double bias_correction1 = 1.0 - std::pow(options.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(options.beta2, t);
  const float step_size = (float)(group.lr / bias_correction1);
  const float bias_correction2_sqrt = (float)std::sqrt(bias_correction2);
  const float b1 = (float)options.beta1, b2 = (float)options.beta2;
  const float one_minus_b1 = (float)(1.0 - options.beta1), one_minus_b2 = (float)(1.0 - options.beta2);
  const float eps = (float)options.eps, wd = (float)group.weight_decay;
  const float decay_factor = (float)(1.0 - group.lr * group.weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (decoupled_) p[i] = p[i] * decay_factor;  // AdamW: p *= 1 - lr wd, before the update
    else if (wd != 0) g = g + wd * p[i];         // Adam: L2 decay added to the gradient
    m[i] = m[i] * b1 + one_minus_b1 * g;
    v[i] = v[i] * b2 + one_minus_b2 * g * g;
    float denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;  // eps outside the sqrt
    p[i] = p[i] + (-step_size * m[i]) / denom;  // addcdiv(m, denom, value = -step_size)
  }
}

json Adam::options_json() const {
  return {{"beta1", options.beta1}, {"beta2", options.beta2}, {"eps", options.eps}};
}

void Adam::set_options_json(const json& j) {
  options.beta1 = j.at("beta1").get<double>();
  options.beta2 = j.at("beta2").get<double>();
  options.eps = j.at("eps").get<double>();
}

}  // namespace kd::nn
