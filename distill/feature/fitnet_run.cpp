// fitnet_run.cpp: FitNets' two-stage schedule (the paper's form, --set stages=2) as a training
// regime (train/regime.h), and the registry row's runner.
//
//   epochs 1..N      stage 1: the epoch loop with the FitNet distiller's loss, w_feat * L_hint and
//                    no CE, so only the layers up to the guided one and the regressor learn
//   epochs N+1..E    stage 2: the same loop with KD's loss (output/kd.h),
//                    kd_ce_weight * CE(zs, y) + kd_weight * T^2 * KL(pt || ps)
//
// Everything else is the epoch loop's (train::make_epoch_loop): one optimizer and one LR schedule
// over all E epochs (the regressor gets no gradient in stage 2 and the optimizer skips it), the
// checkpoint (student, regressor, optimizer, position), resume, also mid-epoch. The stage is a
// function of the epoch, so a resumed run takes up the right loss. Every metrics line carries its
// stage and both terms' columns (loss_hint, loss_kd; the inactive one 0).
#include <fmt/format.h>

#include "distill/feature/fitnet_run.h"

#include "distill/feature/fitnet.h"

namespace kd::distill {

namespace {

class FitNetTwoStage : public train::Regime {
 public:
  // run: prepared with the FitNet distiller (hint_loss is its run.loss); kd_loss: stage 2's.
  FitNetTwoStage(train::Run& run, const FitNetOptions& opt, std::shared_ptr<train::BatchLoss> kd_loss)
      : run_(run), opt_(opt), hint_loss_(run.loss), kd_loss_(std::move(kd_loss)), loop_(train::make_epoch_loop(run)) {}

  nlohmann::json record() override {
    nlohmann::json r = loop_->record();
    const int64_t N = opt_.hint_epochs, E = run_.config.epochs;
    r["fitnet_stages"] = {{{"stage", 1}, {"epochs", fmt::format("1..{}", N)}, {"loss", "w_feat * L_hint, no CE"}},
                          {{"stage", 2},
                           {"epochs", fmt::format("{}..{}", N + 1, E)},
                           {"loss", "kd_ce_weight * CE + kd_weight * T^2 * KL"},
                           {"kd", fitnet_stage2_kd_params(opt_)}}};
    return r;
  }
  nn::LabeledModules modules() override { return loop_->modules(); }
  nn::LabeledOptimizers optimizers() override { return loop_->optimizers(); }
  void save_state(nn::TrainingCheckpoint& info) override { loop_->save_state(info); }
  void prepare_resume(const nlohmann::json& scalars) override { loop_->prepare_resume(scalars); }
  void restore_state(const nn::TrainingCheckpoint& checkpoint) override { loop_->restore_state(checkpoint); }
  void save_best(const train::RunRecorder& recorder) override { loop_->save_best(recorder); }
  void finish(const train::RunRecorder& recorder) override { loop_->finish(recorder); }

  train::EpochReport run_epoch(int64_t epoch) override {  // epoch counts from 0
    const int64_t stage = fitnet_stage(opt_, epoch + 1);
    run_.loss = stage == 1 ? hint_loss_ : kd_loss_;  // what the loop calls every step of this epoch
    train::EpochReport r = loop_->run_epoch(epoch);
    if (r.interrupted) return r;
    r.line["stage"] = stage;
    r.line[stage == 1 ? "loss_kd" : "loss_hint"] = 0.0;  // both terms' columns in every line
    r.summary = fmt::format("stage {} ({}) | {}", stage, stage == 1 ? "hint" : "kd", r.summary);
    return r;
  }

 private:
  train::Run& run_;
  FitNetOptions opt_;
  std::shared_ptr<train::BatchLoss> hint_loss_, kd_loss_;
  std::unique_ptr<train::Regime> loop_;
};

}  // namespace

std::unique_ptr<train::Regime> make_fitnet_two_stage(train::Run& run, const DistillSetup& setup) {
  const train::TrainConfig& cfg = run.config;
  const FitNetOptions opt = parse_options<FitNetOptions>("fitnet", params_from_json(cfg.method_params));
  KD_CHECK(opt.stages == 2 && !setup.distiller->regime_of_its_own().empty(),
           "the two-stage regime needs a run prepared with the fitnet distiller and stages=2");
  KD_CHECK(opt.hint_epochs < cfg.epochs,
           "fitnet: hint_epochs={} leaves no epoch for stage 2 (KD) in a run of {} epochs; give hint_epochs < epochs",
           opt.hint_epochs, cfg.epochs);
  KD_CHECK(setup.num_teachers == 1 && setup.guides.size() == 1, "fitnet stages=2 distils one teacher; give one --teacher");
  // stage 2: KD from the same teacher, with stage 2's options
  DistillerContext ctx;
  ctx.num_classes = cfg.num_classes > 0 ? cfg.num_classes : run.train_set.num_classes();
  ctx.seed = cfg.seed;
  DistillSetup kd_setup = setup;
  kd_setup.distiller = make_kd_distiller(fitnet_stage2_kd_params(opt), ctx);  // output/kd.h
  auto kd_loss = std::make_shared<DistillationLoss>(kd_setup, TeacherCombine{}, cfg.epochs);
  return std::make_unique<FitNetTwoStage>(run, opt, kd_loss);
}

train::RunSummary run_fitnet_method(const train::TrainConfig& cfg, const std::string& out_dir,
                                    const std::string& command_line, bool resume) {
  const FitNetOptions opt = parse_options<FitNetOptions>("fitnet", params_from_json(cfg.method_params));
  if (opt.stages != 2) return run_distillation(cfg, out_dir, command_line, resume);  // mdistiller's form
  DistillSetup setup;
  train::Run run = prepare_distill_run(cfg, out_dir, command_line, setup);  // the FitNet distiller: stage 1
  std::unique_ptr<train::Regime> regime = make_fitnet_two_stage(run, setup);
  fmt::print("{}\n{}\nstudent {} ({} parameters) <- teacher {} by fitnet in two stages: epochs 1..{} hint, {}..{} KD, "
             "batch {}, run directory {}\n",
             run.train_set.summary(), run.test_set.summary(), cfg.model, run.model->num_parameters(),
             setup.guides[0].model, opt.hint_epochs, opt.hint_epochs + 1, cfg.epochs, cfg.batch_size, out_dir);
  return train::run_regime(*regime, run.config, run.out_dir, run.command_line, resume);
}

}  // namespace kd::distill
