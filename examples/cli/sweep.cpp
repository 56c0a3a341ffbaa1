// kdlab sweep RECIPE --methods baseline,kd,dkd --seeds 0,1,2 --out DIR [--val-split N]
//                    [--teacher M --teacher-weights W] [--set key=value] [--set kd.T=4] ...
// kdlab report DIR [--prefix P] [--baseline NAME]
//
// sweep runs every (method, seed) in turn into DIR/<method>_seed<s> with the same recipe. A run
// that finished (model_last.safetensors) is skipped and an interrupted one resumes, so the
// command can be started again after a stop. `--set key=value` applies to every run,
// `--set METHOD.key=value` to that method's runs only ("baseline" is plain cross-entropy).
//
// report reads every DIR/<name>_seed<s>/metrics.jsonl and writes DIR/report.md: per method
// (name) mean ± std over seeds of the last-epoch and best-epoch test accuracy, of the
// validation-selected test accuracy when the runs had a validation split, the median seconds per
// epoch, and the gain over the baseline; plus DIR/accuracy.png (bars with ± std) and
// DIR/curves.png (every run's curves overlaid).
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <regex>

#include "distill/distill_run.h"
#include "analysis/report.h"
#include "examples/cli/cli.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;

namespace kd::cli {

void register_sweep(CLI::App& app) {
  auto* cmd = app.add_subcommand("sweep", "Run every (method, seed) of a recipe in turn, resumable, then report");
  struct Opts {
    std::string recipe, out, teacher, teacher_weights, student;
    std::vector<std::string> methods, sets;
    std::vector<int64_t> seeds{0};
    int64_t val_split = 0, epochs = 0;
    CommonOptions common;  // no --seed: --seeds lists them
    bool cache = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("recipe", o->recipe, "recipe file")->required();
  cmd->add_option("--methods", o->methods, "methods, comma-separated (baseline = cross-entropy only)")
      ->delimiter(',')
      ->required();
  cmd->add_option("--seeds", o->seeds, "seeds, comma-separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--out", o->out, "sweep directory")->required();
  cmd->add_option("--val-split", o->val_split, "hold out N training images as a validation split");
  cmd->add_option("--teacher", o->teacher, "teacher model");
  cmd->add_option("--teacher-weights", o->teacher_weights, "teacher weights");
  cmd->add_option("--student,--model", o->student, "student model");
  add_data_options(cmd, o->common);
  cmd->add_option("--epochs", o->epochs, "epochs");
  add_threads_option(cmd, o->common.threads);
  add_limit_options(cmd, o->common);
  cmd->add_flag("--teacher-cache", o->cache, "teacher cache for logits-only methods (shared: DIR/teacher_cache)");
  cmd->add_option("--set", o->sets, "key=value for every run, METHOD.key=value for one method (repeatable)");
  cmd->callback([o] {
    for (const std::string& method : o->methods)
      for (int64_t seed : o->seeds) {
        const std::string dir = fmt::format("{}/{}_seed{}", o->out, method, seed);
        if (fs::exists(dir + "/model_last.safetensors")) {
          fmt::print("== {} seed {}: finished already\n", method, seed);
          continue;
        }
        train::TrainConfig cfg;
        train::load_recipe(o->recipe, cfg);
        cfg.method = method;
        if (!o->student.empty()) cfg.model = o->student;
        if (!o->teacher.empty()) cfg.teacher = o->teacher;
        if (!o->teacher_weights.empty()) cfg.teacher_weights = o->teacher_weights;
        apply_common_options(o->common, cfg);
        if (o->epochs > 0) cfg.epochs = o->epochs;
        if (o->val_split > 0) cfg.val_split = o->val_split;
        cfg.seed = (uint64_t)seed;
        if (o->cache && distill::trains_with_distiller(method)) {  // the teacher cache serves Distillers
          cfg.teacher_cache = true;
          cfg.teacher_cache_dir = o->out + "/teacher_cache";
        }
        for (const std::string& s : o->sets) {
          auto dot = s.find('.'), eq = s.find('=');
          if (dot != std::string::npos && dot < eq) {  // METHOD.key=value
            if (s.substr(0, dot) == method) train::apply_distill_override(s.substr(dot + 1), cfg);
            continue;
          }
          train::apply_distill_override(s, cfg);  // a recipe key, or a parameter of the method
        }
        const bool resume = fs::exists(dir + "/checkpoint.safetensors");  // every regime resumes
        fmt::print("== {} seed {}{}\n", method, seed, resume ? " (resuming)" : "");
        train::RunSummary s = distill::run_method(cfg, dir, command_line(), resume);
        if (s.interrupted) return;
      }
    distill::write_sweep_report(o->out, "", "baseline");
  });

  auto* rep = app.add_subcommand("report", "Summarise a sweep: mean ± std per method, gain over the baseline, charts");
  struct RepOpts {
    std::string dir, prefix, baseline = "baseline";
  };
  auto r = std::make_shared<RepOpts>();
  rep->add_option("dir", r->dir, "folder holding <name>_seed<N> run directories")->required();
  rep->add_option("--prefix", r->prefix, "only runs named PREFIX<name>_seed<N> (the prefix is dropped)");
  rep->add_option("--baseline", r->baseline, "the method the gains are measured against")->capture_default_str();
  rep->callback([r] { distill::write_sweep_report(r->dir, r->prefix, r->baseline); });
}

}  // namespace kd::cli
