// kdlab info --model NAME [--num-classes K --in-channels C --size S] [--peft SPEC [--train-only W]]
#include <fmt/format.h>

#include "examples/cli/cli.h"
#include "nn/models/model.h"
#include "nn/peft.h"

namespace kd::cli {

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Parameters, MACs per image and the shape of every feature tap of a model");
  struct Opts {
    std::string model, peft, train_only = "peft";
    int64_t classes = 100, channels = 3, size = 32;
    bool list = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "model name (see --list)");
  cmd->add_option("--num-classes", o->classes, "number of classes")->capture_default_str();
  cmd->add_option("--in-channels", o->channels, "input channels")->capture_default_str();
  cmd->add_option("--size", o->size, "input height = width")->capture_default_str();
  cmd->add_flag("--list", o->list, "list the models of the zoo");
  cmd->add_option("--peft", o->peft, "a PEFT spec (as kdlab train --peft): trainable / total parameters, bytes per task");
  cmd->add_option("--train-only", o->train_only, "with --peft: peft, head or all")->capture_default_str();
  cmd->callback([o] {
    if (o->list || o->model.empty()) {
      for (const auto& e : nn::model_registry()) fmt::print("{:<20} {}\n", e.name, e.description);
      return;
    }
    nn::ModelConfig mc{o->classes, o->channels, o->size, 0};
    auto model = nn::create_model(o->model, mc);
    nn::ModelInfo info = nn::describe_model(*model, {o->channels, o->size, o->size});
    fmt::print("model        {} ({} classes, input {}x{}x{})\n", o->model, o->classes, o->channels, o->size, o->size);
    fmt::print("parameters   {} ({:.3f} M)\n", info.parameters, info.parameters / 1e6);
    fmt::print("MACs/image   {} ({:.2f} M)\n", info.macs_per_image, info.macs_per_image / 1e6);
    fmt::print("logits       {}\n", shape_str(info.logits));
    for (size_t i = 0; i < info.feats.size(); ++i)
      fmt::print("feats[{}]     {}   preact_feats[{}] {}\n", i, shape_str(info.feats[i]), i,
                 i < info.preact_feats.size() ? shape_str(info.preact_feats[i]) : "-");
    fmt::print("pooled       {}\n", shape_str(info.pooled));
    if (!o->peft.empty()) {  // what one task costs with this PEFT spec
      const nn::PeftReport rep = nn::apply_peft(*model, nn::parse_peft_spec(o->peft), 0, model->classifier_name());
      nn::set_trainable(*model, o->train_only, model->classifier_name());
      int64_t stored = 0;  // the floats peft.safetensors holds (branches, task norms and their statistics, head)
      for (auto& [n, t] : nn::peft_state(*model)) stored += t.numel() * (int64_t)dtype_size(t.dtype());
      fmt::print("peft         {}: {} layers wrapped{}\n", o->peft, rep.layers.size(),
                 rep.task_norms.empty() ? "" : fmt::format(", {} task BatchNorms", rep.task_norms.size()));
      fmt::print("trainable    {} of {} parameters ({:.2f}%), train-only {}\n", model->num_parameters(true),
                 model->num_parameters(), 100.0 * model->num_parameters(true) / model->num_parameters(), o->train_only);
      fmt::print("bytes/task   {} ({:.1f} KiB in peft.safetensors, against {:.1f} KiB for the whole model)\n", stored,
                 stored / 1024.0, 4.0 * info.parameters / 1024.0);
    }
  });
}

}  // namespace kd::cli
