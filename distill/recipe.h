// recipe.h: the configuration of a training run, read from a JSON recipe file, with
// command-line flags overriding keys.
//
// A recipe is one JSON object whose keys are the fields of TrainConfig (recipes/*.json).
// Unknown keys are an error that lists the known ones, so a typo never passes silently.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kd::train {

struct TrainConfig {
  // what to train, on what
  std::string model = "resnet8";
  std::string dataset = "synthetic";
  std::string data_dir;            // "" = the data set's default
  int64_t num_classes = 0;         // 0: from the data set
  int64_t train_limit = 0;         // > 0: use only the first N training images (quick runs)
  int64_t test_limit = 0;          // > 0: evaluate on the first N test images
  // optimisation
  int64_t epochs = 15;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";   // sgd | adam | adamw
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  bool no_decay_1d = false;        // no weight decay on biases and norm weights
  std::string schedule = "cosine";  // constant | multistep | cosine | warmup | onecycle
  bool schedule_per_iteration = true;
  std::vector<int64_t> milestones;  // multistep, epochs counted from 0
  double gamma = 0.1;
  int64_t warmup_epochs = 0;
  double min_lr = 0.0;
  // data
  bool augment = true;             // random crop (zero padding) + horizontal flip
  bool prefetch = true;
  // bookkeeping
  uint64_t seed = 0;
  int64_t threads = 0;             // 0: leave the libraries' default
  int64_t log_every = 50;          // steps between plain log lines when not on a terminal
  bool save_every_epoch = true;    // checkpoint.safetensors after every epoch

  nlohmann::json to_json() const;
};

// Reads a recipe file into `config` (keys not in the file keep their current values).
void load_recipe(const std::string& path, TrainConfig& config);
// Applies one JSON object of overrides; unknown keys are an error naming the known ones.
void apply_overrides(const nlohmann::json& j, TrainConfig& config, const std::string& source);
// "key=value" from the command line: the value is parsed as JSON when it parses, else as a string.
void apply_override_string(const std::string& kv, TrainConfig& config);

}  // namespace kd::train
