// kdlab export --model M --weights W.safetensors --format onnx --out m.onnx
//              [--dataset D --data-dir DIR] [--input MODALITY] [--num-classes K] [--size S]
// Writes a trained model of the zoo as an ONNX file (deploy/onnx_export.h): BatchNorm folded into
// the convolutions, a dynamic batch dimension, the input's shape, modality and normalisation in
// the model's metadata. The data set (default cifar10's geometry and normalisation, without
// reading any file) gives the input's channels, size, mean and standard deviation.
#include <fmt/format.h>

#include "datasets/normalization.h"
#include "deploy/onnx_export.h"
#include "examples/cli/cli.h"
#include "nn/safetensors.h"

namespace kd::cli {

namespace {

// Channels, size and normalisation of the data sets kdlab knows, without loading them.
struct InputGeometry {
  int64_t channels = 3, size = 32;
  std::vector<float> mean = data::kCifar10Mean, std = data::kCifar10Std;
};

InputGeometry geometry_of(const CommonOptions& o) {
  InputGeometry g;
  if (o.dataset.empty() || o.dataset == "cifar10") return g;
  if (o.dataset == "cifar100") {
    g.mean = data::kCifar100Mean;
    g.std = data::kCifar100Std;
    return g;
  }
  // any other data set: read its test split for its geometry and normalisation
  const data::Dataset d = data::load_dataset(o.dataset, o.data_dir, "test");
  g.channels = d.channels();
  g.size = d.height();
  g.mean = d.mean;
  g.std = d.std;
  return g;
}

}  // namespace

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a trained model as an ONNX file (opset 17), BatchNorm folded");
  struct Opts {
    std::string model, weights, out, format = "onnx";
    int64_t classes = 0, batch = 2;  // the traced batch: 2, so that a reshape of the batch shows
    bool random_weights = false;
    CommonOptions common;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "model name (kdlab info --list)")->required();
  auto* weights = cmd->add_option("--weights", o->weights, "its trained weights (.safetensors)");
  cmd->add_flag("--random-weights", o->random_weights,
                "no weights: the model's seeded initialisation (for speed benchmarks, bench/compare_ort.sh)")
      ->excludes(weights);
  cmd->add_option("--out", o->out, "the .onnx file to write")->required();
  cmd->add_option("--format", o->format, "onnx")->capture_default_str();
  add_data_options(cmd, o->common);
  cmd->add_option("--input", o->common.input, "the modality the model sees (default: the weights' metadata, else rgb)");
  cmd->add_option("--num-classes", o->classes, "classes (default: the weights' metadata)");
  add_threads_option(cmd, o->common.threads);
  cmd->callback([o] {
    KD_CHECK(o->format == "onnx", "unknown export format '{}'; kdlab exports onnx", o->format);
    train::set_threads(o->common.threads);
    KD_CHECK(o->random_weights || !o->weights.empty(), "give --weights FILE.safetensors (or --random-weights)");
    nn::SafetensorsFile file;
    if (!o->random_weights) file = nn::load_safetensors(o->weights);
    if (o->random_weights && o->classes <= 0) o->classes = 10;
    int64_t classes = o->classes;
    if (classes <= 0 && file.metadata.count("num_classes")) classes = std::stoll(file.metadata.at("num_classes"));
    KD_CHECK(classes > 0, "'{}' does not record its class count; give --num-classes K", o->weights);
    if (file.metadata.count("model"))
      KD_CHECK(file.metadata.at("model") == o->model, "'{}' holds a {} but --model says {}; give --model {}",
               o->weights, file.metadata.at("model"), o->model, file.metadata.at("model"));
    const InputGeometry g = geometry_of(o->common);
    const std::string input =
        !o->common.input.empty() ? o->common.input : file.metadata.count("input") ? file.metadata.at("input") : "rgb";
    const data::Modality m = data::parse_modality(input);
    std::vector<float> mean, std;
    data::modality_normalization(m, g.mean, g.std, mean, std);
    const int64_t C = data::modality_channels(m, g.channels);
    auto model = nn::create_model(o->model, {classes, C, g.size, 0});
    if (!o->random_weights) model->load_state_dict(file.tensors, /*strict=*/true);
    Generator gen(0);
    const Tensor example = randn({o->batch, C, g.size, g.size}, gen);
    deploy::OnnxExportOptions opt;
    opt.metadata = {{"model", o->model},
                    {"num_classes", std::to_string(classes)},
                    {"input_name", "input"},
                    {"input_shape", fmt::format("batch,{},{},{}", C, g.size, g.size)},
                    {"input_modality", m.str()},
                    {"normalization", "x = (pixel / 255 - mean) / std per channel, before the model"},
                    {"mean", fmt::format("{}", fmt::join(mean, ","))},
                    {"std", fmt::format("{}", fmt::join(std, ","))},
                    {"weights", o->random_weights ? std::string("random (seed 0)") : o->weights}};
    const deploy::OnnxExportReport rep = deploy::export_onnx(*model, example, o->out, opt);
    fmt::print("{} -> {}: {}\n", o->random_weights ? "random weights" : o->weights, o->out, rep.str());
  });
}

}  // namespace kd::cli
