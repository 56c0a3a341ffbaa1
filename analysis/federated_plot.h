// federated_plot.h: the curves of federated runs (kdlab federate): test accuracy against the round
// and against the megabytes communicated (up + down, cumulative), one colour per run, so that
// algorithms that send logits (fd, fedmd) and weights (fedavg, feddf) compare on both axes.
#pragma once
#include <string>
#include <vector>

#include "analysis/plot.h"

namespace kd::plot {

// One federated run's curve: per round, from RUN_DIR/metrics.jsonl (keys round, test_acc,
// bytes_up_total, bytes_down_total; an error names the file and line that lacks them).
struct FederatedCurve {
  std::string label;
  std::vector<double> round, test_acc, megabytes;
};
FederatedCurve read_federated_curve(const std::string& run_dir);

// The two panels: accuracy (%) vs round, accuracy (%) vs log10 of the MB communicated (FD's tables
// and a network's weights differ by orders of magnitude); run i in palette(i).
std::vector<Panel> federated_panels(const std::vector<FederatedCurve>& runs);

// Both panels as a PNG or SVG (by out's extension).
void plot_federated(const std::vector<std::string>& run_dirs, const std::string& out);

}  // namespace kd::plot
