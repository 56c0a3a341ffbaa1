// run_recorder.h: what every command that trains writes into its run folder, written in one place.
//
// A run folder holds
//   config.json              the resolved recipe and whatever the regime adds, plus what every
//                            run records: command line, kdlab version, git revision, backends,
//                            the CPU's instruction set
//   metrics.jsonl            one JSON line per epoch (appended as the epoch ends)
//   checkpoint.safetensors   the training state after the last completed epoch (or Ctrl-C),
//                            nn/checkpoint.h's format, written atomically
//   model_last.safetensors   the final weights, model_best.safetensors the best test epoch's
//
// run_regime (train/regime.h), the driver of every regime (the epoch loop, ACD-U), records through
// this class, so the files mean the same for every regime, every file is written by the one atomic
// writer (engine/atomic_file.h), and resume cuts metrics.jsonl back to the epochs the checkpoint
// holds the same way.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "nn/module.h"

namespace kd::train {

class RunRecorder {
 public:
  // Makes the run folder (an error naming it when it cannot be made).
  explicit RunRecorder(std::string out_dir);

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  std::string checkpoint_path() const { return path("checkpoint.safetensors"); }
  std::string metrics_path() const { return path("metrics.jsonl"); }

  // config.json: `fields` plus command, kdlab_version, git_revision, backends and cpu_isa.
  void write_config(const std::string& command_line, const nlohmann::json& fields) const;

  // metrics.jsonl: a new run starts it empty; a resumed run keeps only the lines of the epochs the
  // checkpoint has (a crash after an epoch's line and before its checkpoint leaves one more).
  void start_metrics(bool resume, int64_t epochs_done) const;
  // Appends one epoch's line.
  void append_metrics(const nlohmann::json& line) const;

  // A plain state dict (kdlab eval reads it), with the model name and class count as metadata.
  // `input`: the modality the model was trained on, recorded when it is not rgb.
  void save_weights(const std::string& file, const nn::Module& model, const std::string& model_name,
                    int64_t num_classes, const std::string& input = "") const;

 private:
  std::string dir_;
};

// Writes a state dict as safetensors (atomically), with the model name, class count, kdlab version
// and git revision as metadata.
void save_weights(const std::string& path, const nn::Module& model, const std::string& model_name,
                  int64_t num_classes, const std::string& input = "");

}  // namespace kd::train
