// model_golden.h: the checks the model-zoo tests (tests/test_models_<family>.cpp) share, against
// fixtures written by tests/reference/gen_models_<family>.py (see model_fixture.py there):
//   {"models": {key: {"param_count", "state": [[name, shape], ...]}},
//    "runs": [{"name", "model", "num_classes", "in_channels", "image_size", "input_shape",
//              "rtol", "grad_rtol", "eval": taps, "train": taps + "grads" + "bn"}]}
// where taps = {"logits", "feats": [...], "preact_feats": [...], "pooled"} are fingerprints and
// "grads" lists [name, fingerprint] per parameter, or [name, {"vanishing", "shape", "bound"}] for a
// gradient that is zero in exact arithmetic (a conv bias before a training-mode BatchNorm).
#pragma once
#include <fstream>
#include <string>

#include "nn/models/model.h"
#include "test_util.h"

namespace kdtest {

inline json load_model_fixture(const std::string& name) {
  std::ifstream f(fixture_path(name));
  REQUIRE_MESSAGE(f.good(), "missing fixture " << fixture_path(name) << ": run tests/reference/gen_models_*.py");
  return json::parse(f);
}

inline kd::Shape shape_from_json(const json& j) { return j.get<kd::Shape>(); }

// The fixture key of a model info entry: "resnet56" or "resnet56_c10" (10 classes).
inline kd::nn::ModelConfig config_for_key(const std::string& key, std::string* model_name) {
  kd::nn::ModelConfig cfg;
  *model_name = key;
  const std::string suffix = "_c10";
  if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
    *model_name = key.substr(0, key.size() - suffix.size());
    cfg.num_classes = 10;
  }
  return cfg;
}

// State-dict names and shapes identical to PyTorch's, in order, and the same parameter count.
inline void check_state_layout(const kd::nn::Module& m, const json& info, const std::string& what) {
  const kd::nn::NamedTensors state = m.state_dict();
  const json& want = info.at("state");
  INFO(what);
  REQUIRE(state.size() == want.size());
  int mismatches = 0;
  for (size_t i = 0; i < state.size(); ++i) {
    const std::string name = want[i][0].get<std::string>();
    const kd::Shape shape = shape_from_json(want[i][1]);
    if (state[i].first != name || state[i].second.shape() != shape) {
      if (++mismatches <= 5)
        FAIL_CHECK("entry " << i << ": " << state[i].first << " " << kd::shape_str(state[i].second.shape())
                            << " vs PyTorch " << name << " " << kd::shape_str(shape));
    }
  }
  CHECK(mismatches == 0);
  CHECK(m.num_parameters() == info.at("param_count").get<int64_t>());
}

inline void check_fp(const Tensor& t, const json& fp, double rtol, const std::string& what) {
  INFO(what);
  REQUIRE(t.defined());
  CHECK(kd::shape_str(t.shape()) == kd::shape_str(shape_from_json(fp.at("shape"))));
  Closeness c = check_fingerprint(t, fp, rtol);
  INFO(c.msg);
  CHECK(c.ok);
}

inline void check_taps(const kd::nn::ModelOutput& o, const json& taps, double rtol, const std::string& what) {
  check_fp(o.logits, taps.at("logits"), rtol, what + " logits");
  const json& feats = taps.at("feats");
  const json& pre = taps.at("preact_feats");
  REQUIRE(o.feats.size() == feats.size());
  REQUIRE(o.preact_feats.size() == pre.size());
  for (size_t i = 0; i < feats.size(); ++i)
    check_fp(o.feats[i], feats[i], rtol, what + " feats[" + std::to_string(i) + "]");
  for (size_t i = 0; i < pre.size(); ++i)
    check_fp(o.preact_feats[i], pre[i], rtol, what + " preact_feats[" + std::to_string(i) + "]");
  check_fp(o.pooled, taps.at("pooled"), rtol, what + " pooled");
}

// One fixture run: eval-mode taps; then, on a freshly filled model, train-mode taps, parameter
// gradients of sum(logits * det_uniform(99)) and the updated BatchNorm statistics.
inline void check_model_run(const json& run) {
  const std::string name = run.at("name").get<std::string>();
  const std::string model_name = run.at("model").get<std::string>();
  kd::nn::ModelConfig cfg;
  cfg.num_classes = run.at("num_classes").get<int64_t>();
  cfg.in_channels = run.at("in_channels").get<int64_t>();
  cfg.image_size = run.at("image_size").get<int64_t>();
  const kd::Shape input_shape = shape_from_json(run.at("input_shape"));
  const double rtol = run.at("rtol").get<double>(), grad_rtol = run.at("grad_rtol").get<double>();
  auto model = kd::nn::create_model(model_name, cfg);
  {
    det_fill(*model);
    model->eval();
    kd::NoGradGuard no_grad;
    kd::nn::ModelOutput o = model->forward(det_input(input_shape));
    check_taps(o, run.at("eval"), rtol, name + " eval");
  }
  if (!run.contains("train")) return;
  const json& train = run.at("train");
  det_fill(*model);  // every parameter and buffer afresh: the same as a new model
  model->train();
  kd::nn::ModelOutput o = model->forward(det_input(input_shape));
  check_taps(o, train, rtol, name + " train");
  if (train.contains("grads")) {
    Tensor w = kd::from_vector(det_uniform(99, o.logits.numel()), o.logits.shape());
    kd::sum(o.logits * w).backward();
    const kd::nn::NamedTensors params = model->named_parameters();
    const json& grads = train.at("grads");
    REQUIRE(params.size() == grads.size());
    for (size_t i = 0; i < params.size(); ++i) {
      REQUIRE(params[i].first == grads[i][0].get<std::string>());
      const json& want = grads[i][1];
      const std::string what = name + " grad of " + params[i].first;
      if (want.value("vanishing", false)) {  // zero in exact arithmetic: only rounding noise is left
        INFO(what);
        const Tensor g = params[i].second.grad();
        REQUIRE(g.defined());
        CHECK(g.shape() == shape_from_json(want.at("shape")));
        CHECK(kd::max(kd::abs(g)).item() <= want.at("bound").get<double>());
      } else {
        check_fp(params[i].second.grad(), want, grad_rtol, what);
      }
    }
  }
  const kd::nn::NamedTensors state = model->state_dict();
  auto find = [&](const std::string& key) {
    for (const auto& [n, t] : state)
      if (n == key) return t;
    FAIL("no state entry " << key);
    return Tensor();
  };
  for (const auto& [bn, stats] : train.at("bn").items()) {
    check_fp(find(bn + ".running_mean"), stats.at("running_mean"), rtol, name + " " + bn + ".running_mean");
    check_fp(find(bn + ".running_var"), stats.at("running_var"), rtol, name + " " + bn + ".running_var");
    CHECK(find(bn + ".num_batches_tracked").item() == stats.at("num_batches_tracked").get<double>());
  }
}

}  // namespace kdtest
