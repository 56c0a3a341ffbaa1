// cli.h: each subcommand of `kdlab` registers itself on the CLI11 app in its own file.
// register_* adds the subcommand and its options; the callback runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace kd::cli {

void register_info(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_plot(CLI::App& app);
void register_data(CLI::App& app);
void register_bench(CLI::App& app);
void register_loss(CLI::App& app);
void register_distill(CLI::App& app);
void register_wkd_cost(CLI::App& app);
void register_dgkd_chain(CLI::App& app);
void register_analyze(CLI::App& app);
void register_sweep(CLI::App& app);

// The command line as typed, for run records.
std::string command_line();
void set_command_line(int argc, char** argv);

}  // namespace kd::cli
