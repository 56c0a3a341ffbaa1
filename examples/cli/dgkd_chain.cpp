// kdlab dgkd-chain --teacher M --teacher-weights W --assistants A1,A2,... [--student S]
//                  [--recipe R] [--set key=value ...] --dataset D --data-dir DIR --out DIR
//
// DGKD's assistant chain (Son et al. 2021): the assistants trained in order, largest first, each
// from every guide above it, then the student from all of them; one run folder per link
// (distill/output/dgkd_chain.h). Run it again after a stop: finished links are skipped, an
// interrupted one resumes.
#include "distill/output/dgkd_chain.h"
#include "examples/cli/cli.h"

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
    distill::run_dgkd_chain({base, o->assistants, o->student, o->out}, command_line());
  });
}

}  // namespace kd::cli
