// kdlab train --model M --dataset D --data-dir DIR [--recipe R] [--epochs E ...] --out RUN_DIR [--resume]
#include <fmt/format.h>

#include "train/train.h"
#include "examples/cli/cli.h"

namespace kd::cli {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model with cross-entropy (a teacher or a baseline student)");
  struct Opts {
    std::string recipe, out, model;
    std::vector<std::string> sets;
    CommonOptions common;
    bool resume = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--recipe", o->recipe, "recipe file (JSON; recipes/ holds the standard ones)");
  cmd->add_option("--out", o->out, "run directory")->required();
  cmd->add_option("--model", o->model, "model name (kdlab info --list)");
  add_data_options(cmd, o->common);
  add_optimisation_options(cmd, o->common);
  add_peft_options(cmd, o->common);
  add_modality_options(cmd, o->common, /*distill=*/false);
  add_seed_option(cmd, o->common);
  add_threads_option(cmd, o->common.threads);
  add_limit_options(cmd, o->common);
  cmd->add_option("--set", o->sets, "override any recipe key: --set key=value (repeatable)");
  cmd->add_flag("--resume", o->resume, "continue from RUN_DIR/checkpoint.safetensors");
  cmd->callback([o] {
    train::TrainConfig cfg;
    if (!o->recipe.empty()) train::load_recipe(o->recipe, cfg);
    if (!o->model.empty()) cfg.model = o->model;
    apply_common_options(o->common, cfg);
    for (const auto& s : o->sets) train::apply_override_string(s, cfg);
    train::Run run = train::prepare_run(cfg, o->out, command_line());
    fmt::print("{}\n{}\nmodel {} ({} parameters), {} epochs, batch {}, run directory {}\n", run.train_set.summary(),
               run.test_set.summary(), cfg.model, run.model->num_parameters(), cfg.epochs, cfg.batch_size, o->out);
    train::RunSummary s = train::run_training(run, o->resume);
    if (!s.interrupted)
      fmt::print("done: last test accuracy {:.4f}, best {:.4f} (epoch {}), {:.1f} s/epoch\n", s.last_accuracy,
                 s.best_accuracy, s.best_epoch, s.seconds_per_epoch);
  });
}

}  // namespace kd::cli
