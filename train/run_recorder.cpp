// run_recorder.cpp: the run folder's files (see run_recorder.h).
#include "train/run_recorder.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/version.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;

namespace kd::train {

RunRecorder::RunRecorder(std::string out_dir) : dir_(std::move(out_dir)) {
  KD_CHECK(!dir_.empty(), "no run directory given (--out DIR)");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  KD_CHECK(!ec && fs::is_directory(dir_), "cannot create the run directory '{}': {}", dir_,
           ec ? ec.message() : "a file of that name is in the way");
}

void RunRecorder::write_config(const std::string& command_line, const nlohmann::json& fields) const {
  nlohmann::json record = fields;
  record["command"] = command_line;
  record["kdlab_version"] = version_string();
  record["git_revision"] = git_revision();
  record["backends"] = build_backends();
  record["cpu_isa"] = cpu_isa_available();
  write_file_atomic(path("config.json"), record.dump(2) + "\n");
}

void RunRecorder::start_metrics(bool resume, int64_t epochs_done) const {
  std::string kept;
  if (resume) {
    std::ifstream f(metrics_path());
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("epoch", (int64_t)0) <= epochs_done) kept += line + "\n";
    }
  }
  write_file_atomic(metrics_path(), kept);
}

void RunRecorder::append_metrics(const nlohmann::json& line) const {
  std::ofstream f(metrics_path(), std::ios::app);
  f << line.dump() << "\n";
  f.flush();
  KD_CHECK(f.good(), "cannot append to '{}' (is the disk full?)", metrics_path());
}

void RunRecorder::save_weights(const std::string& file, const nn::Module& model, const std::string& model_name,
                               int64_t num_classes, const std::string& input) const {
  train::save_weights(path(file), model, model_name, num_classes, input);
}

void save_weights(const std::string& path, const nn::Module& model, const std::string& model_name, int64_t num_classes,
                  const std::string& input) {
  std::map<std::string, std::string> meta{{"model", model_name}, {"num_classes", std::to_string(num_classes)},
                                          {"kdlab_version", version_string()}, {"git_revision", git_revision()}};
  if (!input.empty() && input != "rgb") meta["input"] = input;  // the modality it was trained on
  nn::save_safetensors(path, model.state_dict(), meta);
}

}  // namespace kd::train
