#include "train/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace kd::train {

bool Progress::stdout_is_terminal() { return isatty(fileno(stdout)) != 0; }

Progress::Progress(int64_t total, std::string label, int64_t log_every)
    : total_(total), log_every_(log_every > 0 ? log_every : 50), label_(std::move(label)), tty_(stdout_is_terminal()) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

// "loss 0.1234 acc 0.567 ", or nothing for steps without a loss (negative values).
static std::string loss_text(double loss, double accuracy) {
  return loss < 0 ? std::string() : fmt::format("loss {:.4f} acc {:.3f} ", loss, accuracy);
}

void Progress::update(int64_t done, double loss, double accuracy, double images_per_s) {
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = done > 0 ? elapsed / done * (total_ - done) : 0.0;
  if (tty_) {
    // redraw at most 10 times a second, and always on the last step
    if (done < total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    const int width = 24;
    int filled = total_ > 0 ? (int)(width * done / total_) : width;
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    fmt::print("\r{} [{}] {}/{} {}{:.0f} img/s ETA {:.0f}s ", label_, bar, done, total_, loss_text(loss, accuracy),
               images_per_s, eta);
    std::fflush(stdout);
  } else if (done % log_every_ == 0 || done == total_) {
    fmt::print("{} step {}/{} {}{:.0f} img/s ETA {:.0f}s\n", label_, done, total_, loss_text(loss, accuracy),
               images_per_s, eta);
    std::fflush(stdout);
  }
}

void Progress::finish() {
  if (tty_) fmt::print("\n");
}

}  // namespace kd::train
