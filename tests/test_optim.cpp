// Optimizers: five-step trajectories of SGD / Adam / AdamW against torch.optim
// (tests/reference/gen_optim.py), parameter groups, and the optimizer state dict.
#include <fstream>

#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
using namespace kd::nn;
using kdtest::json;

namespace {

json load_cases() {
  std::string path = kdtest::fixture_path("golden_optim.json");
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << path << " (run tests/reference/gen_optim.py)");
  return json::parse(f).at("cases");
}

// The optimizer a fixture case describes, over `params`.
std::unique_ptr<Optimizer> make_optimizer(const json& c, const std::vector<Tensor>& params) {
  std::vector<ParamGroup> groups;
  for (const json& gj : c["groups"]) {
    ParamGroup g;
    g.name = gj["name"];
    for (int i : gj["params"]) {
      g.params.push_back(params[i]);
      g.param_names.push_back("p" + std::to_string(i));
    }
    g.lr = gj["lr"];
    g.weight_decay = gj["weight_decay"];
    g.momentum = gj["momentum"];
    groups.push_back(g);
  }
  const json& o = c["options"];
  std::string type = c["optimizer"];
  if (type == "SGD") return std::make_unique<SGD>(groups, SGDOptions{o["dampening"], o["nesterov"]});
  AdamOptions ao{o["beta1"], o["beta2"], o["eps"]};
  if (type == "Adam") return std::make_unique<Adam>(groups, ao);
  return std::make_unique<AdamW>(groups, ao);
}

std::vector<Tensor> initial_params(const json& c) {
  std::vector<Tensor> params;
  for (const json& pj : c["params"]) params.push_back(kdtest::tensor_from_json(pj).requires_grad_());
  return params;
}

// Step k of a case: the schedule's lr scale, the fixed gradients (null = none), one step.
void do_step(Optimizer& opt, const json& c, const std::vector<Tensor>& params, int k) {
  opt.scale_lr(c["lr_scale"][k].get<double>());
  for (size_t i = 0; i < params.size(); ++i) {
    const json& gj = c["grads"][k][i];
    if (gj.is_null()) params[i].zero_grad();
    else params[i].set_grad(kdtest::tensor_from_json(gj));
  }
  opt.step();
}

void check_close(const Tensor& got, const Tensor& want, double rtol, double atol) {
  auto cl = kdtest::allclose(got, want, rtol, atol);
  INFO(cl.msg << " max |diff| " << cl.max_abs);
  CHECK(cl.ok);
}

}  // namespace

TEST_CASE("optim: five steps match torch.optim (SGD, Adam, AdamW, groups, skipped grads, LR changes)") {
  json cases = load_cases();
  for (const json& c : cases) {
    std::string name = c["name"];
    SUBCASE(name.c_str()) {
      double rtol = c["rtol"], atol = c["atol"];
      std::vector<Tensor> params = initial_params(c);
      auto opt = make_optimizer(c, params);
      CHECK(opt->type_name() == c["optimizer"].get<std::string>());
      for (int k = 0; k < (int)c["grads"].size(); ++k) {
        do_step(*opt, c, params, k);
        for (size_t i = 0; i < params.size(); ++i) {
          INFO(name << " step " << k << " param " << i);
          check_close(params[i].detach(), kdtest::tensor_from_json(c["expected"][k][i]), rtol, atol);
        }
      }
      CHECK(opt->steps_taken() == (int64_t)c["grads"].size());
      // The final state matches torch's optimizer state (same names, same values).
      auto state = to_map(opt->state_dict().tensors);
      for (size_t i = 0; i < params.size(); ++i) {
        const json& want = c["state"][i];
        std::string p = "p" + std::to_string(i);
        for (auto& [key, value] : want.items()) {
          INFO(name << " state " << key << " of " << p);
          REQUIRE(state.count(key + "." + p));
          const Tensor& got = state.at(key + "." + p);
          if (key == "step") CHECK(got.item() == value.get<double>());
          else check_close(got, kdtest::tensor_from_json(value), rtol, atol);
        }
      }
    }
  }
  CHECK(cases.size() >= 11);
}

TEST_CASE("optim: state_dict / load_state_dict resume gives the uninterrupted trajectory") {
  json cases = load_cases();
  for (const json& c : cases) {
    std::string name = c["name"];
    SUBCASE(name.c_str()) {
      const int steps = (int)c["grads"].size();
      // Uninterrupted run.
      std::vector<Tensor> a = initial_params(c);
      auto opt_a = make_optimizer(c, a);
      for (int k = 0; k < steps; ++k) do_step(*opt_a, c, a, k);
      // Three steps, save, a fresh optimizer on copies of the parameters, load, two more steps.
      std::vector<Tensor> b = initial_params(c);
      auto opt_b = make_optimizer(c, b);
      for (int k = 0; k < 3; ++k) do_step(*opt_b, c, b, k);
      OptimizerState saved = opt_b->state_dict();
      // Round trip through a safetensors file and JSON text, as a checkpoint does.
      std::string path = kdtest::temp_path("optim.safetensors");
      save_safetensors(path, saved.tensors);
      OptimizerState reread{load_safetensors(path).tensors, json::parse(saved.scalars.dump())};
      std::vector<Tensor> b2;
      for (auto& t : b) b2.push_back(t.detach().clone().requires_grad_());
      auto opt_c = make_optimizer(c, b2);
      opt_c->load_state_dict(reread);
      CHECK(opt_c->steps_taken() == 3);
      for (int k = 3; k < steps; ++k) do_step(*opt_c, c, b2, k);
      for (size_t i = 0; i < a.size(); ++i) {
        INFO(name << " param " << i);
        CHECK(to_float_vector(b2[i]) == to_float_vector(a[i]));  // bit for bit
      }
    }
  }
}

TEST_CASE("optim: parameter groups: decay / no-decay split and helper modules") {
  Generator gen(0);
  Sequential model;
  model.push_back(std::make_shared<Conv2d>(3, 4, 3, gen, 1, 1, 1, 1, false));
  model.push_back(BatchNorm2d(4));
  model.push_back(std::make_shared<Linear>(4, 2, gen));
  Linear helper(2, 2, gen);

  auto groups = split_decay_groups(model.named_parameters(), 0.1, 5e-4, 0.9);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].name == "decay");
  CHECK(groups[0].param_names == std::vector<std::string>{"0.weight", "2.weight"});
  CHECK(groups[0].weight_decay == 5e-4);
  CHECK(groups[1].name == "no_decay");
  CHECK(groups[1].param_names == std::vector<std::string>{"1.weight", "1.bias", "2.bias"});
  CHECK(groups[1].weight_decay == 0.0);
  CHECK(groups[1].lr == 0.1);
  CHECK(groups[1].momentum == 0.9);

  // Helpers with their own LR; everything decays (mdistiller's setting).
  auto all = training_param_groups(model.named_parameters(), helper.named_parameters(), 0.05, 0.2, 5e-4, 0.9, false);
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "model");
  CHECK(all[0].params.size() == 5);
  CHECK(all[0].param_names[0] == "model.0.weight");
  CHECK(all[1].name == "helpers");
  CHECK(all[1].lr == 0.2);
  CHECK(all[1].param_names == std::vector<std::string>{"helpers.weight", "helpers.bias"});
  auto split = training_param_groups(model.named_parameters(), helper.named_parameters(), 0.05, 0.2, 5e-4, 0.9, true);
  REQUIRE(split.size() == 4);
  CHECK(split[0].name == "model.decay");
  CHECK(split[1].name == "model.no_decay");
  CHECK(split[2].name == "helpers.decay");
  CHECK(split[3].name == "helpers.no_decay");
  CHECK(split[3].weight_decay == 0.0);
  // No helpers: no empty group.
  CHECK(training_param_groups(model.named_parameters(), {}, 0.05, 0.2, 5e-4, 0.9, false).size() == 1);

  // Frozen parameters are left out.
  helper.freeze();
  CHECK(make_group("h", helper.named_parameters(), 0.1, 0.0).params.empty());
  helper.unfreeze();

  // The groups drive the update: no weight decay on the no-decay group, each group its own LR.
  SGD opt(split, SGDOptions{});
  CHECK(opt.lr(0) == 0.05);
  CHECK(opt.lr(2) == 0.2);
  opt.scale_lr(0.5);  // a schedule's factor keeps the ratio between groups
  CHECK(opt.lr(0) == 0.025);
  CHECK(opt.lr(2) == 0.1);
  opt.set_lr(3, 0.7);
  CHECK(opt.lr(3) == 0.7);
  opt.set_lr(0.01);
  for (size_t g = 0; g < 4; ++g) CHECK(opt.lr(g) == 0.01);
  CHECK(opt.param_groups()[0].initial_lr == 0.05);
}

TEST_CASE("optim: weight decay only where asked, skipped parameters untouched, zero_grad") {
  Tensor w = from_vector(std::vector<float>{1.0f, -2.0f}, {1, 2}).requires_grad_();
  Tensor b = from_vector(std::vector<float>{3.0f}, {1}).requires_grad_();
  Tensor frozen_like = from_vector(std::vector<float>{5.0f}, {1}).requires_grad_();
  std::vector<ParamGroup> groups = split_decay_groups({{"w", w}, {"b", b}, {"u", frozen_like}}, 0.1, 0.5);
  SGD opt(groups);
  w.set_grad(zeros({1, 2}));
  b.set_grad(zeros({1}));
  opt.step();  // zero gradient: only the decay moves w (p -= lr * wd * p); b has no decay
  CHECK(w.at({0, 0}) == doctest::Approx(1.0 - 0.1 * 0.5 * 1.0));
  CHECK(w.at({0, 1}) == doctest::Approx(-2.0 + 0.1 * 0.5 * 2.0));
  CHECK(b.item() == 3.0);
  CHECK(frozen_like.item() == 5.0);  // no gradient: skipped
  opt.zero_grad();
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // The parameters are leaves that still require grad after the update.
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());
}

TEST_CASE("optim: errors") {
  Tensor w = ones({2, 2}).requires_grad_();
  Tensor v = ones({3}).requires_grad_();
  CHECK_THROWS_WITH_SUBSTR(SGD(std::vector<ParamGroup>{}), "at least one parameter group");
  CHECK_THROWS_WITH_SUBSTR(SGD(NamedTensors{{"w", w}, {"w2", w}}, 0.1), "appears in more than one place");
  CHECK_THROWS_WITH_SUBSTR(SGD(NamedTensors{{"w", w}}, 0.1, 0.0, 0.0, true), "nesterov needs momentum > 0");
  CHECK_THROWS_WITH_SUBSTR(SGD(NamedTensors{{"w", w}}, -0.1), "must be >= 0");
  CHECK_THROWS_WITH_SUBSTR(Adam(NamedTensors{{"w", w}}, 0.1, 0.0, AdamOptions{1.0, 0.999, 1e-8}),
                           "betas must lie in [0, 1)");
  {
    ParamGroup g1 = make_group("a", {{"w", w}}, 0.1, 0.0);
    ParamGroup g2 = make_group("b", {{"w", v}}, 0.1, 0.0);
    CHECK_THROWS_WITH_SUBSTR(SGD(std::vector<ParamGroup>{g1, g2}), "name 'w' appears twice");
  }
  SGD opt(NamedTensors{{"w", w}}, 0.1, 0.9);
  w.set_grad(ones({4}));
  CHECK_THROWS_WITH_SUBSTR(opt.step(), "the gradient of 'w' has shape (4,)");
  w.set_grad(ones({2, 2}));
  opt.step();
  OptimizerState st = opt.state_dict();
  CHECK(st.tensors.size() == 2);  // step.w, momentum_buffer.w
  CHECK(st.scalars["type"] == "SGD");

  SUBCASE("load into another type") {
    Adam adam(NamedTensors{{"w", w}}, 0.1);
    CHECK_THROWS_WITH_SUBSTR(adam.load_state_dict(st), "saved by SGD but this optimizer is Adam");
  }
  SUBCASE("load into other parameters") {
    SGD other(NamedTensors{{"v", v}}, 0.1, 0.9);
    CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(st), "lists different parameters");
  }
  SUBCASE("shape mismatch, unexpected tensors: nothing changes") {
    SGD other(NamedTensors{{"w", w.detach().clone().requires_grad_()}}, 0.3, 0.9);
    OptimizerState bad = st;
    bad.tensors[1].second = ones({5});
    CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(bad), "'momentum_buffer.w' has shape (5,) but the parameter has shape (2, 2)");
    bad = st;
    bad.tensors.emplace_back("exp_avg.w", ones({2, 2}));
    CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(bad), "unexpected tensor 'exp_avg.w'");
    bad = st;
    bad.tensors.emplace_back("momentum_buffer.zz", ones({2, 2}));
    CHECK_THROWS_WITH_SUBSTR(other.load_state_dict(bad), "names no parameter");
    CHECK(other.lr() == 0.3);  // untouched by the failed loads
    CHECK(other.state_dict().tensors.empty());
    other.load_state_dict(st);
    CHECK(other.lr() == 0.1);
    CHECK(other.state_dict().tensors.size() == 2);
  }
}
