// distill_run.h: a distillation run = a training run (train.h) whose loss comes from a Distiller
// fed by frozen guides (the teacher and, for DGKD, assistants), possibly through the teacher cache.
//
// Several teachers (config.teacher plus config.teachers, or only config.teachers): each runs on
// the batch (or is read from the cache, one file per teacher) and their logits are combined by
// config.teacher_combine (distill/fusion.h: mean, weighted, confidence) into the one teacher
// output the method sees; its features are the first teacher's.
//
// One step (DESIGN.md's data flow):
//   batch -> teacher.forward (eval mode, no gradient)  or  TeacherCache::logits (same augmented view)
//         -> student.forward (train mode)
//         -> distill_loss(distiller, student, teacher, {labels, indices, epoch}) -> total + named parts
//            (w_ce * CE(zs, y) + the distiller's own terms, distiller.h)
//   and run_training does backward, the optimizer step (student + the distiller's helpers), the
//   logging of every part per epoch, checkpoints (student + "distiller" helpers) and resume.
//
// Any pair of models works: a smaller student (compression), the same architecture (born-again),
// a larger one (expansion), or another family; only the class count and input shape must agree.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "distill/fusion.h"
#include "distill/teacher_cache.h"
#include "train/train.h"

namespace kd::distill {

struct DistillSetup {
  std::vector<Guide> guides;               // the teachers first, then the assistants
  size_t num_teachers = 1;                 // guides[0 .. num_teachers) are teachers (several: combined)
  std::shared_ptr<Distiller> distiller;
  std::shared_ptr<TeacherCache> cache;     // set when config.teacher_cache
  // What each guide sees (cross-modal runs): -1 the student's images (Batch::images), k the
  // paired view Batch::views[k] (the run's views[k], the guide's modality). With the teacher
  // cache there are no paired views: the cache serves every guide's logits on its own view.
  std::vector<int> guide_view;
  double teacher_test_accuracy = -1;       // measured before training (the first teacher)
};

// The loss of one distillation step, which the epoch loop calls every step (run.loss): the guides
// run on the batch without gradient (or the teacher cache serves their logits for exactly this
// view), several teachers' logits are combined (config.teacher_combine), and the method computes
// its loss from the student's and the teacher's outputs.
class DistillationLoss : public train::BatchLoss {
 public:
  DistillationLoss(const DistillSetup& setup, TeacherCombine combine, int64_t total_epochs);
  train::Loss compute(const nn::ModelOutput& student, const data::Batch& batch, int64_t epoch) override;

 private:
  // Guide g's input for this batch: the student's images or its paired view.
  const Tensor& guide_input(size_t g, const data::Batch& batch) const;
  std::vector<Guide> guides_;  // the teachers, then the assistants
  std::vector<int> guide_view_;
  size_t num_teachers_ = 1;
  std::shared_ptr<TeacherCache> cache_;
  std::shared_ptr<Distiller> distiller_;
  TeacherCombine combine_;
  int64_t total_epochs_ = 0;
};

// prepare_run (data, student) plus the guides, the method (config.method with
// config.method_params) and the loss function. Errors name what is missing (teacher weights, a
// cost matrix, assistants given to a method that does not use them) and the fix.
train::Run prepare_distill_run(const train::TrainConfig& config, const std::string& out_dir,
                               const std::string& command_line, DistillSetup& setup);

// Runs whatever config describes into out_dir: the regime the method's registry row names
// ("baseline" or "": plain cross-entropy training; "acd_u": its two networks), otherwise (and
// for a fusion) a distillation run with the epoch loop. Prints the data sets and models first.
// (kdlab distill and kdlab sweep.)
train::RunSummary run_method(train::TrainConfig config, const std::string& out_dir, const std::string& command_line,
                             bool resume);
// The two regimes that live here: plain cross-entropy training (the "baseline" row) and a
// distillation run (prepare_distill_run, then the epoch loop).
train::RunSummary run_baseline(const train::TrainConfig& config, const std::string& out_dir,
                               const std::string& command_line, bool resume);
train::RunSummary run_distillation(const train::TrainConfig& config, const std::string& out_dir,
                                   const std::string& command_line, bool resume);

// JSON object of hyper-parameters ({"T": 4, "converged": true}) -> Params ("T" -> "4").
Params params_from_json(const nlohmann::json& j);


}  // namespace kd::distill
