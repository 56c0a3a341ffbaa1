// report.h: the summary of a sweep (kdlab report; kdlab sweep writes it at the end).
//
// Reads every DIR/<PREFIX><name>_seed<N>/metrics.jsonl of a finished run and writes
// DIR/report.md: per method (name) mean ± sample std over seeds of the last-epoch and best-epoch
// test accuracy, of the validation-selected test accuracy when the runs had a validation split,
// the median seconds per epoch, and the gain over the baseline, mean(method) − mean(baseline)
// with spread sqrt(std_m² + std_b²); plus DIR/accuracy.png (bars ± std) and DIR/curves.png.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kd::distill {

// mean and sample standard deviation (0 for a single value)
std::pair<double, double> mean_std(const std::vector<double>& v);

// Returns the markdown it wrote. Errors when no finished run matches.
std::string write_sweep_report(const std::string& dir, const std::string& prefix, const std::string& baseline);

}  // namespace kd::distill
