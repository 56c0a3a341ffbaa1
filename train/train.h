// train.h: the epoch loop, the regime that plain training (a teacher or a baseline student) and
// every registry distillation method train with (run_regime in train/regime.h drives it).
//
// One epoch: for each batch from the DataLoader, forward, loss (Run::loss, a BatchLoss:
// cross-entropy for plain training), backward, optimizer step with the scheduled LR; then evaluation on the test
// split. The run directory receives:
//   config.json              the resolved recipe, seed, command line, versions, git revision
//   metrics.jsonl            one JSON line per epoch: loss parts, train/test accuracy, LR,
//                            time, images/s, best accuracy so far
//   checkpoint.safetensors   model + optimizer + position, written atomically every epoch
//                            (and on Ctrl-C, mid-epoch); `resume` continues from it
//   model_last.safetensors   the final weights (a plain state dict, for `kdlab eval`)
//   model_best.safetensors   the weights of the best test epoch
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/loader.h"
#include "train/loss.h"
#include "train/recipe.h"
#include "train/regime.h"
#include "train/run_recorder.h"
#include "nn/checkpoint.h"
#include "nn/models/model.h"
#include "nn/optim.h"
#include "nn/schedule.h"

namespace kd::train {

// The loss of one batch, computed from the model's output: what the epoch loop calls every step.
// An interface (not a std::function) so that "go to implementation" on the loop's call finds
// every loss: CrossEntropyLoss here, distill::DistillationLoss (distill/distill_run.h).
class BatchLoss {
 public:
  virtual ~BatchLoss() = default;
  // epoch counts from 0.
  virtual Loss compute(const nn::ModelOutput& out, const data::Batch& batch, int64_t epoch) = 0;
};
Loss cross_entropy_loss(const nn::ModelOutput& out, const data::Batch& batch, int64_t epoch);
// Plain training: CE(logits, labels), one part "ce".
class CrossEntropyLoss : public BatchLoss {
 public:
  Loss compute(const nn::ModelOutput& out, const data::Batch& batch, int64_t epoch) override {
    return cross_entropy_loss(out, batch, epoch);
  }
};
// A loss written as a function (tests wrap a run's loss this way to watch or interrupt it).
using LossFn = std::function<Loss(const nn::ModelOutput& out, const data::Batch& batch, int64_t epoch)>;
std::shared_ptr<BatchLoss> function_loss(LossFn fn);
// The loss of a batch together with its virtual views (Run::virtual_transform): `virtual_out` is
// the model's output on `virtual_batch`, the same images in the same order, strongly augmented.
using VirtualLossFn = std::function<Loss(const nn::ModelOutput& out, const data::Batch& batch,
                                         const nn::ModelOutput& virtual_out, const data::Batch& virtual_batch,
                                         int64_t epoch)>;

// The virtual views of a batch: each image batch.indices[b] of `dataset` augmented afresh with
// `transform`, its random choices drawn from one generator seeded by (seed, epoch, batch index),
// so a resumed run draws the same views. Labels, indices, epoch and batch index are copied.
data::Batch make_virtual_batch(const data::Dataset& dataset, const data::Batch& batch,
                               const data::TransformConfig& transform, uint64_t seed);

struct EvalResult {
  double accuracy = 0;  // top-1, in [0, 1]
  double loss = 0;      // mean cross-entropy
  int64_t count = 0;
  Tensor logits;        // (N, K) in data set order, when asked for
};
// The evaluation pass, written once: the model in evaluation mode without gradients (its mode
// restored afterwards, also on an error), `dataset` in order with the test transform (only its
// first `limit` images when limit > 0), visit(batch) for every batch. evaluate, kdlab analyze's
// passes and WKD-L's feature pass all go through it.
void for_each_eval_batch(nn::Module& model, const data::Dataset& dataset, int64_t batch_size,
                         const std::function<void(const data::Batch& batch)>& visit, int64_t limit = 0);

// Evaluation mode, no gradient, data set order. limit > 0 evaluates the first `limit` images.
EvalResult evaluate(nn::Classifier& model, const data::Dataset& dataset, int64_t batch_size, bool keep_logits = false,
                    int64_t limit = 0);


// Everything one run needs; the caller builds the model and the data sets.
struct Run {
  TrainConfig config;
  std::string out_dir;
  std::string command_line;                  // recorded in config.json
  std::shared_ptr<nn::Classifier> model;
  data::Dataset train_set, test_set;
  data::Dataset val_set;                     // held out of the training set (config.val_split); may be empty
  std::shared_ptr<BatchLoss> loss = std::make_shared<CrossEntropyLoss>();  // called every step
  nn::NamedTensors extra_params;             // trainable helpers (distillers), optimised too
  nn::LabeledModules extra_modules;          // saved in checkpoints beside "model"
  nlohmann::json extra_record;               // more to write into config.json
  // The true training labels when label noise was injected (config.label_noise); undefined otherwise.
  Tensor clean_train_labels;
  // When set, chooses each training image's augmentation (the teacher cache's stored views).
  std::function<data::AugParams(int64_t index, Generator& gen)> choose_aug;
  // Virtual views (VRM): when virtual_loss is set, every training batch also gets a second,
  // strongly augmented copy of its images (make_virtual_batch with virtual_transform), the model
  // runs on it too, and virtual_loss replaces loss. Unset: the loop is unchanged.
  data::TransformConfig virtual_transform;
  VirtualLossFn virtual_loss;
  // Paired views (cross-modal distillation): every training batch also carries the same images,
  // with the same crops and flips, in these modalities (Batch::views[k]), for the guides.
  std::vector<data::Modality> views;
};

// The epoch loop (a Regime, train/regime.h, run by run_regime): trains for config.epochs,
// resuming from out_dir/checkpoint.safetensors when `resume` (also mid-epoch, after Ctrl-C).
RunSummary run_training(Run& run, bool resume);
// The epoch loop as a Regime object (after checking the config and setting the threads), for a
// regime built on it: FitNets' two stages (distill/feature/fitnet_run.cpp) swap run.loss between
// epochs and let it do the rest. run_training = run_regime(*make_epoch_loop(run), ...).
std::unique_ptr<Regime> make_epoch_loop(Run& run);

// Loads train and test splits as config says (limits applied), injects config.label_noise into
// the training labels (seeded by config.seed; the noisy labels are saved as
// out_dir/noisy_labels.npy, the test set stays clean), holds out config.val_split training
// images as the validation split (a fixed seed, the same for every run) and builds config.model.
// The first n images of d (--train-limit / --test-limit; n <= 0 or >= the size: all of them). An
// image folder is stored sorted by class, so they may hold only some of its classes: then
// *warning (when given) says how many, otherwise it is left empty.
data::Dataset first_n(const data::Dataset& d, int64_t n, std::string* warning = nullptr);

// With config.init_weights the model starts from those weights (non-strict: what did not load is
// printed and recorded); with config.peft it is wrapped (nn/peft.h) and only the PEFT parameters
// train (config.train_only: peft, head = also the classifier, all); run.extra_record["peft"] keeps
// the spec and the base weights' hash, and the run saves peft.safetensors beside model_last.
Run prepare_run(const TrainConfig& config, const std::string& out_dir, const std::string& command_line);
// The init-weights and PEFT part of prepare_run, on run.model.
void prepare_peft(Run& run);

// The training augmentation of a config for a data set (its modality): crop + flip when
// config.augment, the colour jitter config.color_jitter, the normalisation of d's modality.
data::TransformConfig training_transform(const TrainConfig& config, const data::Dataset& d);
// Sets d's modality to config.input and plants config.chroma_cue (if any) into it; prepare_run
// calls it on every split, and the tools that load a split themselves (kdlab eval) call it too.
// Returns how many images it gave the cue.
int64_t apply_input_settings(const TrainConfig& config, data::Dataset& d);

// Applies config.threads to OpenBLAS and OpenMP (0 leaves the defaults).
void set_threads(int64_t threads);

// The optimizer a config describes (sgd, adam, adamw; weight decay, momentum, no decay on 1-D
// parameters) over a model's trainable parameters and a distiller's helpers, at base LR `lr`
// (config.lr when negative). The one optimizer factory: train, distill and ACD-U use it.
std::unique_ptr<nn::Optimizer> make_optimizer(const TrainConfig& config, const nn::NamedTensors& model_params,
                                              const nn::NamedTensors& helper_params = {}, double lr = -1);

// Builds the schedule a config describes.
nn::Schedule make_schedule(const TrainConfig& config);


}  // namespace kd::train
