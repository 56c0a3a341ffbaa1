// regime.h: a training regime, and the one driver that runs every regime.
//
// A regime is a way of training: the ordinary epoch loop (train.h: one network, a loss per
// batch, which `kdlab train` and every registry distillation method use), or ACD-U's two
// networks with selection and unlearning (distill/output/acd_u.h). The regime says what one
// epoch does and what its checkpoint holds; run_regime does everything else, once, for all of
// them:
//
//   resume          read checkpoint.safetensors: regime.prepare_resume(scalars), then the
//                   modules and optimizers it names, then regime.restore_state(checkpoint)
//   record          config.json (RunRecorder::write_config with regime.record()) and
//                   metrics.jsonl (cut back to the checkpoint's epochs on resume)
//   epochs          for each epoch left: regime.run_epoch(epoch) -> a metrics line and a test
//                   accuracy; the driver keeps the best (model_best.safetensors via
//                   regime.save_best), appends the line, prints it, and saves the checkpoint
//   non-finite      an epoch whose logged losses (train_loss, loss_*) are not finite stops the run
//                   with an error naming them and the last good checkpoint, before it is recorded
//   Ctrl-C          sets train::interrupted(); a regime may stop inside its epoch (the epoch loop
//                   does, saving its position) or finish it; the driver saves and stops
//   finish          regime.finish(recorder) writes the final weights
//
// Adding a regime = a class with these methods (docs/ARCHITECTURE.md, "How to add a regime"),
// and a registry row that names a function running it (distill/distiller.cpp).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "nn/checkpoint.h"
#include "train/recipe.h"
#include "train/run_recorder.h"

namespace kd::train {

// What one epoch of a regime reports to the driver.
struct EpochReport {
  nlohmann::json line = nlohmann::json::object();  // its metrics.jsonl fields (the driver adds epoch, best_acc)
  double test_accuracy = 0;   // of the network that model_best.safetensors keeps
  double seconds = 0;         // training time of the epoch (evaluation excluded)
  std::string summary;        // the printed line after "epoch e/E: " (the driver adds the best so far)
  std::string speed;          // printed last ("12.3s, 950 img/s")
  bool interrupted = false;   // stopped by Ctrl-C inside the epoch: no line, the checkpoint keeps the position
  std::string position;       // when interrupted: where, for the message ("step 232")
};

class Regime {
 public:
  virtual ~Regime() = default;
  // config.json's fields besides the command line and versions (the config, data sets, models).
  virtual nlohmann::json record() = 0;
  // What the checkpoint holds: the modules and labelled optimizers (asked at every save and on
  // resume, after prepare_resume), and the regime's own scalars and tensors (save_state writes
  // them into info; the driver's scalars best_accuracy, best_epoch, last_accuracy, total_time
  // go beside them).
  virtual nn::LabeledModules modules() = 0;
  virtual nn::LabeledOptimizers optimizers() = 0;
  virtual void save_state(nn::TrainingCheckpoint& info) = 0;
  // Before the checkpoint loads: build what the saved run had that a fresh one has not (ACD-U's
  // unlearning snapshots), from the checkpoint's scalars; errors when they are not this regime's.
  virtual void prepare_resume(const nlohmann::json& scalars) { (void)scalars; }
  virtual void restore_state(const nn::TrainingCheckpoint& checkpoint) = 0;
  // Trains epoch `epoch` (counted from 0) and evaluates.
  virtual EpochReport run_epoch(int64_t epoch) = 0;
  // Saves the weights of the network test_accuracy measures as model_best.safetensors.
  virtual void save_best(const RunRecorder& recorder) = 0;
  // At the end of an uninterrupted run: the final weights (model_last.safetensors, ...).
  virtual void finish(const RunRecorder& recorder) = 0;
  // What one of its epochs is called in the printed lines ("epoch"; a federation's "round").
  virtual std::string epoch_name() const { return "epoch"; }
};

struct RunSummary {
  double last_accuracy = 0, best_accuracy = 0;
  int64_t best_epoch = 0;  // from 1
  double seconds_per_epoch = 0;
  bool interrupted = false;
};

// Runs `regime` for config.epochs into out_dir, from its checkpoint when `resume`.
RunSummary run_regime(Regime& regime, const TrainConfig& config, const std::string& out_dir,
                      const std::string& command_line, bool resume);

// True once Ctrl-C was pressed during run_regime (regimes that stop mid-epoch poll it).
bool interrupted();

}  // namespace kd::train
