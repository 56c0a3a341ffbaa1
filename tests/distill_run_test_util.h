// distill_run_test_util.h: what the end-to-end distillation tests share: a tiny run on the
// synthetic set, a teacher trained for it once per test binary, and a finished run's metrics.
#pragma once
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "distill/distill_run.h"
#include "test_util.h"

namespace kdtest {

// resnet8 on 128 synthetic images of 4 classes, 3 epochs of 4 steps, one thread, seed 3: a run
// that takes a second or two. Tests change the fields they are about.
inline kd::train::TrainConfig tiny_config() {
  kd::train::TrainConfig c;
  c.model = "resnet8";
  c.dataset = "synthetic";
  c.num_classes = 4;
  c.train_limit = 128;
  c.test_limit = 64;
  c.epochs = 3;
  c.batch_size = 32;
  c.lr = 0.05;
  c.threads = 1;
  c.log_every = 1000;
  c.seed = 3;
  return c;
}

// The weights of a `model` trained with tiny_config() (same data: the synthetic images are drawn
// from the seed), trained on first use and kept for the rest of the test binary.
inline const std::string& tiny_teacher(const std::string& model = "resnet14") {
  static std::map<std::string, std::string> paths;
  auto it = paths.find(model);
  if (it != paths.end()) return it->second;
  const std::string dir = temp_path("tiny_teacher_" + model);
  kd::train::TrainConfig c = tiny_config();
  c.model = model;
  kd::train::Run run = kd::train::prepare_run(c, dir, "test");
  kd::train::run_training(run, false);
  return paths[model] = dir + "/model_last.safetensors";
}

// The lines of a run's metrics.jsonl, one JSON object per epoch.
inline std::vector<json> read_metrics(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::vector<json> lines;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

}  // namespace kdtest
