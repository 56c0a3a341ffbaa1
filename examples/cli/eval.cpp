// kdlab eval --model M --weights W.safetensors --dataset D --data-dir DIR [--split test]
//            [--num-classes K] [--save-logits FILE.npy] [--json] [--input MODALITY] [--chroma-cue P[:A]]
// The modality defaults to the one the weights were trained on (their metadata).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "train/train.h"
#include "engine/npy.h"
#include "examples/cli/cli.h"
#include "nn/safetensors.h"

namespace kd::cli {

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Accuracy of trained weights on a data set (and optionally its logits)");
  struct Opts {
    std::string model, weights, split = "test", save_logits;
    int64_t classes = 0, batch = 256, limit = 0;
    CommonOptions common;  // --dataset, --data-dir, --threads
    bool json = false, coarse = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "model name")->required();
  cmd->add_option("--weights", o->weights, "a .safetensors state dict (PyTorch names)")->required();
  add_data_options(cmd, o->common)->required();
  cmd->add_option("--split", o->split, "train or test")->capture_default_str();
  cmd->add_option("--num-classes", o->classes, "classes of the model (default: from the weights' metadata, else the data set)");
  cmd->add_option("--save-logits", o->save_logits, "write the logits (N, K) float32 in data set order to this .npy");
  cmd->add_option("--batch-size", o->batch, "batch size")->capture_default_str();
  cmd->add_option("--limit", o->limit, "evaluate only the first N images");
  add_threads_option(cmd, o->common.threads);
  add_modality_options(cmd, o->common, /*distill=*/false);
  cmd->add_flag("--json", o->json, "print one JSON object instead of text");
  cmd->add_flag("--coarse-labels", o->coarse, "cifar100: score against the 20 super-classes (a model trained on them)");
  cmd->callback([o] {
    train::set_threads(o->common.threads);
    data::LoadOptions load;
    load.coarse_labels = o->coarse;
    KD_CHECK(!o->coarse || o->common.dataset == "cifar100", "--coarse-labels: only cifar100 has super-classes");
    data::Dataset ds = data::load_dataset(o->common.dataset, o->common.data_dir, o->split, load);
    nn::SafetensorsFile file = nn::load_safetensors(o->weights);
    // the modality: --input, else the one the weights record (kdlab writes it when it is not rgb)
    const std::string trained = file.metadata.count("input") ? file.metadata.at("input") : "rgb";
    train::TrainConfig input_cfg;
    input_cfg.input = o->common.input.empty() ? trained : o->common.input;
    input_cfg.chroma_cue = o->common.chroma_cue;
    KD_CHECK(!file.metadata.count("model") || data::parse_modality(input_cfg.input) == data::parse_modality(trained),
             "'{}' was trained on {} images, not {}; drop --input (or give --input {})", o->weights, trained,
             input_cfg.input, trained);
    train::apply_input_settings(input_cfg, ds);
    int64_t classes = o->classes;
    if (classes <= 0 && file.metadata.count("num_classes")) classes = std::stoll(file.metadata.at("num_classes"));
    if (classes <= 0) classes = ds.num_classes();
    auto model = nn::create_model(o->model, {classes, ds.input_channels(), ds.height(), 0});
    model->load_state_dict(file.tensors, /*strict=*/true);
    train::EvalResult r = train::evaluate(*model, ds, o->batch, !o->save_logits.empty(), o->limit);
    if (!o->save_logits.empty()) save_npy(o->save_logits, r.logits);
    if (o->json) {
      nlohmann::json j = {{"model", o->model},     {"weights", o->weights}, {"dataset", o->common.dataset},
                          {"split", o->split},     {"count", r.count},      {"accuracy", r.accuracy},
                          {"loss", r.loss},        {"input", ds.modality.str()}};
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("{} on {}/{}{} ({} images): top-1 accuracy {:.2f}%, mean cross-entropy {:.4f}\n", o->model,
                 o->common.dataset, o->split, ds.modality.is_rgb() ? "" : " as " + ds.modality.str(), r.count,
                 100.0 * r.accuracy, r.loss);
      if (!o->save_logits.empty()) fmt::print("logits {} written to {}\n", shape_str(r.logits.shape()), o->save_logits);
    }
  });
}

}  // namespace kd::cli
