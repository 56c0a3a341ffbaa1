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
  int64_t train_subset = 0;        // > 0: a random subset of N training images (the same for every seed)
  int64_t val_split = 0;           // > 0: hold out N training images (fixed seed) as a validation split
  bool coarse_labels = false;      // cifar100: train and test on the 20 super-classes
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
  double lr_gamma = 0.1;            // multistep: the LR is multiplied by this at each milestone
  int64_t warmup_epochs = 0;
  double min_lr = 0.0;
  // data
  bool augment = true;             // random crop (zero padding) + horizontal flip
  bool prefetch = true;
  double color_jitter = 0;         // > 0: ColorJitter(brightness=j, contrast=j) on training images
  // cross-modal (datasets/modality.h): what the model (the student) and the teacher see
  std::string input;               // "" = rgb | gray | edges | lowres:K | rgb+edges
  std::string teacher_input;       // "" = the same as input
  std::string paired_photometric = "shared";  // shared | independent: the teacher's view redraws jitter
  std::string chroma_cue;          // "" | "P[:STRENGTH]": the class-dependent chroma cue (MFH control)
  // bookkeeping
  uint64_t seed = 0;
  int64_t threads = 0;             // 0: leave the libraries' default
  int64_t log_every = 50;          // steps between plain log lines when not on a terminal
  bool save_every_epoch = true;    // checkpoint.safetensors after every epoch
  int64_t skip_nonfinite = 0;      // > 0: skip up to N steps per epoch whose loss is NaN/Inf (no update), counted
  std::string peft;                // "" | a PEFT spec "lora:r=8,alpha=16,targets=..." | "adapter:targets=*" (nn/peft.h)
  std::string init_weights;        // "" | weights to start the model from (non-strict: what did not load is reported)
  std::string train_only;          // "" (peft set: "peft"; else everything) | "peft" | "head" | "all"
  std::string label_noise;         // "" | "sym:R" | "asym:R": noise injected into the training labels
  // distillation (kdlab distill; distill/distill_run.h)
  std::string method;              // "" = plain training; "kd", "dkd", ..., or a fusion "dkd+at" (kdlab distill --list)
  nlohmann::json method_params = nlohmann::json::object();  // the method's hyper-parameters {"T": 4}; fusion {"dkd.beta": 2}
  std::string teacher;             // teacher model name
  std::string teacher_weights;     // its .safetensors
  std::vector<std::string> teachers;  // more teachers "model:weights.safetensors" (after teacher, when set)
  std::string teacher_combine = "mean";     // several teachers: mean | weighted | confidence (distill/fusion.h)
  std::vector<double> teacher_weights_mix;  // teacher_combine=weighted: one weight per teacher
  std::vector<std::string> assistants;  // DGKD guides "model:weights.safetensors", largest first
  bool teacher_cache = false;      // precompute teacher logits over fixed augmented views (logits-only methods)
  int64_t teacher_cache_views = 8; // augmented views per training image in the cache
  std::string teacher_cache_dir;   // "" = RUN_DIR/teacher_cache; share one folder between runs

  nlohmann::json to_json() const;
};

// Reads a recipe file into `config` (keys not in the file keep their current values).
void load_recipe(const std::string& path, TrainConfig& config);
// The same from a recipe's text; `source` names it in error messages.
void parse_recipe(const std::string& text, TrainConfig& config, const std::string& source);
// Applies one JSON object of overrides; unknown keys are an error naming the known ones. A list
// setting (milestones, assistants, teachers, teacher_weights_mix) also takes a comma-separated
// string: "30,60,90".
void apply_overrides(const nlohmann::json& j, TrainConfig& config, const std::string& source);
// "key=value" from the command line: the value is parsed as JSON when it parses, else as a string.
void apply_override_string(const std::string& kv, TrainConfig& config);
// Whether `key` is one of TrainConfig's settings.
bool is_setting(const std::string& key);
// kdlab distill's --set: "key=value" overrides the recipe when key is one of its settings and is
// otherwise a hyper-parameter of the method (method_params), which the method checks itself, so a
// typo still fails with the list of the method's keys. "kd.T=4" or "method.T=4" name the method
// explicitly; for a fusion ("dkd+at") "dkd.beta=2" is kept whole ("dkd.beta") for the fusion to
// route to its component (distill/fusion.h).
void apply_distill_override(const std::string& kv, TrainConfig& config);

}  // namespace kd::train
