// kdlab plot RUN_DIR... [--out curves.png|curves.svg] [--bars accuracy.png|.svg [--metric last|best]]
// kdlab plot --federated RUN_DIR... [--out curves.png]: accuracy against round and against bytes
//
// --bars draws one bar per group of runs: runs whose directory names differ only in a trailing
// "_seedN" form one group (mean ± std over its seeds); any other run is its own bar (its value,
// no error bar). Each figure is a PNG or an SVG by its file's extension.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <regex>

#include "analysis/federated_plot.h"
#include "analysis/plot.h"
#include "engine/error.h"
#include "examples/cli/cli.h"

namespace kd::cli {

void register_plot(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "Loss and accuracy curves of one or more runs, overlaid, as a PNG or SVG");
  struct Opts {
    std::vector<std::string> runs;
    std::string out = "curves.png", bars, metric = "last", title = "test accuracy";
    bool federated = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("runs", o->runs, "run directories (each with metrics.jsonl)")->required();
  cmd->add_option("--out", o->out, "output image of the curves: .png or .svg")->capture_default_str();
  cmd->add_option("--bars", o->bars,
                  "also draw a bar chart of the final accuracy (mean ± std over _seedN runs), .png or .svg");
  cmd->add_option("--metric", o->metric, "last (final epoch) or best (best epoch) accuracy for --bars")
      ->capture_default_str();
  cmd->add_option("--title", o->title, "title of the bar chart")->capture_default_str();
  cmd->add_flag("--federated", o->federated,
                "kdlab federate runs: test accuracy against the round and against the bytes communicated");
  cmd->callback([o] {
    if (o->federated) {
      plot::plot_federated(o->runs, o->out);
      fmt::print("wrote {}\n", o->out);
      return;
    }
    if (!o->bars.empty()) plot::image_format(o->bars);  // a wrong extension fails before any drawing
    plot::plot_runs(o->runs, o->out);
    fmt::print("wrote {}\n", o->out);
    if (o->bars.empty()) return;
    KD_CHECK(o->metric == "last" || o->metric == "best", "--metric must be last or best, got '{}'", o->metric);
    std::vector<std::string> order;
    std::map<std::string, std::vector<double>> groups;
    const std::regex seed_suffix("_seed[0-9]+$");
    for (const auto& dir : o->runs) {
      plot::RunMetrics m = plot::read_metrics(dir);
      KD_CHECK(!m.test_acc.empty(), "{} has no finished epoch", dir);
      const double acc = o->metric == "last" ? m.test_acc.back() : m.best_acc.back();
      std::string name = std::filesystem::path(dir).filename().string();
      if (name.empty()) name = std::filesystem::path(dir).parent_path().filename().string();
      name = std::regex_replace(name, seed_suffix, "");
      if (!groups.count(name)) order.push_back(name);
      groups[name].push_back(100.0 * acc);
    }
    std::vector<plot::Bar> bars;
    for (const auto& name : order) {
      const auto& v = groups[name];
      double mean = 0, var = 0;
      for (double x : v) mean += x / v.size();
      for (double x : v) var += (x - mean) * (x - mean) / std::max<size_t>(v.size() - 1, 1);
      const std::string label = v.size() > 1 ? fmt::format("{} (n={})", name, v.size()) : name;
      bars.push_back({label, mean, std::sqrt(var), (int)v.size(), std::nullopt});
    }
    const bool over_seeds = std::any_of(bars.begin(), bars.end(), [](const plot::Bar& b) { return b.n > 1; });
    plot::bar_chart(o->bars, o->title + " (" + o->metric + " epoch" + (over_seeds ? ", mean ± std over seeds)" : ")"),
                    "top-1 %", bars);
    fmt::print("wrote {}\n", o->bars);
  });
}

}  // namespace kd::cli
