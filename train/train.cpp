#include "train/train.h"

#include <cblas.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
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

// ------------------------------------------------------------------ Ctrl-C
// The one piece of process-wide state here: a signal can only talk to the loop through a flag.
static std::atomic<bool> g_interrupted{false};
static void on_sigint(int) { g_interrupted = true; }

// ------------------------------------------------------------------ helpers

void set_threads(int64_t threads) {
  if (threads <= 0) return;  // keep KDLAB_NUM_THREADS or OpenMP's default
  set_num_threads((int)threads);  // our OpenMP kernels and OpenBLAS together (engine/parallel.h)
}

Loss cross_entropy_loss(const nn::ModelOutput& out, const data::Batch& batch, int64_t) {
  Tensor ce = cross_entropy(out.logits, batch.labels);
  return {ce, {{"ce", ce}}};
}

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
  out.images = empty({B, C, H, W});
  float* dst = out.images.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t index = (int64_t)batch.indices.at({b});
    KD_CHECK(index >= 0 && index < dataset.size(), "virtual views: image index {} is outside the data set of {}",
             index, dataset.size());
    data::AugParams p = data::draw_aug_params(transform, H, W, gen);
    data::apply_transform(src + index * C * H * W, C, H, W, p, transform, dst + b * C * H * W);
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
  if (warning && (int64_t)seen.size() < d.num_classes())
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

Run prepare_run(const TrainConfig& config, const std::string& out_dir, const std::string& command_line) {
  Run run;
  run.config = config;
  run.out_dir = out_dir;
  run.command_line = command_line;
  data::LoadOptions lo;
  lo.synthetic.seed = config.seed;
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
  nn::ModelConfig mc;
  mc.num_classes = config.num_classes > 0 ? config.num_classes : run.train_set.num_classes();
  mc.in_channels = run.train_set.channels();
  mc.image_size = run.train_set.height();
  mc.seed = config.seed;
  run.model = nn::create_model(config.model, mc);
  return run;
}

// ------------------------------------------------------------------ the loop

RunSummary run_training(Run& run, bool resume) {
  const TrainConfig& cfg = run.config;
  KD_CHECK(cfg.epochs > 0 && cfg.batch_size > 0, "epochs ({}) and batch_size ({}) must be positive", cfg.epochs,
           cfg.batch_size);
  const RunRecorder recorder(run.out_dir);
  set_threads(cfg.threads);
  if (static bool warned = false; !warned) {  // once per process: a speed hint, not an error
    warned = true;
    if (const std::string w = blas_core_warning(); !w.empty()) fmt::print(stderr, "warning: {}\n", w);
  }
  nn::Classifier& model = *run.model;
  int64_t num_classes = 0;
  {  // the class count, from one image in evaluation mode (touches no statistics)
    NoGradGuard ng;
    model.eval();
    num_classes = model.forward(run.test_set.images.slice(0, 0, 1).to(DType::f32)).logits.size(1);
    model.train();
  }

  auto optimizer = make_optimizer(cfg, model.named_parameters(), run.extra_params);
  nn::Schedule schedule = make_schedule(cfg);
  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.shuffle = true;
  lo.drop_last = false;
  lo.seed = cfg.seed;
  lo.prefetch = cfg.prefetch;
  lo.transform = cfg.augment ? data::train_transform(run.train_set) : data::eval_transform(run.train_set);
  lo.choose_aug = run.choose_aug;
  data::DataLoader loader(run.train_set, lo);
  const int64_t steps_per_epoch = loader.num_batches();

  nn::LabeledModules modules{{"model", &model}};
  for (auto& m : run.extra_modules) modules.push_back(m);
  const std::string ckpt_path = recorder.checkpoint_path();

  // position and running sums (restored on resume)
  int64_t start_epoch = 0, skip_batches = 0;
  double best_acc = -1;
  int64_t best_epoch = 0;
  double best_val_acc = -1, val_selected_test_acc = 0;  // with a validation split
  nlohmann::json partial = nlohmann::json::object();  // sums of the interrupted epoch
  if (resume) {
    KD_CHECK(fs::exists(ckpt_path), "--resume: no checkpoint at '{}' (start without --resume)", ckpt_path);
    nn::TrainingCheckpoint ck = nn::load_training_checkpoint(ckpt_path, modules, optimizer.get());
    start_epoch = ck.epoch;
    skip_batches = ck.scalars.value("batch_in_epoch", (int64_t)0);
    best_acc = ck.scalars.value("best_accuracy", -1.0);
    best_epoch = ck.scalars.value("best_epoch", (int64_t)0);
    best_val_acc = ck.scalars.value("best_val_accuracy", -1.0);
    val_selected_test_acc = ck.scalars.value("val_selected_test_accuracy", 0.0);
    partial = ck.scalars.value("partial", nlohmann::json::object());
    fmt::print("resuming from {} at epoch {} batch {}\n", ckpt_path, start_epoch + 1, skip_batches);
  }
  recorder.start_metrics(resume, start_epoch);

  nlohmann::json record = {{"config", cfg.to_json()},
                           {"train_set", run.train_set.summary()},
                           {"test_set", run.test_set.summary()},
                           {"val_set", run.val_set.size() > 0 ? run.val_set.summary() : std::string("none")},
                           {"num_classes", num_classes},
                           {"parameters", model.num_parameters()},
                           {"schedule", schedule.describe()}};
  for (auto& [k, v] : run.extra_record.items()) record[k] = v;
  recorder.write_config(run.command_line, record);

  auto save_checkpoint = [&](int64_t epochs_done, int64_t batch_in_epoch, const nlohmann::json& sums) {
    nn::TrainingCheckpoint info;
    info.epoch = epochs_done;
    info.step = optimizer->steps_taken();
    info.schedule = schedule.to_json();
    info.scalars = {{"best_accuracy", best_acc}, {"best_epoch", best_epoch}, {"batch_in_epoch", batch_in_epoch},
                    {"partial", sums}, {"best_val_accuracy", best_val_acc},
                    {"val_selected_test_accuracy", val_selected_test_acc}};
    nn::save_training_checkpoint(ckpt_path, modules, optimizer.get(), info);
  };

  g_interrupted = false;
  auto old_handler = std::signal(SIGINT, on_sigint);
  RunSummary summary;
  double total_time = 0;
  int64_t timed_epochs = 0;
  double last_acc = 0;
  for (int64_t epoch = start_epoch; epoch < cfg.epochs && !summary.interrupted; ++epoch) {
    model.train();
    loader.start_epoch(epoch);
    // running sums of this epoch: loss parts, correct, seen
    std::map<std::string, double> part_sums;
    double loss_sum = 0, correct = 0, seen = 0, train_seconds = 0;
    int64_t skipped = 0;  // steps of this epoch skipped for a non-finite loss (skip_nonfinite)
    int64_t k = 0;
    data::Batch batch;
    if (skip_batches > 0) {  // resume mid-epoch: replay the loader to the same position
      for (; k < skip_batches && loader.next(batch); ++k) {}
      loss_sum = partial.value("loss", 0.0);
      correct = partial.value("correct", 0.0);
      seen = partial.value("seen", 0.0);
      skipped = partial.value("skipped", int64_t(0));
      train_seconds = partial.value("seconds", 0.0);
      const nlohmann::json parts = partial.value("parts", nlohmann::json::object());
      for (auto& [n, v] : parts.items()) part_sums[n] = v.get<double>();
      skip_batches = 0;
    }
    Progress progress(steps_per_epoch, fmt::format("epoch {}/{}", epoch + 1, cfg.epochs), cfg.log_every);
    auto t_epoch = std::chrono::steady_clock::now();
    double lr = 0;
    while (!g_interrupted && loader.next(batch)) {
      lr = schedule.lr(epoch, k, steps_per_epoch);
      optimizer->scale_lr(lr / cfg.lr);
      nn::ModelOutput out = model.forward(batch.images);
      Loss loss;
      if (run.virtual_loss) {  // virtual views: the same images strongly augmented, through the model too
        data::Batch virtual_batch = make_virtual_batch(run.train_set, batch, run.virtual_transform, cfg.seed);
        nn::ModelOutput virtual_out = model.forward(virtual_batch.images);
        loss = run.virtual_loss(out, batch, virtual_out, virtual_batch, epoch);
      } else {
        loss = run.loss(out, batch, epoch);
      }
      const double loss_value = loss.total.item();
      if (!std::isfinite(loss_value)) {
        std::string bad;
        for (auto& [n, t] : loss.parts)
          if (!std::isfinite(t.item())) bad += (bad.empty() ? "" : ", ") + n;
        if (bad.empty()) bad = "total";
        if (skipped < cfg.skip_nonfinite) {  // skip the step: no backward, no update; counted in metrics
          ++skipped;
          ++k;
          fmt::print(stderr, "\nskipped epoch {} step {}: the loss is {} (non-finite parts: {}); {} of {} skips "
                             "allowed this epoch (skip_nonfinite)\n",
                     epoch + 1, k, loss_value, bad, skipped, cfg.skip_nonfinite);
          continue;
        }
        std::signal(SIGINT, old_handler);
        throw Error(fmt::format("the loss became {} at epoch {} step {} (non-finite parts: {}){}; the last good "
                                "checkpoint is {} (lower the learning rate, then --resume; --set skip_nonfinite=N "
                                "skips up to N such steps per epoch)",
                                loss_value, epoch + 1, k + 1, bad,
                                skipped > 0 ? fmt::format(", after {} skipped steps this epoch", skipped) : "",
                                ckpt_path));
      }
      optimizer->zero_grad();  // the model's and the helpers' gradients
      loss.total.backward();
      optimizer->step();
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
    if (!g_interrupted && seen == 0) {
      std::signal(SIGINT, old_handler);
      throw Error(fmt::format("every step of epoch {} had a non-finite loss ({} skipped): nothing was learned; the last "
                              "good checkpoint is {} (lower the learning rate, then --resume)",
                              epoch + 1, skipped, ckpt_path));
    }
    if (g_interrupted) {
      nlohmann::json sums = {{"loss", loss_sum}, {"correct", correct}, {"seen", seen}, {"seconds", train_seconds},
                             {"skipped", skipped},
                             {"parts", part_sums}};
      save_checkpoint(epoch, k, sums);
      fmt::print("\ninterrupted: saved {} at epoch {} step {}; continue with --resume\n", ckpt_path, epoch + 1, k);
      summary.interrupted = true;
      break;
    }
    EvalResult ev = evaluate(model, run.test_set, std::max<int64_t>(cfg.batch_size, 256));
    last_acc = ev.accuracy;
    const bool is_best = ev.accuracy > best_acc;
    if (is_best) {
      best_acc = ev.accuracy;
      best_epoch = epoch + 1;
      recorder.save_weights("model_best.safetensors", model, cfg.model, num_classes);
    }
    nlohmann::json line = {{"epoch", epoch + 1},
                           {"train_loss", loss_sum / seen},
                           {"train_acc", correct / seen},
                           {"test_loss", ev.loss},
                           {"test_acc", ev.accuracy},
                           {"best_acc", best_acc},
                           {"lr", lr},
                           {"time_s", train_seconds},
                           {"images_per_s", seen / train_seconds}};
    for (auto& [n, v] : part_sums) line["loss_" + n] = v / seen;
    if (cfg.skip_nonfinite > 0) line["skipped_steps"] = skipped;
    if (run.val_set.size() > 0) {
      // the checkpoint a validation split would choose: the epoch of the best validation accuracy
      EvalResult val = evaluate(model, run.val_set, std::max<int64_t>(cfg.batch_size, 256));
      if (val.accuracy > best_val_acc) {
        best_val_acc = val.accuracy;
        val_selected_test_acc = ev.accuracy;
      }
      line["val_loss"] = val.loss;
      line["val_acc"] = val.accuracy;
      line["val_selected_test_acc"] = val_selected_test_acc;
    }
    recorder.append_metrics(line);
    fmt::print("epoch {}/{}: train loss {:.4f} acc {:.4f} | test loss {:.4f} acc {:.4f} (best {:.4f} @ {}) | {:.1f}s, "
               "{:.0f} img/s\n",
               epoch + 1, cfg.epochs, loss_sum / seen, correct / seen, ev.loss, ev.accuracy, best_acc, best_epoch,
               train_seconds, seen / train_seconds);
    total_time += train_seconds;
    ++timed_epochs;
    if (cfg.save_every_epoch || epoch + 1 == cfg.epochs) save_checkpoint(epoch + 1, 0, nlohmann::json::object());
  }
  std::signal(SIGINT, old_handler);
  if (!summary.interrupted) recorder.save_weights("model_last.safetensors", model, cfg.model, num_classes);
  summary.last_accuracy = last_acc;
  summary.best_accuracy = std::max(best_acc, 0.0);
  summary.best_epoch = best_epoch;
  summary.seconds_per_epoch = timed_epochs ? total_time / timed_epochs : 0.0;
  return summary;
}

}  // namespace kd::train
