#include "train/train.h"

#include "nn/peft.h"
#include "nn/safetensors.h"

#include <cblas.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "datasets/label_noise.h"
#include "train/progress.h"
#include "train/run_recorder.h"
#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "engine/version.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fs = std::filesystem;

namespace kd::train {


// ------------------------------------------------------------------ helpers

void set_threads(int64_t threads) {
  if (threads <= 0) return;  // keep KDLAB_NUM_THREADS or OpenMP's default
  set_num_threads((int)threads);  // our OpenMP kernels and OpenBLAS together (engine/parallel.h)
}

Loss cross_entropy_loss(const nn::ModelOutput& out, const data::Batch& batch, int64_t) {
  Tensor ce = cross_entropy(out.logits, batch.labels);
  return {ce, {{"ce", ce}}};
}

namespace {
class FunctionLoss : public BatchLoss {
 public:
  explicit FunctionLoss(LossFn fn) : fn_(std::move(fn)) {}
  Loss compute(const nn::ModelOutput& out, const data::Batch& batch, int64_t epoch) override {
    return fn_(out, batch, epoch);
  }

 private:
  LossFn fn_;
};
}  // namespace

std::shared_ptr<BatchLoss> function_loss(LossFn fn) { return std::make_shared<FunctionLoss>(std::move(fn)); }

data::Batch make_virtual_batch(const data::Dataset& dataset, const data::Batch& batch,
                               const data::TransformConfig& transform, uint64_t seed) {
  KD_CHECK(batch.indices.defined() && batch.indices.numel() == batch.size(),
           "virtual views: the batch has no image indices to augment again");
  const int64_t B = batch.size(), C = dataset.channels(), H = dataset.height(), W = dataset.width();
  data::validate_transform(transform, C, H, W);
  // one stream per (seed, epoch, batch): resumable, and apart from the loader's own draws
  Generator gen(seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)batch.epoch << 32) ^ (uint64_t)batch.batch_index ^
                0x5649525455414cull);
  const Tensor images = dataset.images.contiguous();  // (N, C, H, W) uint8
  const uint8_t* src = images.data<uint8_t>();
  data::Batch out;
  const int64_t C2 = data::transform_channels(transform, C);
  out.images = empty({B, C2, H, W});
  float* dst = out.images.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t index = (int64_t)batch.indices.at({b});
    KD_CHECK(index >= 0 && index < dataset.size(), "virtual views: image index {} is outside the data set of {}",
             index, dataset.size());
    data::AugParams p = data::draw_aug_params(transform, H, W, gen);
    data::apply_transform(src + index * C * H * W, C, H, W, p, transform, dst + b * C2 * H * W,
                          dataset.offset_of(index));
    out.aug.push_back(p);
  }
  out.labels = batch.labels;
  out.indices = batch.indices;
  out.epoch = batch.epoch;
  out.batch_index = batch.batch_index;
  return out;
}

nn::Schedule make_schedule(const TrainConfig& c) {
  nn::Schedule s;
  s.kind = c.schedule;
  s.base_lr = c.lr;
  s.per_iteration = c.schedule_per_iteration;
  s.total_epochs = c.epochs;
  s.milestones = c.milestones;
  s.gamma = c.lr_gamma;
  s.warmup_epochs = c.warmup_epochs;
  s.min_lr = c.min_lr;
  const std::vector<std::string> kinds{"constant", "multistep", "cosine", "warmup", "onecycle"};
  KD_CHECK(std::find(kinds.begin(), kinds.end(), s.kind) != kinds.end(), "unknown schedule '{}'; known: {}", s.kind,
           fmt::join(kinds, ", "));
  return s;
}

std::unique_ptr<nn::Optimizer> make_optimizer(const TrainConfig& c, const nn::NamedTensors& model_params,
                                              const nn::NamedTensors& helper_params, double lr) {
  if (lr < 0) lr = c.lr;
  auto groups = nn::training_param_groups(model_params, helper_params, lr, lr, c.weight_decay, c.momentum,
                                          c.no_decay_1d);
  KD_CHECK(!groups.empty(), "the network has no trainable parameters (all frozen?): nothing to optimise");
  if (c.optimizer == "sgd") return std::make_unique<nn::SGD>(std::move(groups), nn::SGDOptions{0.0, c.nesterov});
  if (c.optimizer == "adam") return std::make_unique<nn::Adam>(std::move(groups));
  if (c.optimizer == "adamw") return std::make_unique<nn::AdamW>(std::move(groups));
  throw Error(fmt::format("unknown optimizer '{}'; known: sgd, adam, adamw", c.optimizer));
}


void for_each_eval_batch(nn::Module& model, const data::Dataset& dataset, int64_t batch_size,
                         const std::function<void(const data::Batch& batch)>& visit, int64_t limit) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.transform = data::eval_transform(dataset);
  const data::Dataset ds = first_n(dataset, limit);
  data::DataLoader loader(ds, lo);
  loader.start_epoch(0);
  data::Batch b;
  try {
    while (loader.next(b)) visit(b);
  } catch (...) {
    model.train(was_training);
    throw;
  }
  model.train(was_training);
}

EvalResult evaluate(nn::Classifier& model, const data::Dataset& dataset, int64_t batch_size, bool keep_logits,
                    int64_t limit) {
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  std::vector<Tensor> all_logits;
  for_each_eval_batch(model, dataset, batch_size, [&](const data::Batch& b) {
    nn::ModelOutput out = model.forward(b.images);  // logits (B, K)
    loss_sum += cross_entropy(out.logits, b.labels, {.reduction = Reduction::Sum}).item();
    correct += (int64_t)sum(eq(argmax(out.logits, 1), b.labels).to(DType::f32)).item();
    r.count += b.size();
    if (keep_logits) all_logits.push_back(out.logits);
  }, limit);
  r.accuracy = r.count ? (double)correct / r.count : 0.0;
  r.loss = r.count ? loss_sum / r.count : 0.0;
  if (keep_logits && !all_logits.empty()) r.logits = cat(all_logits, 0);
  return r;
}

data::Dataset first_n(const data::Dataset& d, int64_t n, std::string* warning) {
  if (warning) warning->clear();
  if (n <= 0 || n >= d.size()) return d;
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  data::Dataset out = data::subset(d, idx);
  std::set<int64_t> seen;
  const int64_t* y = out.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) seen.insert(y[i]);
  // Warn when the first n look sorted: far fewer classes than n images drawn at random would
  // hold (K (1 - (1 - 1/K)^n) on average). A shuffled data set (CIFAR's binaries) passes, even
  // when n is too small to hold every class.
  const double K = (double)d.num_classes();
  const double expected = K * (1.0 - std::pow(1.0 - 1.0 / K, (double)n));
  if (warning && (int64_t)seen.size() < d.num_classes() && (double)seen.size() < 0.75 * expected)
    *warning = fmt::format("the first {} images hold only {} of the {} classes (this data set is stored sorted by class)",
                           n, seen.size(), d.num_classes());
  return out;
}

static data::Dataset limited(const data::Dataset& d, int64_t n, const char* option, const char* fix) {
  std::string warning;
  data::Dataset out = first_n(d, n, &warning);
  if (!warning.empty()) fmt::print(stderr, "warning: {} {}: {}; {}\n", option, n, warning, fix);
  return out;
}

data::TransformConfig training_transform(const TrainConfig& config, const data::Dataset& d) {
  data::TransformConfig tc = config.augment ? data::train_transform(d) : data::eval_transform(d);
  tc.color_jitter = (float)config.color_jitter;
  return tc;
}

int64_t apply_input_settings(const TrainConfig& config, data::Dataset& d) {
  KD_CHECK(config.paired_photometric == "shared" || config.paired_photometric == "independent",
           "paired_photometric={} is not shared or independent", config.paired_photometric);
  d.modality = data::parse_modality(config.input);
  d.input_channels();  // refuses a modality the images cannot give
  const data::ChromaCue cue = data::parse_chroma_cue(config.chroma_cue);
  return cue.active() && !d.pixel_offset.defined() ? data::plant_chroma_cue(d, cue) : 0;
}

Run prepare_run(const TrainConfig& config, const std::string& out_dir, const std::string& command_line) {
  Run run;
  run.config = config;
  run.out_dir = out_dir;
  run.command_line = command_line;
  data::LoadOptions lo;
  lo.synthetic.seed = config.seed;
  KD_CHECK(!config.coarse_labels || config.dataset == "cifar100",
           "coarse_labels: only cifar100 has super-classes (its 20 coarse labels), not {}", config.dataset);
  lo.coarse_labels = config.coarse_labels;  // CIFAR-100's 20 super-classes
  if (config.dataset == "synthetic" && config.num_classes > 0) lo.synthetic.num_classes = config.num_classes;
  run.train_set = limited(data::load_dataset(config.dataset, config.data_dir, "train", lo), config.train_limit,
                          "--train-limit", "for a random subset use --set train_subset=N instead");
  run.test_set = limited(data::load_dataset(config.dataset, config.data_dir, "test", lo), config.test_limit,
                         "--test-limit", "its accuracy covers only those classes; drop --test-limit for all");
  // A random subset (drawn with a fixed seed, so every run of an experiment trains on the same
  // images; the first-N limit would take whole classes of a class-sorted image folder).
  if (config.train_subset > 0 && config.train_subset < run.train_set.size())
    run.train_set = data::random_subset(run.train_set, config.train_subset, /*seed=*/0);
  if (!config.label_noise.empty() && config.label_noise != "none") {
    // Noisy-label experiments: corrupt the training labels only, never the test set.
    run.clean_train_labels = run.train_set.labels;
    run.train_set.labels = data::inject_label_noise(run.clean_train_labels, run.train_set.num_classes(),
                                                    config.label_noise, config.seed);
    const double rate = data::label_noise_rate(run.clean_train_labels, run.train_set.labels);
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    save_npy(out_dir + "/noisy_labels.npy", run.train_set.labels);
    run.extra_record["label_noise"] = {{"spec", config.label_noise}, {"labels_changed", rate},
                                       {"noisy_labels", out_dir + "/noisy_labels.npy"}};
    fmt::print("label noise {}: {:.1f}% of the training labels changed (saved to {}/noisy_labels.npy)\n",
               config.label_noise, 100.0 * rate, out_dir);
  }
  if (config.val_split > 0) {
    // A validation split for choosing hyper-parameters and checkpoints, so that the test set is
    // only used for the final report. Drawn with a fixed seed: every run of a sweep holds out the
    // same images.
    KD_CHECK(config.val_split < run.train_set.size(), "val_split={} leaves no training images (the training set has {})",
             config.val_split, run.train_set.size());
    std::vector<int64_t> order(run.train_set.size());
    std::iota(order.begin(), order.end(), 0);
    Generator gen(1);
    gen.partial_shuffle(order, config.val_split);
    run.val_set = data::subset(run.train_set, std::vector<int64_t>(order.begin(), order.begin() + config.val_split));
    std::vector<int64_t> rest(order.begin() + config.val_split, order.end());
    std::sort(rest.begin(), rest.end());
    run.train_set = data::subset(run.train_set, rest);
  }
  const int64_t cued_train = apply_input_settings(config, run.train_set);  // the modality, the chroma cue
  const int64_t cued_test = apply_input_settings(config, run.test_set);
  if (run.val_set.size() > 0) apply_input_settings(config, run.val_set);
  if (run.train_set.pixel_offset.defined())
    run.extra_record["chroma_cue"] = {{"spec", config.chroma_cue}, {"train_images_with_cue", cued_train},
                                      {"test_images_with_cue", cued_test}};
  if (!run.train_set.modality.is_rgb()) run.extra_record["input"] = run.train_set.modality.str();
  nn::ModelConfig mc;
  mc.num_classes = config.num_classes > 0 ? config.num_classes : run.train_set.num_classes();
  mc.in_channels = run.train_set.input_channels();
  mc.image_size = run.train_set.height();
  mc.seed = config.seed;
  run.model = nn::create_model(config.model, mc);
  prepare_peft(run);
  return run;
}

void prepare_peft(Run& run) {
  const TrainConfig& config = run.config;
  nn::Classifier& model = *run.model;
  if (!config.init_weights.empty()) {  // start from pretrained weights (a PEFT base, fine-tuning)
    // Transfer to another class count: the classifier of the file has another shape; it is left
    // out (the model keeps its fresh head, which then trains). Any other shape mismatch is an error.
    nn::NamedTensors file = nn::load_safetensors(config.init_weights).tensors, kept;
    std::map<std::string, Shape> own;
    for (auto& [n, t] : model.state_dict()) own[n] = t.shape();
    const std::string head_prefix = model.classifier_name() + ".";
    std::vector<std::string> new_head;
    for (auto& [n, t] : file) {
      if (n.rfind(head_prefix, 0) == 0 && own.count(n) && own[n] != t.shape()) new_head.push_back(n);
      else kept.push_back({n, t});
    }
    if (!new_head.empty())
      fmt::print("init weights {}: the classifier ({}) has another class count: a new head\n", config.init_weights,
                 fmt::join(new_head, ", "));
    const nn::LoadReport r = model.load_state_dict(kept, /*strict=*/false);
    fmt::print("init weights {}: {}\n", config.init_weights,
               r.ok() ? "every tensor loaded" : "loaded the matching tensors; not loaded: " + r.to_string());
    run.extra_record["init_weights"] = {{"path", config.init_weights}, {"new_head", new_head}, {"missing", r.missing},
                                        {"unexpected", r.unexpected}, {"shape_mismatch", r.shape_mismatch}};
  }
  const std::string head = model.classifier_name();
  if (config.peft.empty()) {
    KD_CHECK(config.train_only.empty() || config.train_only == "all" || config.train_only == "head",
             "train_only={} needs a PEFT spec (--peft); without one give head (a linear probe) or all",
             config.train_only);
    if (config.train_only == "head") {  // a linear probe: the classifier alone
      model.freeze();
      nn::set_trainable(model, "head", head);
    }
    return;
  }
  const nn::PeftSpec spec = nn::parse_peft_spec(config.peft);
  const std::string base_hash = nn::state_hash(model.state_dict());  // of the weights the PEFT belongs to
  const nn::PeftReport rep = nn::apply_peft(model, spec, config.seed, head);
  nn::set_trainable(model, config.train_only.empty() ? "peft" : config.train_only, head);
  fmt::print("peft {}: {}; with train_only={}: trainable {} of {} parameters\n", spec.to_string(), rep.to_string(),
             config.train_only.empty() ? "peft" : config.train_only, model.num_parameters(true), model.num_parameters());
  run.extra_record["peft"] = {{"spec", spec.to_string()},       {"base_hash", base_hash},
                              {"layers", rep.layers},           {"task_norms", rep.task_norms},
                              {"trainable", model.num_parameters(true)}, {"total", model.num_parameters()}};
}

// ------------------------------------------------------------------ the epoch loop, a regime

namespace {

// The ordinary regime: one network, run.loss on every batch, evaluation on the test split after
// every epoch. Its checkpoint holds "model", the distiller's helpers (run.extra_modules), the
// optimizer, the schedule and, after Ctrl-C, the position inside the epoch with its running sums.
class EpochLoop : public Regime {
 public:
  explicit EpochLoop(Run& run)
      : run_(run), cfg_(run.config), model_(*run.model), schedule_(make_schedule(run.config)) {
    {  // the class count, from one image in evaluation mode (touches no statistics)
      NoGradGuard ng;
      model_.eval();
      num_classes_ = model_.forward(data::eval_images(run.test_set, 1)).logits.size(1);
      model_.train();
    }
    optimizer_ = make_optimizer(cfg_, model_.named_parameters(), run.extra_params);
    data::LoaderOptions lo;
    lo.batch_size = cfg_.batch_size;
    lo.shuffle = true;
    lo.drop_last = false;
    lo.seed = cfg_.seed;
    lo.prefetch = cfg_.prefetch;
    lo.transform = training_transform(cfg_, run.train_set);
    for (const data::Modality& m : run.views)  // paired views (cross-modal): the same crops, other modalities
      lo.views.push_back(training_transform(cfg_, data::with_modality(run.train_set, m)));
    lo.independent_photometric = cfg_.paired_photometric == "independent";
    lo.choose_aug = run.choose_aug;
    loader_ = std::make_unique<data::DataLoader>(run.train_set, lo);
  }

  nlohmann::json record() override {
    nlohmann::json record = {{"config", cfg_.to_json()},
                             {"train_set", run_.train_set.summary()},
                             {"test_set", run_.test_set.summary()},
                             {"val_set", run_.val_set.size() > 0 ? run_.val_set.summary() : std::string("none")},
                             {"num_classes", num_classes_},
                             {"parameters", model_.num_parameters()},
                             {"schedule", schedule_.describe()}};
    for (auto& [k, v] : run_.extra_record.items()) record[k] = v;
    return record;
  }
  nn::LabeledModules modules() override {
    nn::LabeledModules modules{{"model", &model_}};
    for (auto& m : run_.extra_modules) modules.push_back(m);
    return modules;
  }
  nn::LabeledOptimizers optimizers() override { return {{"", optimizer_.get()}}; }
  void save_state(nn::TrainingCheckpoint& info) override {
    info.step = optimizer_->steps_taken();
    info.schedule = schedule_.to_json();
    info.scalars = {{"batch_in_epoch", batch_in_epoch_}, {"partial", partial_},
                    {"best_val_accuracy", best_val_acc_}, {"val_selected_test_accuracy", val_selected_test_acc_}};
  }
  void restore_state(const nn::TrainingCheckpoint& ck) override {
    batch_in_epoch_ = ck.scalars.value("batch_in_epoch", (int64_t)0);
    partial_ = ck.scalars.value("partial", nlohmann::json::object());
    best_val_acc_ = ck.scalars.value("best_val_accuracy", -1.0);
    val_selected_test_acc_ = ck.scalars.value("val_selected_test_accuracy", 0.0);
  }
  EpochReport run_epoch(int64_t epoch) override;
  void save_best(const RunRecorder& recorder) override {
    recorder.save_weights("model_best.safetensors", model_, cfg_.model, num_classes_, run_.train_set.modality.str());
  }
  void finish(const RunRecorder& recorder) override {
    recorder.save_weights("model_last.safetensors", model_, cfg_.model, num_classes_, run_.train_set.modality.str());
    if (!cfg_.peft.empty()) save_peft(recorder);
  }
  // peft.safetensors: the PEFT parameters alone (and the task BatchNorms, and the classifier when
  // it trained), with the spec and the hash of the base weights they belong to.
  void save_peft(const RunRecorder& recorder) const {
    const nlohmann::json& p = run_.extra_record.at("peft");
    nn::save_safetensors(recorder.dir() + "/peft.safetensors", nn::peft_state(model_),
                         {{"spec", p.at("spec").get<std::string>()},
                          {"base_hash", p.at("base_hash").get<std::string>()},
                          {"model", cfg_.model},
                          {"num_classes", std::to_string(num_classes_)}});
  }

 private:
  Run& run_;
  const TrainConfig& cfg_;
  nn::Classifier& model_;
  nn::Schedule schedule_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  std::unique_ptr<data::DataLoader> loader_;
  int64_t num_classes_ = 0;
  // the position inside an interrupted epoch and its running sums (0 and {} between epochs)
  int64_t batch_in_epoch_ = 0;
  nlohmann::json partial_ = nlohmann::json::object();
  double best_val_acc_ = -1, val_selected_test_acc_ = 0;  // with a validation split
};

EpochReport EpochLoop::run_epoch(int64_t epoch) {
  const int64_t steps_per_epoch = loader_->num_batches();
  model_.train();
  loader_->start_epoch(epoch);
  // running sums of this epoch: loss parts, correct, seen (continued from partial_ on resume)
  std::map<std::string, double> part_sums;
  double loss_sum = partial_.value("loss", 0.0), correct = partial_.value("correct", 0.0);
  double seen = partial_.value("seen", 0.0), train_seconds = partial_.value("seconds", 0.0);
  int64_t skipped = partial_.value("skipped", int64_t(0));  // steps skipped for a non-finite loss (skip_nonfinite)
  const nlohmann::json parts = partial_.value("parts", nlohmann::json::object());
  for (auto& [n, v] : parts.items()) part_sums[n] = v.get<double>();
  int64_t k = 0;
  data::Batch batch;
  for (; k < batch_in_epoch_ && loader_->next(batch); ++k) {}  // resume mid-epoch: replay the loader
  batch_in_epoch_ = 0;
  partial_ = nlohmann::json::object();

  Progress progress(steps_per_epoch, fmt::format("epoch {}/{}", epoch + 1, cfg_.epochs), cfg_.log_every);
  auto t_epoch = std::chrono::steady_clock::now();
  double lr = 0;
  const std::string ckpt_path = run_.out_dir + "/checkpoint.safetensors";
  while (!interrupted() && loader_->next(batch)) {
    lr = schedule_.lr(epoch, k, steps_per_epoch);
    optimizer_->scale_lr(lr / cfg_.lr);
    nn::ModelOutput out = model_.forward(batch.images);
    Loss loss;
    if (run_.virtual_loss) {  // virtual views: the same images strongly augmented, through the model too
      data::Batch virtual_batch = make_virtual_batch(run_.train_set, batch, run_.virtual_transform, cfg_.seed);
      nn::ModelOutput virtual_out = model_.forward(virtual_batch.images);
      loss = run_.virtual_loss(out, batch, virtual_out, virtual_batch, epoch);
    } else {
      loss = run_.loss->compute(out, batch, epoch);
    }
    const double loss_value = loss.total.item();
    if (!std::isfinite(loss_value)) {  // the non-finite-loss policy
      std::string bad;
      for (auto& [n, t] : loss.parts)
        if (!std::isfinite(t.item())) bad += (bad.empty() ? "" : ", ") + n;
      if (bad.empty()) bad = "total";
      if (skipped < cfg_.skip_nonfinite) {  // skip the step: no backward, no update; counted in metrics
        ++skipped;
        ++k;
        fmt::print(stderr, "\nskipped epoch {} step {}: the loss is {} (non-finite parts: {}); {} of {} skips "
                           "allowed this epoch (skip_nonfinite)\n",
                   epoch + 1, k, loss_value, bad, skipped, cfg_.skip_nonfinite);
        continue;
      }
      throw Error(fmt::format("the loss became {} at epoch {} step {} (non-finite parts: {}){}; the last good "
                              "checkpoint is {} (lower the learning rate, then --resume; --set skip_nonfinite=N "
                              "skips up to N such steps per epoch)",
                              loss_value, epoch + 1, k + 1, bad,
                              skipped > 0 ? fmt::format(", after {} skipped steps this epoch", skipped) : "",
                              ckpt_path));
    }
    optimizer_->zero_grad();  // the model's and the helpers' gradients
    loss.total.backward();
    optimizer_->step();
    // bookkeeping
    const double B = (double)batch.size();
    loss_sum += loss_value * B;
    for (auto& [n, t] : loss.parts) part_sums[n] += t.item() * B;
    {
      NoGradGuard ng;
      correct += sum(eq(argmax(out.logits, 1), batch.labels).to(DType::f32)).item();
    }
    seen += B;
    ++k;
    double secs = train_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    progress.update(k, loss_sum / seen, correct / seen, seen / std::max(secs, 1e-9));
  }
  progress.finish();
  train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
  EpochReport r;
  if (interrupted()) {  // keep the position and the sums in the checkpoint
    batch_in_epoch_ = k;
    partial_ = {{"loss", loss_sum}, {"correct", correct}, {"seen", seen}, {"seconds", train_seconds},
                {"skipped", skipped}, {"parts", part_sums}};
    r.interrupted = true;
    r.position = fmt::format("step {}", k);
    return r;
  }
  KD_CHECK(seen > 0, "every step of epoch {} had a non-finite loss ({} skipped): nothing was learned; the last good "
           "checkpoint is {} (lower the learning rate, then --resume)", epoch + 1, skipped, ckpt_path);
  const EvalResult ev = evaluate(model_, run_.test_set, std::max<int64_t>(cfg_.batch_size, 256));
  r.test_accuracy = ev.accuracy;
  r.seconds = train_seconds;
  r.line = {{"train_loss", loss_sum / seen}, {"train_acc", correct / seen}, {"test_loss", ev.loss},
            {"test_acc", ev.accuracy},       {"lr", lr},                      {"time_s", train_seconds},
            {"images_per_s", seen / train_seconds}};
  for (auto& [n, v] : part_sums) r.line["loss_" + n] = v / seen;
  if (cfg_.skip_nonfinite > 0) r.line["skipped_steps"] = skipped;
  if (run_.val_set.size() > 0) {
    // the checkpoint a validation split would choose: the epoch of the best validation accuracy
    const EvalResult val = evaluate(model_, run_.val_set, std::max<int64_t>(cfg_.batch_size, 256));
    if (val.accuracy > best_val_acc_) {
      best_val_acc_ = val.accuracy;
      val_selected_test_acc_ = ev.accuracy;
    }
    r.line["val_loss"] = val.loss;
    r.line["val_acc"] = val.accuracy;
    r.line["val_selected_test_acc"] = val_selected_test_acc_;
  }
  r.summary = fmt::format("train loss {:.4f} acc {:.4f} | test loss {:.4f} acc {:.4f}", loss_sum / seen,
                          correct / seen, ev.loss, ev.accuracy);
  r.speed = fmt::format("{:.1f}s, {:.0f} img/s", train_seconds, seen / train_seconds);
  return r;
}

}  // namespace

std::unique_ptr<Regime> make_epoch_loop(Run& run) {
  KD_CHECK(run.config.epochs > 0 && run.config.batch_size > 0, "epochs ({}) and batch_size ({}) must be positive",
           run.config.epochs, run.config.batch_size);
  set_threads(run.config.threads);
  if (static bool warned = false; !warned) {  // once per process: a speed hint, not an error
    warned = true;
    if (const std::string w = blas_core_warning(); !w.empty()) fmt::print(stderr, "warning: {}\n", w);
  }
  return std::make_unique<EpochLoop>(run);
}

RunSummary run_training(Run& run, bool resume) {
  std::unique_ptr<Regime> loop = make_epoch_loop(run);
  return run_regime(*loop, run.config, run.out_dir, run.command_line, resume);
}

}  // namespace kd::train
