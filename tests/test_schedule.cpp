// LR schedules against PyTorch's schedulers and mdistiller's rule (tests/reference/gen_schedule.py).
#include <fstream>

#include "nn/optim.h"
#include "nn/schedule.h"
#include "test_util.h"

using namespace kd;
using namespace kd::nn;
using kdtest::json;

static json load_cases() {
  std::string path = kdtest::fixture_path("golden_schedule.json");
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << path << " (run tests/reference/gen_schedule.py)");
  return json::parse(f).at("cases");
}

TEST_CASE("schedule: LR at every iteration matches PyTorch's schedulers") {
  int checked = 0;
  for (const json& c : load_cases()) {
    if (c.contains("mdistiller")) continue;
    std::string name = c["name"];
    SUBCASE(name.c_str()) {
      Schedule s = Schedule::from_json(c["schedule"]);
      const int64_t ipe = c["iters_per_epoch"], epochs = c["epochs"];
      const bool per_epoch_values = c["per_epoch_values"];
      const std::vector<double> want = c["lrs"];
      REQUIRE(want.size() == (size_t)(per_epoch_values ? epochs : epochs * ipe));
      for (int64_t e = 0; e < epochs; ++e)
        for (int64_t i = 0; i < ipe; ++i) {
          double w = want[per_epoch_values ? e : e * ipe + i];
          double got = s.lr(e, i, ipe);
          INFO(name << " epoch " << e << " iteration " << i << ": " << got << " vs " << w);
          CHECK(std::abs(got - w) <= 1e-12 + 1e-9 * std::abs(w));
          CHECK(s.factor(e, i, ipe) == doctest::Approx(got / s.base_lr));
        }
    }
    ++checked;
  }
  CHECK(checked == 9);
}

TEST_CASE("schedule: mdistiller's adjust_learning_rate, epochs from 1") {
  json cases = load_cases();
  const json* m = nullptr;
  for (const json& c : cases)
    if (c.contains("mdistiller")) m = &c;
  REQUIRE(m != nullptr);
  const std::vector<int64_t> stages = (*m)["stages"];
  const double base = (*m)["base_lr"], rate = (*m)["rate"];
  const std::vector<double> want = (*m)["lrs"];
  Schedule s = multistep_schedule(base, stages, rate);
  for (int64_t epoch1 = 1; epoch1 <= (int64_t)want.size(); ++epoch1) {
    INFO("mdistiller epoch " << epoch1);
    double w = want[epoch1 - 1];
    CHECK(mdistiller_lr(base, stages, rate, epoch1) == doctest::Approx(w).epsilon(1e-12));
    // Our epoch index counts from 0: mdistiller's epoch e is our epoch e - 1.
    CHECK(s.lr(epoch1 - 1, 0, 10) == doctest::Approx(w).epsilon(1e-12));
  }
  // Where the decays fall, stated exactly: mdistiller's epoch 150 still has the base LR, its
  // epoch 151 (our epoch 150) is the first with 0.1x; 181 the first with 0.01x; 211 with 0.001x.
  CHECK(mdistiller_lr(0.05, stages, 0.1, 150) == 0.05);
  CHECK(mdistiller_lr(0.05, stages, 0.1, 151) == doctest::Approx(0.005));
  CHECK(s.lr(149, 0, 1) == 0.05);
  CHECK(s.lr(150, 0, 1) == doctest::Approx(0.005));
  CHECK(s.lr(179, 5, 6) == doctest::Approx(0.005));
  CHECK(s.lr(180, 0, 6) == doctest::Approx(0.0005));
  CHECK(s.lr(210, 0, 6) == doctest::Approx(0.00005));
}

TEST_CASE("schedule: builders, JSON round trip, descriptions, driving an optimizer") {
  std::vector<Schedule> all = {constant_schedule(0.1),
                               multistep_schedule(0.05, {150, 180, 210}),
                               warmup_schedule(0.4, 2, true, 0.25),
                               cosine_schedule(0.3, 57, 1),
                               cosine_schedule(0.1, 20, 2, 1e-3, false, 0.1),
                               onecycle_schedule(0.1, 6),
                               onecycle_schedule(0.5, 7, true, 0.25, 10, 100, true)};
  for (const Schedule& s : all) {
    INFO(s.describe());
    Schedule back = Schedule::from_json(json::parse(s.to_json().dump()));
    CHECK(back.to_json() == s.to_json());
    for (int64_t e = 0; e < 6; ++e)
      for (int64_t i = 0; i < 5; ++i) CHECK(back.lr(e, i, 5) == s.lr(e, i, 5));
  }
  CHECK(all[3].describe() == "cosine(lr 0.3 -> 0, 57 epochs, warm-up 1, per iteration)");
  CHECK(all[1].describe() == "multistep(lr 0.05, x0.1 at epochs 150, 180, 210)");
  CHECK(all[0].lr(7, 3, 10) == 0.1);

  // Per epoch: constant inside an epoch. Per iteration: changes inside it.
  Schedule per_epoch = cosine_schedule(0.1, 10, 0, 0.0, false);
  CHECK(per_epoch.lr(3, 0, 50) == per_epoch.lr(3, 49, 50));
  Schedule per_iter = cosine_schedule(0.1, 10, 0, 0.0, true);
  CHECK(per_iter.lr(3, 0, 50) > per_iter.lr(3, 49, 50));
  // Cosine stays at min_lr past the end; warm-up reaches base_lr exactly at its end.
  CHECK(cosine_schedule(0.1, 4, 0, 0.01, false).lr(9, 0, 1) == doctest::Approx(0.01));
  CHECK(warmup_schedule(0.4, 2, true).lr(2, 0, 12) == 0.4);
  CHECK(warmup_schedule(0.4, 2, true).lr(0, 0, 12) == 0.0);

  // factor() drives every group of an optimizer, keeping their ratio.
  Tensor a = ones({2, 2}).requires_grad_(), b = ones({2}).requires_grad_();
  SGD opt(std::vector<ParamGroup>{make_group("a", {{"a", a}}, 0.3, 0.0), make_group("b", {{"b", b}}, 0.03, 0.0)});
  Schedule cos = cosine_schedule(0.3, 8, 1);
  opt.scale_lr(cos.factor(4, 7, 40));
  CHECK(opt.lr(0) == doctest::Approx(cos.lr(4, 7, 40)));
  CHECK(opt.lr(1) == doctest::Approx(cos.lr(4, 7, 40) / 10));
}

TEST_CASE("schedule: errors") {
  CHECK_THROWS_WITH_SUBSTR(onecycle_schedule(0.1, 2).lr(2, 0, 10), "step 20 is outside the 20 steps");
  CHECK_THROWS_WITH_SUBSTR(cosine_schedule(0.1, 2, 2), "need 0 <= warm-up epochs (2) < total epochs (2)");
  CHECK_THROWS_WITH_SUBSTR(onecycle_schedule(0.1, 5, true, 1.5), "pct_start must lie in (0, 1)");
  CHECK_THROWS_WITH_SUBSTR(constant_schedule(0.1).lr(0, 5, 5), "bad position epoch 0 iteration 5 of 5");
  Schedule bad;
  bad.kind = "exponential";
  CHECK_THROWS_WITH_SUBSTR(bad.lr(0, 0, 1), "unknown LR schedule 'exponential'");
  CHECK_THROWS_WITH_SUBSTR(Schedule::from_json(json{{"base_lr", 0.1}}), "must be an object with a 'kind'");
}
