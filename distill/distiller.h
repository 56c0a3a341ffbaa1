// distiller.h: the interface every distillation method implements, and the explicit registry.
//
// A Distiller turns (student outputs, teacher outputs, batch, epoch) into its own loss terms
// with a named breakdown. It owns any trainable helper modules (regressors, connectors,
// projectors), which the optimizer trains with the student and checkpoints save beside it, and it
// declares which teacher outputs it reads, so that logits-only methods can use the teacher cache.
//
// The contract on cross-entropy: a method's loss() returns its own terms only, never the plain
// CE(student logits, labels). It declares the weight of that CE instead (ce_weight(), its option
// "ce_weight", default its official code's), and the one function distill_loss adds it, once:
//     L = w_ce * CE(zs, y) + the method's terms         parts {"ce", then the method's parts}
// Everything that trains or inspects a method calls distill_loss (the training loop, the VRM
// virtual-view loop, `kdlab loss`, the step programs); a fusion of methods is one Distiller whose
// terms are its components' terms, so CE is still counted once. CE-like terms of a method's own
// (HCD's CE of the sub-logits, VRM's CE of the virtual view) stay in its loss().
//
// Per-method hyper-parameters come as a map of strings ("T" -> "4", "beta" -> "8") so that the
// command line (--set T=4), recipes and the loss inspector pass them the same way. Each method
// declares them once, in the table of its options struct (distill/options.h), with defaults from
// its paper's official code; the parser, params() and `kdlab distill --list --method M` all come
// from that table, and unknown keys are an error that lists the known ones.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/transforms.h"
#include "distill/options.h"
#include "engine/tensor.h"
#include "nn/models/model.h"
#include "nn/module.h"
#include "train/loss.h"
#include "train/recipe.h"
#include "train/regime.h"

namespace kd::distill {

// Which teacher outputs a method reads (logits are always computed).
struct TeacherNeeds {
  bool feats = false;         // feats / preact_feats (feature maps)
  // Only the teacher's pooled feature (ModelOutput::pooled, (B, C)): small enough for the teacher
  // cache to store beside the logits (RKD, PKT, CC on their default tap).
  bool pooled = false;
  // A second, strongly augmented view of every training image, run through both networks and
  // given in BatchInfo::student_virtual / teacher_virtual (VRM). The teacher cache cannot serve it.
  bool virtual_views = false;
  // The logits of the teacher's assistants, given in BatchInfo::assistant_logits (DGKD). The run
  // supplies them from its --assistant guides (the teacher cache stores them beside the teacher's).
  bool assistants = false;
  // A (K, K) class-to-class cost matrix, given in DistillerContext::class_cost (WKD-L). Without
  // one the method builds its own from the teacher's classifier and hands it back through
  // Distiller::artifacts() for the run folder.
  bool class_cost = false;
  bool logits_only() const { return !feats && !pooled && !virtual_views; }
  // What the teacher cache can serve: logits, and the pooled feature.
  bool cacheable() const { return !feats && !virtual_views; }
};

// The loss of one batch: total (0-d, differentiable) and named parts (0-d, for logging), the
// weighted terms that add up to total, named as in the paper ("ce", "tckd", "nckd"). The same
// struct the training loop takes (train/loss.h).
using LossBreakdown = train::Loss;

// What a distiller sees of a batch besides the network outputs.
struct BatchInfo {
  Tensor labels;   // (B) int64
  Tensor indices;  // (B) int64, positions in the training set (or undefined)
  int64_t epoch = 1;  // counted from 1, as mdistiller does (warm-up uses epoch / W)
  int64_t batch_index = -1;  // position of the batch in its epoch during training; -1 outside a run
  int64_t total_epochs = 0;
  // The outputs on the virtual views of the same images, in the same order, when the method's
  // needs() asks for virtual_views (undefined logits otherwise).
  nn::ModelOutput student_virtual, teacher_virtual;
  // The assistants' logits (B, K), largest assistant first, when needs().assistants.
  std::vector<Tensor> assistant_logits;
};

// An array a method built for itself that the run keeps as RUN_DIR/<name>.npy (WKD-L's cost
// matrix from the teacher's classifier), with a line saying what it is.
struct Artifact {
  std::string name;
  Tensor value;
  std::string note;
};

// Called with every intermediate tensor, named as in the paper, in the order the equation
// computes it (Distiller::explain, `kdlab loss --explain`). Empty: nothing is shown.
using ExplainFn = std::function<void(const std::string& name, const Tensor& value)>;

class Distiller : public nn::Module {
 public:
  virtual std::string name() const = 0;  // "kd", "dkd", ...
  virtual TeacherNeeds needs() const { return {}; }
  // The method's own terms: total and parts, without the plain CE(zs, y) (distill_loss adds it).
  virtual LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) = 0;
  // w_ce, the weight of the CE(zs, y) that distill_loss adds for this batch: the method's option
  // ce_weight. std::nullopt: no CE at all for this batch, not even with weight 0, so that what
  // only CE reaches gets no gradient (FitNet's hint stage trains the layers up to the guided one).
  virtual std::optional<double> ce_weight(const BatchInfo& batch) const = 0;
  // The label smoothing of that CE (HCD's option label_smoothing; 0 for the others).
  virtual double ce_label_smoothing() const { return 0.0; }
  // The hyper-parameters in effect (after defaults), for run records and --explain.
  virtual Params params() const = 0;
  // When needs().virtual_views: the strong augmentation of the virtual views for a data set.
  virtual data::TransformConfig virtual_transform(const data::Dataset& d) const;
  // Arrays the method built for itself, for the run folder (see Artifact).
  virtual std::vector<Artifact> artifacts() const { return {}; }
  // Non-empty (a description) when this configuration of the method is one part of a training
  // regime of its own, which its registry row's runner drives (FitNets' stages=2: the distiller
  // is the hint stage, KD follows): it then cannot go into a fusion.
  virtual std::string regime_of_its_own() const { return {}; }
  // Step-through support: when set, methods call it with every intermediate tensor, named as
  // in the paper, in the order the equation computes them (kdlab loss --explain).
  ExplainFn explain;

 protected:
  void show(const std::string& name, const Tensor& value) const {
    if (explain) explain(name, value);
  }
};

// The loss of one batch as training sees it: the method's terms (d.loss) plus
//     w_ce * CE(student.logits, batch.labels)        w_ce = d.ce_weight(batch)
// total = ce part + the method's total; parts {"ce", then the method's parts}; "ce" and "loss"
// are the last steps shown to d.explain. When d.ce_weight(batch) is std::nullopt the "ce" part is
// a constant 0 and the total is the method's.
LossBreakdown distill_loss(Distiller& d, const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                           const BatchInfo& batch);
// The same sum for a method's terms computed by its equation function (kd_loss, dkd_loss, ...):
// `own` with ce_weight * CE(zs, labels) in front (a weight of 0 still puts CE in the graph, as
// PyTorch's 0 * CE does: every parameter it reaches gets a zero gradient).
LossBreakdown add_cross_entropy(const LossBreakdown& own, const Tensor& zs, const Tensor& labels, double ce_weight,
                                const ExplainFn& explain = {}, double label_smoothing = 0.0);

struct DistillerContext {
  // The student's and teacher's feature shapes (for methods that build helpers), from one
  // forward pass of each on a sample batch; may be empty for logits-only methods.
  nn::ModelOutput student_sample, teacher_sample;
  // The networks themselves, for methods that read or adapt their weights (CAT-KD reads both
  // classifiers and removes the student's classifier bias); null where there are none (kdlab
  // loss), and such methods then need their inputs given as taps (the `cam` tap).
  std::shared_ptr<nn::Classifier> student_model, teacher_model;
  int64_t num_classes = 0;
  uint64_t seed = 0;
  // A (K, K) class cost matrix given by the user (kdlab loss --cost-matrix), for the methods whose
  // needs().class_cost; undefined: their cost_matrix option, or built from the teacher.
  Tensor class_cost;
};

using DistillerFactory = std::function<std::shared_ptr<Distiller>(const Params&, const DistillerContext&)>;
// A training regime of its own (train/regime.h): runs the whole method from a config into out_dir.
using RegimeRunner = train::RunSummary (*)(const train::TrainConfig& config, const std::string& out_dir,
                                           const std::string& command_line, bool resume);
struct DistillerEntry {
  std::string name;         // lowercase with underscores
  std::string family;       // "output", "feature", "relation" ("-" for the baseline)
  std::string description;  // one line: paper and idea
  // The loss of a method that trains with the distillation epoch loop (distill_run.h); empty for
  // a method with a regime of its own, which cannot be fused or given to kdlab loss.
  DistillerFactory create;
  // The method's option table (options.h) with its defaults, without building the method:
  // option_infos<ItsOptions> (`kdlab distill --list --method NAME`).
  std::vector<OptionInfo> (*options)();
  // How the method trains: null = the distillation epoch loop with `create`'s Distiller; else the
  // regime's runner (ACD-U's two networks; the baseline's plain cross-entropy; FitNets, whose
  // runner trains stages=1 with the epoch loop and stages=2 with its two-stage regime).
  RegimeRunner regime = nullptr;
};
// The one explicit table of methods.
const std::vector<DistillerEntry>& distiller_registry();
// The registry row of `name`; throws listing the known methods when there is none.
const DistillerEntry& registry_entry(const std::string& name);
// Whether `name` (a registry method or a fusion) trains with a Distiller's loss in the epoch loop.
bool trains_with_distiller(const std::string& name);
// Throws listing the known methods when `name` is unknown, and when its row has no Distiller.
std::shared_ptr<Distiller> create_distiller(const std::string& name, const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
