// checkpoint.h: training checkpoints, so that an interrupted run resumes where it stopped.
//
// A checkpoint is one .safetensors file (readable by the Python library too):
//   tensors   "model.<name>"   the state dict of each module, prefixed by the module's label
//                              ("model." for the network; e.g. "helpers." for a distiller's
//                              trainable helper modules)
//             "optim.<name>"   the optimizer's state tensors (momentum buffers, Adam moments)
//             "optim_<label>.<name>"  those of a further, labelled optimizer (a regime with two
//                              networks, ACD-U, keeps one optimizer each)
//             "state.<name>"   the regime's own tensors (TrainingCheckpoint::tensors: loss
//                              histories, selection masks), returned as they were saved
//   metadata  "format"         "kdlab.training_checkpoint", "format_version" "1"
//             "epoch", "step"  epochs completed and optimizer steps taken (decimal text)
//             "schedule"       the LR schedule as JSON (Schedule::to_json), or "null"
//             "rng.<name>"     each generator's Generator::state()
//             "optim"          the optimizer's scalars as JSON (type, groups, options); "optim_<label>"
//             "scalars"        any other JSON the caller keeps (best accuracy, config, ...)
//             "kdlab_version", "git_revision"
// The file is written atomically (path.tmp, then rename), so a crash while saving leaves the
// previous checkpoint intact.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/schedule.h"

namespace kd::nn {

struct TrainingCheckpoint {
  int64_t epoch = 0;  // epochs completed
  int64_t step = 0;   // optimizer steps taken
  nlohmann::json schedule;                        // Schedule::to_json(), or null
  std::map<std::string, std::string> rng_states;  // name -> Generator::state()
  nlohmann::json scalars = nlohmann::json::object();
  NamedTensors tensors;  // saved as "state.<name>"; any dtype; no shape is checked on load
};

// The modules a checkpoint holds, each under a label that prefixes its tensor names.
using LabeledModules = std::vector<std::pair<std::string, Module*>>;
// The optimizers a checkpoint holds: label "" is the main one ("optim."), any other label is
// saved as "optim_<label>.".
using LabeledOptimizers = std::vector<std::pair<std::string, Optimizer*>>;

void save_training_checkpoint(const std::string& path, const LabeledModules& modules,
                              const LabeledOptimizers& optimizers, const TrainingCheckpoint& info);
TrainingCheckpoint load_training_checkpoint(const std::string& path, const LabeledModules& modules,
                                            const LabeledOptimizers& optimizers);

void save_training_checkpoint(const std::string& path, const LabeledModules& modules, Optimizer* optimizer,
                              const TrainingCheckpoint& info);
// The common case: one model (label "model") and its optimizer.
void save_training_checkpoint(const std::string& path, Module& model, Optimizer& optimizer,
                              const TrainingCheckpoint& info);

// Loads every module's state (strictly: each must match the file exactly) and the optimizer's
// state, after checking all of it against the file, and returns the rest. The caller restores
// generators from rng_states (Generator::set_state) and rebuilds the schedule with
// Schedule::from_json.
TrainingCheckpoint load_training_checkpoint(const std::string& path, const LabeledModules& modules,
                                            Optimizer* optimizer);
TrainingCheckpoint load_training_checkpoint(const std::string& path, Module& model, Optimizer& optimizer);
// The same from a checkpoint file's bytes held in memory; `source` names it in error messages.
TrainingCheckpoint parse_training_checkpoint(const std::string& bytes, const std::string& source,
                                             const LabeledModules& modules, Optimizer* optimizer);

// Rows of doubles kept bit for bit in a checkpoint: an (R, N) int64 tensor of their bit patterns
// (a safetensors reader turns F64 into f32, which would round them). doubles_from_exact checks
// the shape ((R, N) int64, `what` names the tensor in the error) and gives the rows back.
Tensor exact_doubles(const std::vector<std::vector<double>>& rows);
std::vector<std::vector<double>> doubles_from_exact(const Tensor& t, int64_t N, const std::string& what);

// Helpers for the RNG states: {name: gen.state()} and back (every named generator must be
// present in the checkpoint).
std::map<std::string, std::string> rng_states(const std::vector<std::pair<std::string, const Generator*>>& gens);
void restore_rng_states(const TrainingCheckpoint& ckpt, const std::vector<std::pair<std::string, Generator*>>& gens);

}  // namespace kd::nn
