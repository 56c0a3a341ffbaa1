// fitnet_run.h: FitNets' two-stage schedule as a training regime (the equations: fitnet.h).
#pragma once
#include <memory>
#include <string>

#include "distill/distill_run.h"
#include "train/regime.h"

namespace kd::distill {

// The registry row's runner: stages=1 is an ordinary distillation run (run_distillation);
// stages=2 the two-stage regime below, run by train::run_regime.
train::RunSummary run_fitnet_method(const train::TrainConfig& config, const std::string& out_dir,
                                    const std::string& command_line, bool resume);

// The two-stage regime over a run that prepare_distill_run built with the FitNet distiller
// (stages=2: its loss is the hint stage's): epochs 1..hint_epochs train with that loss, the rest
// with KD (T, kd_ce_weight, kd_weight) from the same guides.
std::unique_ptr<train::Regime> make_fitnet_two_stage(train::Run& run, const DistillSetup& setup);

}  // namespace kd::distill
