// progress.h: a progress bar on a terminal, plain log lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace kd::train {

class Progress {
 public:
  // total: steps in this epoch; label: e.g. "epoch 3/15"
  Progress(int64_t total, std::string label, int64_t log_every);
  // After step `done` (1-based): the running loss, accuracy and throughput (loss < 0: steps
  // that have no loss, such as the teacher cache's forward passes).
  void update(int64_t done, double loss, double accuracy, double images_per_s);
  void finish();  // ends the bar's line
  static bool stdout_is_terminal();

 private:
  int64_t total_, log_every_;
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kd::train
