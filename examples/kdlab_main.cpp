// kdlab: the command line. Subcommands are added by the issues that build them.
#include <CLI/CLI.hpp>
#include <iostream>

#include "engine/engine.h"

int main(int argc, char** argv) {
  CLI::App app{"kdlab: knowledge distillation for image classification, on a from-scratch C++ engine"};
  app.set_version_flag("--version", kd::version_report());
  app.require_subcommand(0);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (argc == 1) std::cout << app.help();
  return 0;
}
