// cli.h: each subcommand of `kdlab` registers itself on the CLI11 app in its own file.
// register_* adds the subcommand and its options; the callback runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "train/train.h"

namespace kd::cli {

void register_info(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_plot(CLI::App& app);
void register_data(CLI::App& app);
void register_bench(CLI::App& app);
void register_loss(CLI::App& app);
void register_distill(CLI::App& app);
void register_wkd_cost(CLI::App& app);
void register_dgkd_chain(CLI::App& app);
void register_peft(CLI::App& app);
void register_analyze(CLI::App& app);
void register_sweep(CLI::App& app);
void register_federate(CLI::App& app);
void register_export(CLI::App& app);

// ---- the options several commands share, each declared once with one help text

// What the shared options hold; each command adds the ones it takes. The defaults mean "not
// given" (the recipe's value, or the libraries' default thread count).
struct CommonOptions {
  std::string dataset, data_dir;  // --dataset, --data-dir
  int64_t threads = 0;            // --threads (0: KDLAB_NUM_THREADS or the core count)
  int64_t seed = -1;              // --seed (-1: the recipe's)
  int64_t train_limit = -1;       // --train-limit (-1: the recipe's)
  int64_t test_limit = -1;        // --test-limit (-1: the recipe's)
  int64_t epochs = 0, batch_size = 0;  // --epochs, --batch-size (0: the recipe's)
  double lr = 0;                  // --lr (0: the recipe's)
  std::string schedule;           // --schedule ("": the recipe's)
  std::string peft, init_weights, train_only;  // --peft, --init-weights, --train-only ("": the recipe's)
  std::string input, teacher_input, chroma_cue;  // --input / --student-input, --teacher-input, --chroma-cue
};
// Adds --dataset and --data-dir; returns the --dataset option (a command that needs a data set
// marks it ->required()).
CLI::Option* add_data_options(CLI::App* cmd, CommonOptions& o);
// Adds --threads, read into `threads` (CommonOptions::threads, or a command's own field).
void add_threads_option(CLI::App* cmd, int64_t& threads);
// Adds --seed.
void add_seed_option(CLI::App* cmd, CommonOptions& o);
// Adds --train-limit and --test-limit.
void add_limit_options(CLI::App* cmd, CommonOptions& o);
// Adds --epochs, --batch-size, --lr and --schedule (the commands that train).
void add_optimisation_options(CLI::App* cmd, CommonOptions& o);
// Adds --peft, --init-weights and --train-only (parameter-efficient fine-tuning, nn/peft.h).
void add_peft_options(CLI::App* cmd, CommonOptions& o);
// Adds --input (and, with `distill`, --student-input as its other name and --teacher-input) and
// --chroma-cue: the modalities of cross-modal runs (datasets/modality.h) and the MFH control's cue.
void add_modality_options(CLI::App* cmd, CommonOptions& o, bool distill);
// Copies the shared options that were given over `cfg` (a recipe's config); the others leave it as
// it is.
void apply_common_options(const CommonOptions& o, train::TrainConfig& cfg);

// The command line as typed, for run records.
std::string command_line();
void set_command_line(int argc, char** argv);

}  // namespace kd::cli
