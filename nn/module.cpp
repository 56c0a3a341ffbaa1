#include "nn/module.h"

#include <functional>
#include <set>

#include "engine/autograd.h"

namespace kd::nn {

std::string LoadReport::to_string() const {
  std::string s;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    s += fmt::format("{} ({}): {}\n", what, v.size(), fmt::join(v, ", "));
  };
  list("missing keys (in the model, not in the file)", missing);
  list("unexpected keys (in the file, not in the model)", unexpected);
  list("shape mismatches", shape_mismatch);
  return s.empty() ? "all keys matched\n" : s;
}

static void check_name(const std::string& name) {
  KD_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "module member name '{}' must be non-empty and contain no '.'", name);
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_name(name);
  KD_CHECK(t.defined() && t.dtype() == DType::f32, "parameter '{}' must be a defined float32 tensor", name);
  Tensor p = t.is_leaf() ? t : t.detach();
  p.requires_grad_(true);
  params_.emplace_back(name, p);
  return p;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name(name);
  KD_CHECK(t.defined(), "buffer '{}' must be a defined tensor", name);
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_name(name);
  KD_CHECK(m != nullptr, "child module '{}' is null", name);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers) const {
  // PyTorch order for state_dict: own parameters, own buffers, then each child recursively.
  if (params) for (const auto& [n, t] : params_) params->emplace_back(prefix + n, t);
  if (buffers) for (const auto& [n, t] : buffers_) buffers->emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", &out, nullptr);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", nullptr, &out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out{{"", this}};
  for (const auto& [n, c] : children_)
    for (auto& [cn, cm] : c->named_modules()) out.emplace_back(cn.empty() ? n : n + "." + cn, cm);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [n, c] : children_)
    for (auto& [cn, cm] : c->named_modules()) out.emplace_back(cn.empty() ? n : n + "." + cn, cm);
  return out;
}

void Module::remove_parameter(const std::string& name) {
  for (auto it = params_.begin(); it != params_.end(); ++it)
    if (it->first == name) {
      params_.erase(it);
      return;
    }
  throw Error(fmt::format("{} has no parameter '{}' of its own to remove", type_name(), name));
}

Tensor Module::parameter(const std::string& dotted) const {
  for (auto& [n, t] : named_parameters())
    if (n == dotted) return t;
  throw Error(fmt::format("{} has no parameter named '{}'", type_name(), dotted));
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.zero_grad();
}

void Module::freeze() {
  for (auto& t : parameters()) t.impl()->requires_grad = false;
}

void Module::unfreeze() {
  for (auto& t : parameters()) t.impl()->requires_grad = true;
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  // interleave per module as PyTorch does: module's params, module's buffers, then children
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& prefix) {
    for (const auto& [n, t] : m.params_) out.emplace_back(prefix + n, t);
    for (const auto& [n, t] : m.buffers_) out.emplace_back(prefix + n, t);
    for (const auto& [n, c] : m.children_) walk(*c, prefix + n + ".");
  };
  walk(*this, "");
  return out;
}

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  LoadReport rep;
  NamedTensors own = state_dict();
  std::set<std::string> own_names;
  for (auto& [n, t] : own) {
    own_names.insert(n);
    auto it = state.find(n);
    if (it == state.end()) {
      rep.missing.push_back(n);
      continue;
    }
    const Tensor& src = it->second;
    if (src.shape() != t.shape())
      rep.shape_mismatch.push_back(fmt::format("{}: model {} vs file {}", n, shape_str(t.shape()), shape_str(src.shape())));
  }
  for (auto& [n, t] : state)
    if (!own_names.count(n)) rep.unexpected.push_back(n);
  if (!rep.shape_mismatch.empty() || (strict && !rep.ok()))
    throw Error(fmt::format("load_state_dict into {} failed:\n{}(load with strict=false to skip missing and "
                            "unexpected keys; shapes must always match)",
                            type_name(), rep.to_string()));
  NoGradGuard no_grad;
  for (auto& [n, t] : own) {
    auto it = state.find(n);
    if (it != state.end()) t.copy_(it->second);  // converts dtype (e.g. num_batches_tracked i64)
  }
  return rep;
}

LoadReport Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::map<std::string, Tensor> m;
  for (auto& [n, t] : state) {
    KD_CHECK(!m.count(n), "state dict has the key '{}' twice", n);
    m[n] = t;
  }
  return load_state_dict(m, strict);
}

std::string Module::summary() const {
  std::string s;
  for (auto& [name, m] : named_modules()) {
    int64_t own = 0;
    for (auto& [n, t] : m->params_) own += t.numel();
    s += fmt::format("{:<40} {:<22} {:>10}\n", name.empty() ? "(root)" : name, m->type_name(), own);
  }
  s += fmt::format("total parameters: {}\n", num_parameters());
  return s;
}

}  // namespace kd::nn
