// federated_plot.cpp: accuracy against round and against bytes for federated runs (federated_plot.h).
#include "analysis/federated_plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace kd::plot {

FederatedCurve read_federated_curve(const std::string& run_dir) {
  const std::string path = run_dir + "/metrics.jsonl";
  std::ifstream in(path);
  KD_CHECK(in.good(), "cannot read {} (is {} a kdlab federate run folder?)", path, run_dir);
  FederatedCurve c;
  c.label = std::filesystem::path(run_dir).lexically_normal().filename().string();
  if (c.label.empty()) c.label = std::filesystem::path(run_dir).parent_path().filename().string();
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    KD_CHECK(j.is_object() && j.contains("round") && j.contains("test_acc") && j.contains("bytes_up_total") &&
                 j.contains("bytes_down_total"),
             "{} line {}: not a federated round (it needs round, test_acc, bytes_up_total, bytes_down_total)", path,
             line);
    c.round.push_back(j["round"].get<double>());
    c.test_acc.push_back(100.0 * j["test_acc"].get<double>());
    c.megabytes.push_back((j["bytes_up_total"].get<double>() + j["bytes_down_total"].get<double>()) / 1e6);
  }
  KD_CHECK(!c.round.empty(), "{} has no finished round", path);
  return c;
}

std::vector<Panel> federated_panels(const std::vector<FederatedCurve>& runs) {
  Panel by_round{"test accuracy by round", "round", "top-1 %", {}, {}};
  // bytes on a log scale: FD's tables and a network's weights are orders of magnitude apart
  Panel by_bytes{"test accuracy by communication", "log10 MB sent (up + down, cumulative): 0 = 1 MB, -2 = 10 kB",
                 "top-1 %", {}, {}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const Color color = palette((int)i);
    by_round.series.push_back({runs[i].round, runs[i].test_acc, color, LineStyle::solid});
    std::vector<double> log_mb;
    for (double mb : runs[i].megabytes) log_mb.push_back(std::log10(std::max(mb, 1e-9)));
    by_bytes.series.push_back({log_mb, runs[i].test_acc, color, LineStyle::solid});
    const std::string label = fmt::format("{} ({:.2f}%)", runs[i].label, runs[i].test_acc.back());
    by_round.legend.push_back({label, color, LineStyle::solid});
    by_bytes.legend.push_back({label, color, LineStyle::solid});
  }
  return {by_round, by_bytes};
}

void plot_federated(const std::vector<std::string>& run_dirs, const std::string& out) {
  KD_CHECK(!run_dirs.empty(), "no federated runs to plot");
  std::vector<FederatedCurve> runs;
  for (const auto& dir : run_dirs) runs.push_back(read_federated_curve(dir));
  write_chart(out, federated_panels(runs));
}

}  // namespace kd::plot
