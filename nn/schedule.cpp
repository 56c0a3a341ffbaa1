#include "nn/schedule.h"

#include <cmath>

#include "engine/error.h"

namespace kd::nn {

using json = nlohmann::json;

// ------------------------------------------------------------------------------ pure functions

double multistep_lr(double base_lr, const std::vector<int64_t>& milestones, double gamma, int64_t epoch) {
  int k = 0;  // milestones already passed: m <= epoch (PyTorch's MultiStepLR)
  for (int64_t m : milestones)
    if (m <= epoch) ++k;
  return base_lr * std::pow(gamma, k);
}

double mdistiller_lr(double base_lr, const std::vector<int64_t>& stages, double rate, int64_t epoch_from_1) {
  // steps = np.sum(epoch > np.asarray(cfg.SOLVER.LR_DECAY_STAGES))
  int steps = 0;
  for (int64_t s : stages)
    if (epoch_from_1 > s) ++steps;
  return steps > 0 ? base_lr * std::pow(rate, steps) : base_lr;
}

double warmup_cosine_lr(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps,
                        double warmup_start_factor, int64_t step, bool anneal) {
  KD_CHECK(step >= 0, "LR schedule: negative step {}", step);
  if (step < warmup_steps) {
    // linear from base_lr * f0 at step 0 towards base_lr at step W
    double f = warmup_start_factor + (1.0 - warmup_start_factor) * (double)step / (double)warmup_steps;
    return base_lr * f;
  }
  if (!anneal) return base_lr;
  KD_CHECK(total_steps > warmup_steps, "cosine schedule: {} total steps leave nothing after {} warm-up steps",
           total_steps, warmup_steps);
  double progress = std::min(1.0, (double)(step - warmup_steps) / (double)(total_steps - warmup_steps));
  return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

// OneCycleLR._annealing_cos: from start to end as pct goes 0 -> 1.
static double annealing_cos(double start, double end, double pct) {
  double cos_out = std::cos(M_PI * pct) + 1.0;
  return end + (start - end) / 2.0 * cos_out;
}

double onecycle_lr(double max_lr, int64_t total_steps, int64_t step, double pct_start, double div_factor,
                   double final_div_factor, bool three_phase) {
  KD_CHECK(total_steps > 0, "onecycle schedule needs total steps > 0, got {}", total_steps);
  KD_CHECK(step >= 0 && step < total_steps,
           "onecycle schedule: step {} is outside the {} steps it was built for (set total_epochs to the length "
           "of the run)",
           step, total_steps);
  const double initial_lr = max_lr / div_factor;
  const double min_lr = initial_lr / final_div_factor;
  struct Phase {
    double end_step, start_lr, end_lr;
  };
  std::vector<Phase> phases;
  if (three_phase) {
    phases = {{pct_start * (double)total_steps - 1, initial_lr, max_lr},
              {2 * pct_start * (double)total_steps - 2, max_lr, initial_lr},
              {(double)total_steps - 1, initial_lr, min_lr}};
  } else {
    phases = {{pct_start * (double)total_steps - 1, initial_lr, max_lr}, {(double)total_steps - 1, max_lr, min_lr}};
  }
  // The loop of OneCycleLR.get_lr.
  double start_step = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    const Phase& ph = phases[i];
    if ((double)step <= ph.end_step || i + 1 == phases.size()) {
      double pct = ((double)step - start_step) / (ph.end_step - start_step);
      return annealing_cos(ph.start_lr, ph.end_lr, pct);
    }
    start_step = ph.end_step;
  }
  return min_lr;  // not reached
}

// ------------------------------------------------------------------------------ Schedule

double Schedule::lr(int64_t epoch, int64_t iter, int64_t iters_per_epoch) const {
  KD_CHECK(epoch >= 0 && iter >= 0 && iters_per_epoch > 0 && iter < iters_per_epoch,
           "LR schedule: bad position epoch {} iteration {} of {} per epoch", epoch, iter, iters_per_epoch);
  // The step and the length of the run in the unit the schedule steps in.
  const int64_t unit = per_iteration ? iters_per_epoch : 1;
  const int64_t step = per_iteration ? epoch * iters_per_epoch + iter : epoch;
  if (kind == "constant") return base_lr;
  if (kind == "multistep") return multistep_lr(base_lr, milestones, gamma, epoch);
  if (kind == "warmup")
    return warmup_cosine_lr(base_lr, base_lr, warmup_epochs * unit, 0, warmup_start_factor, step, false);
  if (kind == "cosine")
    return warmup_cosine_lr(base_lr, min_lr, warmup_epochs * unit, total_epochs * unit, warmup_start_factor, step);
  if (kind == "onecycle")
    return onecycle_lr(base_lr, total_epochs * unit, step, pct_start, div_factor, final_div_factor, three_phase);
  throw Error(fmt::format("unknown LR schedule '{}' (known: constant, multistep, warmup, cosine, onecycle)", kind));
}

double Schedule::factor(int64_t epoch, int64_t iter, int64_t iters_per_epoch) const {
  KD_CHECK(base_lr > 0, "LR schedule: factor() needs base_lr > 0, got {}", base_lr);
  return lr(epoch, iter, iters_per_epoch) / base_lr;
}

json Schedule::to_json() const {
  return {{"kind", kind},
          {"base_lr", base_lr},
          {"per_iteration", per_iteration},
          {"total_epochs", total_epochs},
          {"milestones", milestones},
          {"gamma", gamma},
          {"warmup_epochs", warmup_epochs},
          {"warmup_start_factor", warmup_start_factor},
          {"min_lr", min_lr},
          {"pct_start", pct_start},
          {"div_factor", div_factor},
          {"final_div_factor", final_div_factor},
          {"three_phase", three_phase}};
}

Schedule Schedule::from_json(const json& j) {
  KD_CHECK(j.is_object() && j.contains("kind"), "LR schedule JSON must be an object with a 'kind', got {}",
           j.dump());
  Schedule s;
  s.kind = j.at("kind").get<std::string>();
  // Fields left out keep their defaults.
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) field = j.at(key).get<std::decay_t<decltype(field)>>();
  };
  get("base_lr", s.base_lr);
  get("per_iteration", s.per_iteration);
  get("total_epochs", s.total_epochs);
  get("milestones", s.milestones);
  get("gamma", s.gamma);
  get("warmup_epochs", s.warmup_epochs);
  get("warmup_start_factor", s.warmup_start_factor);
  get("min_lr", s.min_lr);
  get("pct_start", s.pct_start);
  get("div_factor", s.div_factor);
  get("final_div_factor", s.final_div_factor);
  get("three_phase", s.three_phase);
  return s;
}

std::string Schedule::describe() const {
  const char* unit = per_iteration ? "per iteration" : "per epoch";
  if (kind == "constant") return fmt::format("constant(lr {})", base_lr);
  if (kind == "multistep")
    return fmt::format("multistep(lr {}, x{} at epochs {})", base_lr, gamma, fmt::join(milestones, ", "));
  if (kind == "warmup") return fmt::format("warmup(lr {}, warm-up {} epochs, {})", base_lr, warmup_epochs, unit);
  if (kind == "cosine")
    return fmt::format("cosine(lr {} -> {}, {} epochs, warm-up {}, {})", base_lr, min_lr, total_epochs,
                       warmup_epochs, unit);
  if (kind == "onecycle")
    return fmt::format("onecycle(max lr {}, {} epochs, pct_start {}, div {}, final div {}, {})", base_lr,
                       total_epochs, pct_start, div_factor, final_div_factor, unit);
  return fmt::format("unknown schedule '{}'", kind);
}

// ------------------------------------------------------------------------------ builders

Schedule constant_schedule(double lr) {
  Schedule s;
  s.kind = "constant";
  s.base_lr = lr;
  return s;
}

Schedule multistep_schedule(double lr, std::vector<int64_t> milestones, double gamma) {
  Schedule s;
  s.kind = "multistep";
  s.base_lr = lr;
  s.per_iteration = false;
  s.milestones = std::move(milestones);
  s.gamma = gamma;
  return s;
}

Schedule warmup_schedule(double lr, int64_t warmup_epochs, bool per_iteration, double warmup_start_factor) {
  KD_CHECK(warmup_epochs >= 0, "warm-up epochs must be >= 0, got {}", warmup_epochs);
  Schedule s;
  s.kind = "warmup";
  s.base_lr = lr;
  s.warmup_epochs = warmup_epochs;
  s.per_iteration = per_iteration;
  s.warmup_start_factor = warmup_start_factor;
  return s;
}

Schedule cosine_schedule(double lr, int64_t total_epochs, int64_t warmup_epochs, double min_lr, bool per_iteration,
                         double warmup_start_factor) {
  KD_CHECK(total_epochs > warmup_epochs && warmup_epochs >= 0,
           "cosine schedule: need 0 <= warm-up epochs ({}) < total epochs ({})", warmup_epochs, total_epochs);
  Schedule s;
  s.kind = "cosine";
  s.base_lr = lr;
  s.total_epochs = total_epochs;
  s.warmup_epochs = warmup_epochs;
  s.min_lr = min_lr;
  s.per_iteration = per_iteration;
  s.warmup_start_factor = warmup_start_factor;
  return s;
}

Schedule onecycle_schedule(double max_lr, int64_t total_epochs, bool per_iteration, double pct_start,
                           double div_factor, double final_div_factor, bool three_phase) {
  KD_CHECK(total_epochs > 0, "onecycle schedule needs total epochs > 0, got {}", total_epochs);
  KD_CHECK(pct_start > 0 && pct_start < 1, "onecycle schedule: pct_start must lie in (0, 1), got {}", pct_start);
  Schedule s;
  s.kind = "onecycle";
  s.base_lr = max_lr;
  s.total_epochs = total_epochs;
  s.per_iteration = per_iteration;
  s.pct_start = pct_start;
  s.div_factor = div_factor;
  s.final_div_factor = final_div_factor;
  s.three_phase = three_phase;
  return s;
}

}  // namespace kd::nn
