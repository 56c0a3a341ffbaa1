// module.h: Module, the building block of networks, with PyTorch-style dotted names.
//
// A Module owns named parameters (trainable tensors), named buffers (state that is saved but
// not trained, e.g. BatchNorm running statistics) and named child modules. Names compose with
// dots exactly as in PyTorch's state_dict ("layer1.0.conv1.weight"), so PyTorch checkpoints load
// by name. Registration order is kept, so state dicts list tensors as PyTorch does.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace kd::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What load_state_dict found: keys the module has but the dict lacks, keys the dict has but the
// module lacks, and keys whose shapes disagree.
struct LoadReport {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<std::string> shape_mismatch;  // "name: model (a, b) vs file (c, d)"
  bool ok() const { return missing.empty() && unexpected.empty() && shape_mismatch.empty(); }
  std::string to_string() const;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // A short type name for printing ("Conv2d", "resnet56").
  virtual std::string type_name() const { return "Module"; }

  // ---- registration (called from constructors)
  Tensor register_parameter(const std::string& name, Tensor t);  // sets requires_grad
  Tensor register_buffer(const std::string& name, Tensor t);
  void remove_parameter(const std::string& name);  // one of this module's own (PEFT's merge and remove)
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  // ---- access (recursive, dotted names, registration order)
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  std::vector<std::pair<std::string, const Module*>> named_modules() const;  // "" is this module
  std::vector<std::pair<std::string, Module*>> named_modules();              // the same, to modify them
  Tensor parameter(const std::string& dotted_name) const;  // throws if absent
  int64_t num_parameters(bool trainable_only = false) const;

  // ---- modes
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  void freeze();    // requires_grad = false on every parameter
  void unfreeze();

  // ---- state dict: parameters then buffers of each module, in registration order
  NamedTensors state_dict() const;
  // Copies values in place (shapes must match). strict: missing or unexpected keys are an
  // error (the report lists them all); not strict: load what matches, return the report.
  LoadReport load_state_dict(const NamedTensors& state, bool strict = true);
  LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // One line per module: name, type and parameter count.
  std::string summary() const;

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers) const;

  NamedTensors params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace kd::nn
