// report.cpp: see report.h.
#include "analysis/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "analysis/plot.h"
#include "engine/atomic_file.h"
#include "engine/error.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;

namespace kd::distill {

// mean and sample standard deviation (0 for one value)
std::pair<double, double> mean_std(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x / v.size();
  for (double x : v) s += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(s / (v.size() - 1)) : 0.0};
}

static std::string pm(const std::vector<double>& v) {
  auto [m, s] = mean_std(v);
  return v.size() > 1 ? fmt::format("{:.2f} ± {:.2f}", m, s) : fmt::format("{:.2f}", m);
}

std::string write_sweep_report(const std::string& dir, const std::string& prefix, const std::string& baseline) {
  struct Group {
    std::vector<double> last, best, val_sel, s_epoch;
    std::vector<int64_t> seeds;
    std::vector<std::string> dirs;
  };
  std::map<std::string, Group> groups;
  const std::regex name_re("^" + std::regex_replace(prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                           R"((.+)_seed([0-9]+)$)");
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(dir)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  for (const auto& path : entries) {
    std::smatch m;
    const std::string name = path.filename().string();
    if (!std::regex_match(name, m, name_re) || !fs::exists(path / "metrics.jsonl")) continue;
    std::ifstream probe(path / "metrics.jsonl");
    std::string first_line;
    if (!std::getline(probe, first_line) || first_line.empty()) continue;  // started, no epoch finished yet
    plot::RunMetrics r = plot::read_metrics(path.string());
    if (r.test_acc.empty()) continue;
    auto cfg = nlohmann::json::parse(std::ifstream(path / "config.json"), nullptr, false);
    if (!cfg.is_discarded() && (int64_t)r.epoch.back() != cfg["config"].value("epochs", (int64_t)0)) continue;  // unfinished
    Group& g = groups[m[1].str()];
    g.seeds.push_back(std::stoll(m[2].str()));
    g.dirs.push_back(path.string());
    g.last.push_back(100 * r.test_acc.back());
    g.best.push_back(100 * *std::max_element(r.test_acc.begin(), r.test_acc.end()));
    std::vector<double> t = r.time_s;
    std::sort(t.begin(), t.end());
    g.s_epoch.push_back(t[t.size() / 2]);
    // validation-selected test accuracy (metrics written with a validation split)
    std::ifstream f(path / "metrics.jsonl");
    std::string line, lastline;
    while (std::getline(f, line))
      if (!line.empty()) lastline = line;
    auto j = nlohmann::json::parse(lastline, nullptr, false);
    if (!j.is_discarded() && j.contains("val_selected_test_acc")) g.val_sel.push_back(100 * j["val_selected_test_acc"].get<double>());
  }
  KD_CHECK(!groups.empty(), "no finished runs named {}<name>_seed<N> with a metrics.jsonl in '{}'", prefix, dir);
  const bool has_val = std::any_of(groups.begin(), groups.end(), [](auto& kv) { return !kv.second.val_sel.empty(); });
  const Group* base = groups.count(baseline) ? &groups.at(baseline) : nullptr;

  std::string md = fmt::format("# Sweep report: {}\n\nTop-1 test accuracy (%) as mean ± sample std over seeds; gain = "
                               "mean(method) − mean({}), ± sqrt(std_m² + std_b²).\n\n",
                               dir, baseline);
  md += fmt::format("| method | seeds | last epoch | best epoch |{} median s/epoch | gain (last) |\n|---|---|---|---|{}---|---|\n",
                    has_val ? " val-selected |" : "", has_val ? "---|" : "");
  std::vector<plot::Bar> bars;
  std::vector<std::string> all_dirs;
  for (auto& [name, g] : groups) {
    std::string gain = "";
    if (base && &g != base) {
      auto [mm, sm] = mean_std(g.last);
      auto [mb, sb] = mean_std(base->last);
      gain = fmt::format("{:+.2f} ± {:.2f}", mm - mb, std::sqrt(sm * sm + sb * sb));
    }
    std::vector<std::string> seeds;
    for (auto s : g.seeds) seeds.push_back(std::to_string(s));
    std::vector<double> se = g.s_epoch;
    std::sort(se.begin(), se.end());
    md += fmt::format("| {} | {} | {} | {} |{} {:.1f} | {} |\n", name, fmt::join(seeds, ","), pm(g.last), pm(g.best),
                      has_val ? " " + (g.val_sel.empty() ? std::string("-") : pm(g.val_sel)) + " |" : "",
                      se[se.size() / 2], gain);
    auto [m, s] = mean_std(g.last);
    const int n = (int)g.last.size();
    bars.push_back({n > 1 ? fmt::format("{} (n={})", name, n) : name, m, s, n, std::nullopt});
    all_dirs.insert(all_dirs.end(), g.dirs.begin(), g.dirs.end());
  }
  md += "\n![accuracy](accuracy.png)\n\n![curves](curves.png)\n";
  const bool over_seeds = std::any_of(bars.begin(), bars.end(), [](const plot::Bar& b) { return b.n > 1; });
  plot::bar_chart(dir + "/accuracy.png",
                  over_seeds ? "test accuracy, last epoch (mean ± std over seeds)" : "test accuracy, last epoch",
                  "top-1 %", bars);
  plot::plot_runs(all_dirs, dir + "/curves.png");
  write_file_atomic(dir + "/report.md", md);
  fmt::print("{}\nwrote {}/report.md, accuracy.png, curves.png\n", md, dir);
  return md;
}

}  // namespace kd::distill
