// schedule.h: learning-rate schedules as pure functions of (epoch, iteration, iters_per_epoch).
//
// Epochs count from 0 here, as PyTorch's schedulers count them (`last_epoch`): the first epoch
// is epoch 0, and `iter` is the index of the batch inside the epoch (0 .. iters_per_epoch-1).
// A schedule stepping per iteration changes the LR at every batch (step s = epoch *
// iters_per_epoch + iter); one stepping per epoch keeps it constant within an epoch (s = epoch).
//
// The training loop asks schedule.lr(epoch, iter, n) (or factor(), the LR over base_lr, which
// Optimizer::scale_lr applies to every group, so groups with different LRs keep their ratio).
//
//   constant   base_lr
//   multistep  base_lr * gamma^k, k = number of milestones m with m <= epoch. This is PyTorch's
//              MultiStepLR stepped per epoch, and exactly mdistiller's adjust_learning_rate,
//              which counts epochs from 1 and uses k = sum(epoch_from_1 > milestones): with
//              milestones 150, 180, 210, mdistiller's epochs 1..150 (our 0..149) use base_lr,
//              and its epoch 151 (our epoch 150) is the first with base_lr * 0.1; its 181 (our
//              180) the first with 0.01, its 211 (our 210) the first with 0.001.
//   warmup     linear warm-up over W steps, then base_lr: for s < W,
//              lr = base_lr * (f0 + (1 - f0) * s / W) (f0 = warmup_start_factor; PyTorch's
//              LinearLR with start_factor f0 and total_iters W); W = warmup_epochs (per epoch)
//              or warmup_epochs * iters_per_epoch (per iteration).
//   cosine     the same warm-up, then cosine annealing from base_lr to min_lr over the
//              remaining S - W steps (S = total_epochs, times iters_per_epoch per iteration):
//              lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2.
//              Steps past S stay at min_lr.
//   onecycle   PyTorch's OneCycleLR with its defaults (anneal_strategy "cos", pct_start 0.3,
//              div_factor 25, final_div_factor 1e4, two phases): from max_lr / div_factor up
//              to max_lr (base_lr) over the first pct_start of the S steps, then down to
//              max_lr / div_factor / final_div_factor, each phase by a half cosine. Only the
//              LR is scheduled (OneCycleLR's momentum cycling is not reproduced).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kd::nn {

struct Schedule {
  std::string kind = "constant";  // "constant", "multistep", "warmup", "cosine", "onecycle"
  double base_lr = 0.1;           // the peak LR (onecycle: max_lr)
  bool per_iteration = true;      // false: the LR changes only between epochs
  int64_t total_epochs = 0;       // cosine, onecycle
  // multistep
  std::vector<int64_t> milestones;  // epochs (from 0) at which the LR is multiplied by gamma
  double gamma = 0.1;
  // warmup, cosine
  int64_t warmup_epochs = 0;
  double warmup_start_factor = 0.0;
  double min_lr = 0.0;  // cosine's final LR
  // onecycle
  double pct_start = 0.3, div_factor = 25.0, final_div_factor = 1e4;
  bool three_phase = false;

  // The LR for the batch `iter` of epoch `epoch` (both from 0).
  double lr(int64_t epoch, int64_t iter, int64_t iters_per_epoch) const;
  // lr / base_lr
  double factor(int64_t epoch, int64_t iter, int64_t iters_per_epoch) const;

  // For checkpoints and run records; from_json(to_json()) gives the same schedule.
  nlohmann::json to_json() const;
  static Schedule from_json(const nlohmann::json& j);
  std::string describe() const;  // one line, e.g. "cosine(lr 0.3, 57 epochs, warm-up 1, per iteration)"
};

// ---- building schedules
Schedule constant_schedule(double lr);
Schedule multistep_schedule(double lr, std::vector<int64_t> milestones, double gamma = 0.1);
Schedule warmup_schedule(double lr, int64_t warmup_epochs, bool per_iteration = true,
                         double warmup_start_factor = 0.0);
Schedule cosine_schedule(double lr, int64_t total_epochs, int64_t warmup_epochs = 0, double min_lr = 0.0,
                         bool per_iteration = true, double warmup_start_factor = 0.0);
Schedule onecycle_schedule(double max_lr, int64_t total_epochs, bool per_iteration = true, double pct_start = 0.3,
                           double div_factor = 25.0, double final_div_factor = 1e4, bool three_phase = false);

// ---- the pure functions behind them (step s counts from 0; W, S in the same unit as s)
double multistep_lr(double base_lr, const std::vector<int64_t>& milestones, double gamma, int64_t epoch);
double warmup_cosine_lr(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps,
                        double warmup_start_factor, int64_t step, bool anneal = true);
double onecycle_lr(double max_lr, int64_t total_steps, int64_t step, double pct_start = 0.3, double div_factor = 25.0,
                   double final_div_factor = 1e4, bool three_phase = false);
// mdistiller's adjust_learning_rate verbatim: epochs from 1, steps = sum(epoch > stages),
// lr = base_lr * rate^steps. Equal to multistep_lr(base_lr, stages, rate, epoch_from_1 - 1).
double mdistiller_lr(double base_lr, const std::vector<int64_t>& stages, double rate, int64_t epoch_from_1);

}  // namespace kd::nn
