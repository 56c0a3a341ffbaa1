// kdlab distill --teacher M --teacher-weights W --student M --method NAME [--set key=value ...]
//               [--recipe R] --dataset D --data-dir DIR --out RUN_DIR [--teacher-cache] [--resume]
//               [--teacher MODEL:WEIGHTS --teacher MODEL:WEIGHTS --set teacher_combine=mean|weighted|confidence]
//               [--method dkd+at --set dkd.beta=2 --set at.weight=0.5 --set at.schedule=warmup:5]
// kdlab distill --list [--method NAME]
#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/distill_run.h"
#include "examples/cli/cli.h"

namespace kd::cli {

// `kdlab distill --list --method NAME`: the method's options from its table (distill/options.h),
// one line each: key, type, default, help.
static void print_method_options(const std::string& method) {
  const distill::DistillerEntry& e = distill::registry_entry(method);  // an error listing the methods if none
  const std::vector<distill::OptionInfo> rows = e.options();
  const std::string title = fmt::format("{} ({}): {}", e.name, e.family, e.description);
  if (rows.empty()) {
    fmt::print("{}\n\n  no options\n", title);
    return;
  }
  size_t key_width = 3, default_width = 7;
  for (const auto& r : rows) {
    key_width = std::max(key_width, r.key.size());
    default_width = std::max(default_width, r.default_value.empty() ? 2 : r.default_value.size());
  }
  fmt::print("{}\n\n  {:<{}}  {:<7}  {:<{}}  {}\n", title, "key", key_width, "type", "default", default_width, "meaning");
  for (const auto& r : rows)
    fmt::print("  {:<{}}  {:<7}  {:<{}}  {}\n", r.key, key_width, r.type,
               r.default_value.empty() ? "\"\"" : r.default_value, default_width, r.help);
  fmt::print("\nset them with --set key=value, or in a recipe's method_params\n");
}

void register_distill(CLI::App& app) {
  auto* cmd = app.add_subcommand("distill", "Train a student from a teacher with a distillation method");
  struct Opts {
    std::string recipe, out, student, teacher_weights, method, cache_dir, label_noise;
    std::vector<std::string> sets, assistants, teachers;
    int64_t cache_views = 0;
    CommonOptions common;
    bool resume = false, list = false, cache = false, no_cache = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("--list", o->list, "list the methods and exit; with --method NAME, that method's options");
  cmd->add_option("--recipe", o->recipe, "recipe file (JSON; recipes/ holds the standard ones)");
  cmd->add_option("--out", o->out, "run directory");
  cmd->add_option("--teacher", o->teachers,
                  "teacher model name (with --teacher-weights), or MODEL:WEIGHTS; repeat it for several teachers, "
                  "combined by --set teacher_combine=mean|weighted|confidence");
  cmd->add_option("--teacher-weights", o->teacher_weights, "teacher weights (.safetensors)");
  cmd->add_option("--student,--model", o->student, "student model name");
  cmd->add_option("--method", o->method, "distillation method (--list), or several joined by '+': dkd+at");
  cmd->add_option("--assistant", o->assistants, "DGKD assistant MODEL:WEIGHTS, largest first (repeatable)");
  add_data_options(cmd, o->common);
  add_optimisation_options(cmd, o->common);
  add_peft_options(cmd, o->common);
  add_modality_options(cmd, o->common, /*distill=*/true);
  add_seed_option(cmd, o->common);
  add_threads_option(cmd, o->common.threads);
  add_limit_options(cmd, o->common);
  cmd->add_flag("--teacher-cache", o->cache, "precompute the teacher's logits over fixed augmented views");
  cmd->add_flag("--no-teacher-cache", o->no_cache, "run the teacher every step even if the recipe caches it");
  cmd->add_option("--cache-views", o->cache_views, "augmented views per image in the teacher cache (default 8)");
  cmd->add_option("--cache-dir", o->cache_dir, "folder of teacher cache files, shared between runs (default RUN_DIR/teacher_cache)");
  cmd->add_option("--label-noise", o->label_noise, "sym:R or asym:R: corrupt that fraction of the training labels");
  cmd->add_option("--set", o->sets,
                  "a recipe key or a method hyper-parameter: --set T=4 --set epochs=30 (repeatable)");
  cmd->add_flag("--resume", o->resume, "continue from RUN_DIR/checkpoint.safetensors");
  cmd->callback([o] {
    if (o->list && !o->method.empty()) {
      print_method_options(o->method);
      return;
    }
    if (o->list) {
      for (const auto& e : distill::distiller_registry())
        fmt::print("{:<10} {:<9} {}\n", e.name, e.family, e.description);
      fmt::print("\nfusion: join methods with '+' (--method dkd+at): CE once (--set ce_weight=W, default the first "
                 "method's),\n  each method's other terms times --set <method>.weight=W and --set "
                 "<method>.schedule=constant|warmup:E|cosine;\n  its own parameters as --set <method>.<key>=V "
                 "(docs/methods/fusion.md)\n");
      fmt::print("several teachers: --teacher MODEL:WEIGHTS repeated, --set teacher_combine=mean|weighted|confidence "
                 "(weighted: --set teacher_weights_mix=0.7,0.3)\n");
      fmt::print("a method's options, defaults and meaning: kdlab distill --list --method NAME\n");
      return;
    }
    KD_CHECK(!o->out.empty(), "kdlab distill needs --out RUN_DIR");
    train::TrainConfig cfg;
    if (!o->recipe.empty()) train::load_recipe(o->recipe, cfg);
    if (!o->student.empty()) cfg.model = o->student;
    if (!o->teachers.empty()) {
      // --teacher replaces the recipe's teachers: a plain MODEL pairs with --teacher-weights (or the
      // recipe's teacher_weights), MODEL:WEIGHTS names one teacher completely
      cfg.teachers.clear();
      std::string plain;
      for (const std::string& t : o->teachers) {
        if (t.find(':') == std::string::npos) {
          KD_CHECK(plain.empty(), "--teacher {} and --teacher {}: only one teacher may be a bare model name (paired "
                                  "with --teacher-weights); write the others as MODEL:WEIGHTS", plain, t);
          plain = t;
        } else {
          cfg.teachers.push_back(t);
        }
      }
      cfg.teacher = plain;
      if (plain.empty()) cfg.teacher_weights.clear();
      KD_CHECK(!plain.empty() || o->teacher_weights.empty(),
               "--teacher-weights pairs with a bare --teacher MODEL; with --teacher MODEL:WEIGHTS leave it out");
    }
    if (!o->teacher_weights.empty()) cfg.teacher_weights = o->teacher_weights;
    if (!o->method.empty()) cfg.method = o->method;
    if (!o->assistants.empty()) cfg.assistants = o->assistants;
    apply_common_options(o->common, cfg);
    if (o->cache) cfg.teacher_cache = true;
    if (o->no_cache) cfg.teacher_cache = false;
    if (o->cache_views > 0) cfg.teacher_cache_views = o->cache_views;
    if (!o->cache_dir.empty()) cfg.teacher_cache_dir = o->cache_dir;
    if (!o->label_noise.empty()) cfg.label_noise = o->label_noise;
    for (const auto& s : o->sets) train::apply_distill_override(s, cfg);
    train::RunSummary s = distill::run_method(cfg, o->out, command_line(), o->resume);
    if (!s.interrupted)
      fmt::print("done: last test accuracy {:.4f}, best {:.4f} (epoch {}), {:.1f} s/epoch\n", s.last_accuracy,
                 s.best_accuracy, s.best_epoch, s.seconds_per_epoch);
  });
}

}  // namespace kd::cli
