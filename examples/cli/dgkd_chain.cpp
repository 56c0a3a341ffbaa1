// kdlab dgkd-chain --teacher M --teacher-weights W --assistants A1,A2,... [--student S]
//                  [--recipe R] [--set key=value ...] --dataset D --data-dir DIR --out DIR
//
// DGKD's assistant chain (Son et al. 2021): the assistants are trained in order, largest first,
// each by DGKD from every guide above it (the teacher and the assistants already trained), and
// then the student from all of them:
//   OUT/1_<A1>  guided by the teacher
//   OUT/2_<A2>  guided by the teacher and A1
//   ...
//   OUT/student_<S>  guided by the teacher and every assistant
// drop_num (--set drop_num=N) is capped at guides - 1 for the first links, where there are fewer
// guides to drop. A link whose model_last.safetensors exists is skipped, an interrupted one
// resumes, so the command can be run again after a stop.
#include <filesystem>
#include <fmt/format.h>

#include "distill/distill_run.h"
#include "examples/cli/cli.h"

namespace fs = std::filesystem;

namespace kd::cli {

void register_dgkd_chain(CLI::App& app) {
  auto* cmd = app.add_subcommand("dgkd-chain", "Train DGKD's assistant chain in order, then the student");
  struct Opts {
    std::string recipe, out, teacher, teacher_weights, student;
    std::vector<std::string> assistants, sets;
    int64_t epochs = 0;
    CommonOptions common;
    bool cache = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--recipe", o->recipe, "recipe for every link");
  cmd->add_option("--out", o->out, "folder for the chain's runs")->required();
  cmd->add_option("--teacher", o->teacher, "teacher model name")->required();
  cmd->add_option("--teacher-weights", o->teacher_weights, "teacher weights (.safetensors)")->required();
  cmd->add_option("--assistants", o->assistants, "assistant models, largest first (comma-separated)")
      ->delimiter(',')
      ->required();
  cmd->add_option("--student", o->student, "the final student (optional)");
  add_data_options(cmd, o->common);
  cmd->add_option("--epochs", o->epochs, "epochs of every link");
  add_seed_option(cmd, o->common);
  add_threads_option(cmd, o->common.threads);
  add_limit_options(cmd, o->common);
  cmd->add_flag("--teacher-cache", o->cache, "cache the guides' logits (one cache per link)");
  cmd->add_option("--set", o->sets, "a recipe key or a dgkd hyper-parameter (repeatable)");
  cmd->callback([o] {
    train::TrainConfig base;
    if (!o->recipe.empty()) train::load_recipe(o->recipe, base);
    apply_common_options(o->common, base);
    if (o->epochs > 0) base.epochs = o->epochs;
    base.teacher_cache = o->cache;
    base.method = "dgkd";
    base.teacher = o->teacher;
    base.teacher_weights = o->teacher_weights;
    for (const auto& s : o->sets) train::apply_distill_override(s, base);
    train::set_threads(base.threads);

    std::vector<std::pair<std::string, std::string>> links;  // (model, run directory)
    for (size_t i = 0; i < o->assistants.size(); ++i)
      links.push_back({o->assistants[i], fmt::format("{}/{}_{}", o->out, i + 1, o->assistants[i])});
    if (!o->student.empty()) links.push_back({o->student, fmt::format("{}/student_{}", o->out, o->student)});

    std::vector<std::string> guides_done;  // "model:weights" of the assistants trained so far
    for (size_t link = 0; link < links.size(); ++link) {
      const auto& [model, dir] = links[link];
      const std::string weights = dir + "/model_last.safetensors";
      train::TrainConfig cfg = base;
      cfg.model = model;
      cfg.assistants = guides_done;
      // drop_num can be at most guides - 1 (teacher + assistants so far)
      const int64_t guides = 1 + (int64_t)guides_done.size();
      int64_t drop = cfg.method_params.value("drop_num", (int64_t)1);
      cfg.method_params["drop_num"] = std::min<int64_t>(drop, guides - 1);
      if (fs::exists(weights)) {
        fmt::print("== {}: already trained ({})\n", model, weights);
      } else {
        fmt::print("== {} guided by {}{}\n", model, o->teacher,
                   guides_done.empty() ? "" : " + " + fmt::format("{}", fmt::join(guides_done, " + ")));
        distill::DistillSetup setup;
        train::Run run = distill::prepare_distill_run(cfg, dir, command_line(), setup);
        train::RunSummary s = train::run_training(run, fs::exists(dir + "/checkpoint.safetensors"));
        if (s.interrupted) return;
        fmt::print("{}: last test accuracy {:.4f}, best {:.4f}\n", model, s.last_accuracy, s.best_accuracy);
      }
      if (link < o->assistants.size()) guides_done.push_back(model + ":" + weights);  // the student guides no one
    }
  });
}

}  // namespace kd::cli
