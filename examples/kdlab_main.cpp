// kdlab: the command line. Each subcommand lives in examples/cli/<name>.cpp.
#include <CLI/CLI.hpp>
#include <iostream>

#include "engine/engine.h"
#include "examples/cli/cli.h"

namespace kd::cli {
static std::string g_command_line;
std::string command_line() { return g_command_line; }
void set_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) g_command_line += (i ? " " : "") + std::string(argv[i]);
}
}  // namespace kd::cli

int main(int argc, char** argv) {
  kd::cli::set_command_line(argc, argv);
  CLI::App app{"kdlab: knowledge distillation for image classification, on a from-scratch C++ engine"};
  app.set_version_flag("--version", kd::version_report());
  kd::cli::register_info(app);
  kd::cli::register_train(app);
  kd::cli::register_eval(app);
  kd::cli::register_plot(app);
  kd::cli::register_data(app);
  kd::cli::register_bench(app);
  kd::cli::register_loss(app);
  kd::cli::register_distill(app);
  kd::cli::register_wkd_cost(app);
  kd::cli::register_dgkd_chain(app);
  kd::cli::register_peft(app);
  kd::cli::register_analyze(app);
  kd::cli::register_sweep(app);
  kd::cli::register_federate(app);
  kd::cli::register_export(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kd::Error& e) {
    std::cerr << "kdlab: error: " << e.what() << "\n";
    return 1;
  }
  if (argc == 1) std::cout << app.help();
  return 0;
}
