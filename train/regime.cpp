// regime.cpp: run_regime, the one driver of every training regime (see regime.h).
#include "train/regime.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "nn/safetensors.h"
#include "train/train.h"

namespace fs = std::filesystem;

namespace kd::train {

// ------------------------------------------------------------------ Ctrl-C
// The one piece of process-wide state here: a signal can only talk to a run through a flag.
static std::atomic<bool> g_interrupted{false};
static void on_sigint(int) { g_interrupted = true; }
bool interrupted() { return g_interrupted; }

namespace {

// Installs the Ctrl-C handler for the life of a run and puts the old one back, also when the run
// ends with an error (a non-finite loss, a full disk).
struct SigintScope {
  using Handler = void (*)(int);
  Handler old;
  SigintScope() {
    g_interrupted = false;
    old = std::signal(SIGINT, on_sigint);
  }
  ~SigintScope() { std::signal(SIGINT, old); }
};

}  // namespace

RunSummary run_regime(Regime& regime, const TrainConfig& cfg, const std::string& out_dir,
                      const std::string& command_line, bool resume) {
  KD_CHECK(cfg.epochs > 0 && cfg.batch_size > 0, "epochs ({}) and batch_size ({}) must be positive", cfg.epochs,
           cfg.batch_size);
  const RunRecorder recorder(out_dir);
  const std::string ckpt = recorder.checkpoint_path();

  // what the driver keeps across epochs (and in the checkpoint, beside the regime's state)
  double best_acc = -1, last_acc = 0, total_time = 0;
  int64_t best_epoch = 0, start_epoch = 0, timed_epochs = 0;
  auto save_checkpoint = [&](int64_t epochs_done) {
    nn::TrainingCheckpoint info;
    info.epoch = epochs_done;
    regime.save_state(info);
    info.scalars["best_accuracy"] = best_acc;
    info.scalars["best_epoch"] = best_epoch;
    info.scalars["last_accuracy"] = last_acc;
    info.scalars["total_time"] = total_time;
    info.scalars["timed_epochs"] = timed_epochs;
    nn::save_training_checkpoint(ckpt, regime.modules(), regime.optimizers(), info);
  };

  if (resume) {
    KD_CHECK(fs::exists(ckpt), "--resume: no checkpoint at '{}' (start without --resume)", ckpt);
    {  // the regime first builds what the saved run had (snapshots, a thawed optimizer)
      const nn::SafetensorsFile file = nn::load_safetensors(ckpt);
      const auto it = file.metadata.find("scalars");
      const nlohmann::json scalars =
          nlohmann::json::parse(it == file.metadata.end() ? std::string("{}") : it->second, nullptr, false);
      KD_CHECK(scalars.is_object(), "--resume: '{}' has unreadable scalars (not a kdlab training checkpoint?)", ckpt);
      regime.prepare_resume(scalars);
    }
    const nn::TrainingCheckpoint ck = nn::load_training_checkpoint(ckpt, regime.modules(), regime.optimizers());
    start_epoch = ck.epoch;
    best_acc = ck.scalars.value("best_accuracy", -1.0);
    best_epoch = ck.scalars.value("best_epoch", (int64_t)0);
    last_acc = ck.scalars.value("last_accuracy", 0.0);
    total_time = ck.scalars.value("total_time", 0.0);
    timed_epochs = ck.scalars.value("timed_epochs", (int64_t)0);
    regime.restore_state(ck);
    const int64_t batch = ck.scalars.value("batch_in_epoch", (int64_t)0);
    fmt::print("resuming from {} at epoch {}{}\n", ckpt, start_epoch + 1,
               batch > 0 ? fmt::format(" batch {}", batch) : std::string());
  }
  recorder.start_metrics(resume, start_epoch);
  recorder.write_config(command_line, regime.record());

  const SigintScope sigint;
  RunSummary summary;
  for (int64_t epoch = start_epoch; epoch < cfg.epochs; ++epoch) {
    EpochReport r = regime.run_epoch(epoch);
    if (r.interrupted) {  // Ctrl-C inside the epoch: the regime's state holds the position
      save_checkpoint(epoch);
      fmt::print("\ninterrupted: saved {} at epoch {}{}; continue with --resume\n", ckpt, epoch + 1,
                 r.position.empty() ? "" : " " + r.position);
      summary.interrupted = true;
      break;
    }
    // The non-finite-loss policy, for every regime: an epoch whose logged losses are not finite
    // stops the run before it is recorded or checkpointed (the epoch loop stops earlier, at the
    // step, and can skip such steps: skip_nonfinite).
    std::string bad;
    for (auto& [key, value] : r.line.items())
      if ((key == "train_loss" || key.rfind("loss_", 0) == 0) && value.is_number() &&
          !std::isfinite(value.get<double>()))
        bad += (bad.empty() ? "" : ", ") + key;
    KD_CHECK(bad.empty(), "the loss became non-finite in epoch {} ({}); the last good checkpoint is {} (lower the "
             "learning rate, then --resume)", epoch + 1, bad, ckpt);
    last_acc = r.test_accuracy;
    if (r.test_accuracy > best_acc) {
      best_acc = r.test_accuracy;
      best_epoch = epoch + 1;
      regime.save_best(recorder);
    }
    r.line["epoch"] = epoch + 1;
    r.line["best_acc"] = best_acc;
    recorder.append_metrics(r.line);
    fmt::print("{} {}/{}: {} (best {:.4f} @ {}) | {}\n", regime.epoch_name(), epoch + 1, cfg.epochs, r.summary,
               best_acc, best_epoch, r.speed);
    total_time += r.seconds;
    ++timed_epochs;
    const bool stop = interrupted() && epoch + 1 < cfg.epochs;  // Ctrl-C during the evaluation
    if (cfg.save_every_epoch || epoch + 1 == cfg.epochs || stop) save_checkpoint(epoch + 1);
    if (stop) {
      fmt::print("\ninterrupted: saved {} after epoch {}; continue with --resume\n", ckpt, epoch + 1);
      summary.interrupted = true;
      break;
    }
  }
  if (!summary.interrupted) regime.finish(recorder);
  summary.last_accuracy = last_acc;
  summary.best_accuracy = std::max(best_acc, 0.0);
  summary.best_epoch = best_epoch;
  summary.seconds_per_epoch = timed_epochs ? total_time / (double)timed_epochs : 0.0;
  return summary;
}

}  // namespace kd::train
