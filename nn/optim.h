// optim.h: optimizers (SGD, Adam, AdamW) over parameter groups, reproducing torch.optim.
//
// An optimizer holds parameter groups, each with its own learning rate and weight decay, and
// per-parameter state (momentum buffers, Adam moments). step() updates every parameter whose
// gradient is defined, with plain loops over the float data, under NoGradGuard; parameters
// without a gradient (frozen, or unused this step) are skipped and their state is untouched.
//
// The update rules are PyTorch 1.13's, operation for operation (tests/test_optim.cpp compares
// five steps of each with torch.optim):
//   SGD:   d = g + wd p;  buf = d (first step) or momentum buf + (1 - dampening) d;
//          d = d + momentum buf (nesterov) or buf;  p -= lr d
//   Adam:  g = g + wd p (L2 in the gradient);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      (eps outside the sqrt)
//   AdamW: p *= 1 - lr wd (decoupled decay, first), then Adam's update with g unchanged.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/module.h"

namespace kd::nn {

struct ParamGroup {
  std::string name = "params";
  std::vector<Tensor> params;
  // One name per parameter (e.g. "conv1.weight"): the keys of the optimizer's state dict.
  // Left empty, the optimizer names them "<group name>.<index>".
  std::vector<std::string> param_names;
  double lr = 0.1;
  double weight_decay = 0.0;
  double momentum = 0.0;    // SGD only
  double initial_lr = 0.0;  // set to lr when the optimizer is built; scale_lr() scales from it
};

// ---- building groups
// All parameters that require grad, in one group.
ParamGroup make_group(const std::string& name, const NamedTensors& params, double lr, double weight_decay,
                      double momentum = 0.0);
// Two groups: "<prefix>decay" (parameters with 2 or more dims: conv and linear weights) with the
// given weight decay, and "<prefix>no_decay" (1-D and 0-D parameters: every bias, BatchNorm and
// LayerNorm weights and biases) with weight decay 0. Empty groups are left out.
std::vector<ParamGroup> split_decay_groups(const NamedTensors& params, double lr, double weight_decay,
                                           double momentum = 0.0, const std::string& prefix = "");
// The groups of a training run: the model's parameters (names "model.<n>") and the trainable
// helper modules of a distiller (names "helpers.<n>", e.g. FitNet's regressor) with their own LR.
// With no_decay_1d, each side is split as split_decay_groups does ("model.decay",
// "model.no_decay", "helpers.decay", ...); otherwise everything decays (mdistiller's setting)
// in groups "model" and "helpers". Empty groups are left out.
std::vector<ParamGroup> training_param_groups(const NamedTensors& model, const NamedTensors& helpers, double lr,
                                              double helper_lr, double weight_decay, double momentum,
                                              bool no_decay_1d);
// The same tensors with `prefix` before every name.
NamedTensors with_prefix(const NamedTensors& tensors, const std::string& prefix);

// What an optimizer saves for a training checkpoint: its state tensors, named
// "<state>.<param name>" ("momentum_buffer.conv1.weight", "exp_avg.fc.bias", "step.fc.bias"),
// and its scalars (type, step count, options, and every group's hyper-parameters and names).
struct OptimizerState {
  NamedTensors tensors;
  nlohmann::json scalars;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  virtual std::string type_name() const = 0;

  // One update of every parameter that has a gradient.
  void step();
  // Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();
  int64_t steps_taken() const { return steps_; }

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  double lr(size_t group = 0) const;
  void set_lr(double lr);                // every group
  void set_lr(size_t group, double lr);  // one group
  // lr = initial_lr * factor in every group: how a schedule drives groups with different LRs.
  void scale_lr(double factor);

  OptimizerState state_dict() const;
  // Restores state tensors, step counts, options and group hyper-parameters. The groups must
  // have the same names and parameter names, and every tensor the shape of its parameter;
  // everything is checked before anything changes.
  void load_state_dict(const OptimizerState& state);

 protected:
  // The per-parameter state: a step count and named buffers, each shaped like the parameter.
  struct ParamState {
    int64_t step = 0;
    std::map<std::string, Tensor> buffers;
  };
  // Updates one parameter: p and grad are contiguous float32 arrays of n elements.
  virtual void update(const ParamGroup& group, ParamState& state, const Tensor& param, float* p, const float* grad,
                      int64_t n) = 0;
  // The names of the buffers this optimizer keeps per parameter.
  virtual std::vector<std::string> buffer_names() const = 0;
  virtual nlohmann::json options_json() const = 0;
  virtual void set_options_json(const nlohmann::json& j) = 0;
  // The buffer `name` of `state`, created as zeros shaped like `param` when absent.
  static float* buffer(ParamState& state, const std::string& name, const Tensor& param, bool* created = nullptr);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;  // [group][param]
  int64_t steps_ = 0;
};

struct SGDOptions {
  double dampening = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions options = {});
  // One group of all the parameters.
  SGD(const NamedTensors& params, double lr, double momentum = 0.0, double weight_decay = 0.0, bool nesterov = false,
      double dampening = 0.0);
  std::string type_name() const override { return "SGD"; }
  SGDOptions options;

 protected:
  void update(const ParamGroup& group, ParamState& state, const Tensor& param, float* p, const float* grad,
              int64_t n) override;
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }
  nlohmann::json options_json() const override;
  void set_options_json(const nlohmann::json& j) override;
};

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// Adam with L2 weight decay added to the gradient (torch.optim.Adam). decoupled = true makes
// it AdamW (torch.optim.AdamW); use the AdamW class for that.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  Adam(const NamedTensors& params, double lr, double weight_decay = 0.0, AdamOptions options = {});
  std::string type_name() const override { return decoupled_ ? "AdamW" : "Adam"; }
  AdamOptions options;

 protected:
  Adam(std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  void update(const ParamGroup& group, ParamState& state, const Tensor& param, float* p, const float* grad,
              int64_t n) override;
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  nlohmann::json options_json() const override;
  void set_options_json(const nlohmann::json& j) override;

 private:
  bool decoupled_ = false;
};

// AdamW: decoupled weight decay, p *= 1 - lr wd before Adam's update (torch.optim.AdamW).
// Note that torch.optim.AdamW's default weight_decay is 1e-2.
class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamOptions options = {}) : Adam(std::move(groups), options, true) {}
  AdamW(const NamedTensors& params, double lr, double weight_decay = 1e-2, AdamOptions options = {});
};

}  // namespace kd::nn
