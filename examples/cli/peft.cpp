// kdlab peft merge --model M --weights BASE --peft P.safetensors --out merged.safetensors
//
// Folds a PEFT run's parameters (peft.safetensors: LoRA factors, adapters, task BatchNorms, a
// trained classifier) into its base weights and writes a plain model of the same kind, which
// kdlab eval, distill (as a teacher) and export read like any other. The PEFT file records the
// spec it was trained with and the hash of its base weights; a different base is refused.
#include <fmt/format.h>

#include "examples/cli/cli.h"
#include "nn/models/model.h"
#include "nn/peft.h"
#include "nn/safetensors.h"
#include "train/run_recorder.h"

namespace kd::cli {

void register_peft(CLI::App& app) {
  auto* peft = app.add_subcommand("peft", "Parameter-efficient fine-tuning files: merge them into their base");
  peft->require_subcommand(1);
  auto* cmd = peft->add_subcommand("merge", "Merge peft.safetensors into its base weights: a plain model file");
  struct Opts {
    std::string model, weights, peft, out;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "the model name (as trained)")->required();
  cmd->add_option("--weights", o->weights, "the base weights the PEFT run started from (--init-weights)")->required();
  cmd->add_option("--peft", o->peft, "the run's peft.safetensors")->required();
  cmd->add_option("--out", o->out, "the merged model (.safetensors)")->required();
  cmd->callback([o] {
    const nn::SafetensorsFile p = nn::load_safetensors(o->peft);
    for (const char* key : {"spec", "base_hash", "num_classes"})
      KD_CHECK(p.metadata.count(key), "{} has no '{}' in its metadata: not a peft.safetensors written by a kdlab run",
               o->peft, key);
    const nn::SafetensorsFile base = nn::load_safetensors(o->weights);
    nn::ModelConfig mc;
    mc.num_classes = std::stoll(p.metadata.at("num_classes"));
    for (auto& [n, t] : base.tensors)  // the input channels from the first convolution's weight
      if (t.dim() == 4) {
        mc.in_channels = t.size(1);
        break;
      }
    auto model = nn::create_model(o->model, mc);
    model->load_state_dict(base.tensors, /*strict=*/false);
    const std::string hash = nn::state_hash(model->state_dict());
    KD_CHECK(hash == p.metadata.at("base_hash"),
             "{} was trained on other base weights (hash {}) than {} (hash {}); give the --init-weights of that run",
             o->peft, p.metadata.at("base_hash"), o->weights, hash);
    nn::apply_peft(*model, nn::parse_peft_spec(p.metadata.at("spec")), 0, model->classifier_name());
    const nn::LoadReport r = model->load_state_dict(p.tensors, /*strict=*/false);
    KD_CHECK(r.unexpected.empty() && r.shape_mismatch.empty(),
             "{} does not fit {} wrapped with {}: {}", o->peft, o->model, p.metadata.at("spec"), r.to_string());
    nn::merge_and_remove_peft(*model);
    train::save_weights(o->out, *model, o->model, mc.num_classes);
    fmt::print("merged {} ({} tensors, {}) into {}: {}\n", o->peft, p.tensors.size(), p.metadata.at("spec"),
               o->weights, o->out);
  });
}

}  // namespace kd::cli
