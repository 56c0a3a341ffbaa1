// kdlab plot RUN_DIR... [--out curves.png]
#include <fmt/format.h>

#include "distill/plot.h"
#include "examples/cli/cli.h"

namespace kd::cli {

void register_plot(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "Loss and accuracy curves of one or more runs, overlaid, as a PNG");
  struct Opts {
    std::vector<std::string> runs;
    std::string out = "curves.png";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("runs", o->runs, "run directories (each with metrics.jsonl)")->required();
  cmd->add_option("--out", o->out, "output PNG")->capture_default_str();
  cmd->callback([o] {
    plot::plot_runs(o->runs, o->out);
    fmt::print("wrote {}\n", o->out);
  });
}

}  // namespace kd::cli
