// acd_u_run.cpp: ACD-U's two-network regime (acd_u.h: run_acd_u), a train::Regime: warm-up, the
// GMM split of each network, selection and unlearning, asymmetric co-teaching (DivideMix's
// MixMatch for network 1, clean-only training for network 2), evaluation of both networks and
// their ensemble, and what the checkpoint holds besides the driver's scalars. run_regime
// (train/regime.h) records the run and checkpoints it. The building blocks are in acd_u.cpp.
#include "distill/output/acd_u.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "datasets/loader.h"
#include "datasets/transforms.h"
#include "distill/output/common.h"
#include "train/progress.h"
#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "nn/checkpoint.h"
#include "train/regime.h"

namespace kd::distill {

// Shuffled batches of `set` with augmentation `tc`: one DataLoader for one pass.
static std::unique_ptr<data::DataLoader> make_loader(const data::Dataset& set, int64_t batch_size, uint64_t seed,
                                                      const data::TransformConfig& tc, bool prefetch) {
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = true;
  lo.drop_last = false;
  lo.seed = seed;
  lo.prefetch = prefetch;
  lo.transform = tc;
  return std::make_unique<data::DataLoader>(set, lo);
}

// The positions in the full training set of a batch drawn from subset(train_set, index).
static std::vector<int64_t> full_indices(const data::Batch& b, const std::vector<int64_t>& index) {
  std::vector<int64_t> pos = to_int_vector(b.indices), out(pos.size());
  for (size_t i = 0; i < pos.size(); ++i) out[i] = index[pos[i]];
  return out;
}

UnlearnStats unlearn_epoch(nn::Classifier& model, nn::Classifier& snapshot, nn::Optimizer& optimizer,
                           const data::Dataset& train_set, const std::vector<int64_t>& forget, int64_t batch_size,
                           double T, double weight, uint64_t seed, const std::function<void()>& set_train_mode) {
  UnlearnStats st;
  if (forget.empty()) return st;
  KD_CHECK(batch_size >= 1, "unlearn_epoch: batch_size={} must be >= 1", batch_size);
  data::Dataset set = data::subset(train_set, forget);
  auto loader = make_loader(set, batch_size, seed, data::train_transform(train_set), false);
  loader->start_epoch(0);
  if (set_train_mode) set_train_mode();
  else model.train();
  snapshot.eval();
  double kl_sum = 0;
  data::Batch b;
  while (loader->next(b)) {
    if (b.size() < 2) continue;  // the official code skips batches of one sample (BatchNorm)
    Tensor snap_logits;          // (B, K) g(x), frozen
    {
      NoGradGuard ng;
      snap_logits = snapshot.forward(b.images).logits;
    }
    Tensor logits = model.forward(b.images).logits;  // (B, K) f(x)
    Tensor kl = unlearning_kl(logits, snap_logits, T);
    Tensor loss = mul(kl, -weight);  // gradient ascent on the KL
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    kl_sum += kl.item();
    ++st.steps;
    st.images += b.size();
  }
  st.mean_kl = st.steps ? kl_sum / (double)st.steps : 0.0;
  return st;
}

// ============================================================================ the run: helpers

namespace {

// One seed per (run seed, epoch, stream): the loaders and the extra views draw independently.
uint64_t stream_seed(uint64_t seed, int64_t epoch, uint64_t stream) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch * 0xBF58476D1CE4E5B9ull + stream * 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;  // splitmix64's finaliser
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fresh augmented copies of the training images `idx`: (B, C, H, W) float32.
Tensor augmented_views(const data::Dataset& d, const std::vector<int64_t>& idx, const data::TransformConfig& tc,
                       Generator& gen) {
  const int64_t B = (int64_t)idx.size(), C = d.channels(), H = d.height(), W = d.width(), per = C * H * W;
  const int64_t C2 = data::transform_channels(tc, C), per2 = C2 * H * W;  // the modality's channels
  Tensor out = empty({B, C2, H, W});
  const uint8_t* src = d.images.data<uint8_t>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < B; ++i) {
    const data::AugParams p = data::draw_aug_params(tc, H, W, gen);
    data::apply_transform(src + idx[i] * per, C, H, W, p, tc, dst + i * per2, d.offset_of(idx[i]));
  }
  return out;
}

// A random permutation of 0..n-1 (the mixup partners), Fisher-Yates.
Tensor random_permutation(int64_t n, Generator& gen) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  gen.shuffle(p);
  return from_vector(p, {n});
}

// Puts the modules of `m` outside the head in evaluation mode (a frozen encoder keeps its
// BatchNorm statistics); the head keeps the mode it has.
void set_encoder_eval(nn::Module& m, const std::string& prefix, const std::string& head) {
  for (auto& [n, c] : m.named_children()) {
    const std::string full = prefix.empty() ? n : prefix + "." + n;
    if (full == head) continue;
    if (head.rfind(full + ".", 0) == 0) set_encoder_eval(*c, full, head);
    else c->train(false);
  }
}


std::unique_ptr<nn::Optimizer> make_optimizer(const train::TrainConfig& c, const nn::Module& model, double lr) {
  return train::make_optimizer(c, model.named_parameters(), {}, lr);
}

// A running mean of logged values.
struct Mean {
  double sum = 0, weight = 0;
  void add(double v, double w) { sum += v * w, weight += w; }
  double get() const { return weight > 0 ? sum / weight : 0.0; }
};

// One of the two networks and everything ACD-U keeps for it.
struct Net {
  std::string tag;  // "1" or "2"
  nn::Classifier* model = nullptr;
  std::string model_name;
  std::unique_ptr<nn::Optimizer> opt;
  double lr_scale = 1.0;                       // LR / network 1's LR
  std::string head;                            // freeze_encoder: the head's name prefix
  bool encoder_frozen = false;
  std::vector<std::vector<double>> history;    // H: normalised losses of every co-training epoch
  std::vector<double> prob;                    // w_i, this epoch
  std::vector<uint8_t> clean;                  // w_i > tau
  std::vector<int64_t> pred;                   // argmax on the training set, this epoch
  std::vector<uint8_t> forget;                 // F of the last selection (empty before the first)
  std::shared_ptr<nn::Classifier> snapshot;    // g, during an unlearning phase

  void set_train_mode() {
    model->train();
    if (encoder_frozen) set_encoder_eval(*model, "", head);
  }
};

// Everything one epoch's training phases share.
struct Ctx {
  Ctx(const train::TrainConfig& c, const AcdUOptions& o, const data::Dataset& d, const nn::Schedule& s)
      : cfg(c), opt(o), train_set(d), schedule(s) {}
  const train::TrainConfig& cfg;
  const AcdUOptions& opt;
  const data::Dataset& train_set;
  const nn::Schedule& schedule;
  data::TransformConfig weak_tc, strong_tc;
  int64_t K = 0;
  bool conf_penalty = false;
  int64_t epoch = 0;
  Generator mix_gen{0};                 // mixup lambdas and partners, extra views
  std::map<std::string, Mean> parts;    // logged loss parts of this epoch
  double seen = 0;                      // images in gradient steps this epoch (both networks)
  double lr = 0;                        // network 1's LR at the last step
  std::chrono::steady_clock::time_point start;  // when this epoch began

  double images_per_s() const {
    return seen / std::max(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1e-9);
  }

  // Sets a network's LR for step k of n of this epoch.
  void set_lr(Net& net, int64_t k, int64_t n) {
    lr = schedule.lr(epoch, k, std::max<int64_t>(n, 1));
    net.opt->scale_lr(lr / cfg.lr);
  }
};

// ---- warm-up: CE on every (noisy) label, both networks on the same batches
void warmup_epoch(Ctx& cx, Net& n1, Net& n2) {
  const int64_t B = 2 * cx.cfg.batch_size;
  auto loader = make_loader(cx.train_set, B, stream_seed(cx.cfg.seed, cx.epoch, 1), cx.weak_tc, cx.cfg.prefetch);
  loader->start_epoch(0);
  const int64_t steps = loader->num_batches();
  train::Progress progress(steps, fmt::format("epoch {}/{} warm-up", cx.epoch + 1, cx.cfg.epochs), cx.cfg.log_every);
  data::Batch b;
  int64_t k = 0;
  Mean loss1, acc1;
  while (loader->next(b)) {
    for (Net* net : {&n1, &n2}) {
      if (b.size() < 2) break;
      net->set_train_mode();
      cx.set_lr(*net, k, steps);
      Tensor logits = net->model->forward(b.images).logits;  // (B, K)
      Tensor ce = cross_entropy(logits, b.labels);
      Tensor loss = ce;
      if (cx.conf_penalty) {  // NegEntropy: mean_b sum_k p log p (penalises confident predictions)
        Tensor ne = mean(sum(mul(softmax(logits, 1), log_softmax(logits, 1)), {1}));
        loss = add(ce, ne);
        cx.parts["neg_entropy" + net->tag].add(ne.item(), (double)b.size());
      }
      net->opt->zero_grad();
      loss.backward();
      net->opt->step();
      cx.parts["ce" + net->tag].add(ce.item(), (double)b.size());
      cx.seen += (double)b.size();
      if (net == &n1) {
        NoGradGuard ng;
        loss1.add(loss.item(), (double)b.size());
        acc1.add(mean(eq(argmax(logits, 1), b.labels).to(DType::f32)).item(), (double)b.size());
      }
    }
    ++k;
    progress.update(k, loss1.get(), acc1.get(), cx.images_per_s());
  }
  progress.finish();
  cx.parts["total1"] = loss1;
}

// ---- one mixup step: lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda), partners by a
// random permutation; returns (mixed inputs, mixed targets)
std::pair<Tensor, Tensor> mixup(Ctx& cx, const Tensor& inputs, const Tensor& targets) {
  double l = sample_beta(cx.opt.alpha, cx.mix_gen);
  l = std::max(l, 1.0 - l);
  Tensor idx = random_permutation(inputs.size(0), cx.mix_gen);
  Tensor mixed_input = add(mul(inputs, l), mul(index_select(inputs, 0, idx), 1.0 - l));
  Tensor mixed_target = add(mul(targets, l), mul(index_select(targets, 0, idx), 1.0 - l));
  return {mixed_input, mixed_target};
}

// The per-sample clean probabilities of `idx` as a (B, 1) column.
Tensor weights_of(const std::vector<double>& prob, const std::vector<int64_t>& idx) {
  std::vector<float> w(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) w[i] = (float)prob[idx[i]];
  return from_vector(w, {(int64_t)idx.size(), 1});
}

// The uniform-prior penalty (when on) added to `loss`, then one optimizer step of `net`; returns
// the loss it stepped on.
Tensor penalty_and_step(Ctx& cx, Net& net, Tensor loss, const Tensor& logits, double Bx) {
  if (cx.opt.prior_penalty) {
    Tensor penalty = prior_penalty(logits);
    loss = add(loss, penalty);
    cx.parts["penalty" + net.tag].add(penalty.item(), Bx);
  }
  net.opt->zero_grad();
  loss.backward();
  net.opt->step();
  return loss;
}

// The fraction of a batch whose argmax is its label.
double batch_accuracy(const Tensor& logits, const Tensor& labels) {
  NoGradGuard ng;
  return mean(eq(argmax(logits, 1), labels).to(DType::f32)).item();
}

// ---- DivideMix's train(): MixMatch on the labelled set (the other network's clean split, its
// probabilities as w) and the unlabelled rest, co-guessing with the other network
void mixmatch_epoch(Ctx& cx, Net& net, Net& other, const std::vector<int64_t>& labelled,
                    const std::vector<int64_t>& unlabelled, const std::vector<double>& w_all) {
  const int64_t B = cx.cfg.batch_size;
  data::Dataset lset = data::subset(cx.train_set, labelled);
  auto lloader = make_loader(lset, B, stream_seed(cx.cfg.seed, cx.epoch, 10 + std::stoi(net.tag)), cx.weak_tc,
                             cx.cfg.prefetch);
  data::Dataset uset;
  std::unique_ptr<data::DataLoader> uloader;
  int64_t u_pass = 0;
  if (!unlabelled.empty()) {
    uset = data::subset(cx.train_set, unlabelled);
    uloader = make_loader(uset, B, stream_seed(cx.cfg.seed, cx.epoch, 20 + std::stoi(net.tag)), cx.weak_tc,
                          cx.cfg.prefetch);
    uloader->start_epoch(u_pass);
  }
  lloader->start_epoch(0);
  const int64_t steps = lloader->num_batches();
  train::Progress progress(steps, fmt::format("epoch {}/{} net{}", cx.epoch + 1, cx.cfg.epochs, net.tag),
                           cx.cfg.log_every);
  const std::string t = net.tag;
  Mean total, acc;
  data::Batch xb, ub;
  int64_t k = 0;
  while (lloader->next(xb)) {
    if (xb.size() < 2) continue;
    const std::vector<int64_t> xi = full_indices(xb, labelled);
    bool have_u = false;
    std::vector<int64_t> ui;
    if (uloader) {  // cycle through the unlabelled set (the official try / iter() again)
      if (!uloader->next(ub)) {
        uloader->start_epoch(++u_pass);
        uloader->next(ub);
      }
      have_u = ub.size() >= 1;
      if (have_u) ui = full_indices(ub, unlabelled);
    }
    const int64_t Bx = xb.size();
    Tensor x1 = xb.images, x2 = augmented_views(cx.train_set, xi, cx.weak_tc, cx.mix_gen);  // (Bx, C, H, W) x 2
    Tensor u1, u2;
    if (have_u) {
      u1 = ub.images;
      u2 = augmented_views(cx.train_set, ui, cx.weak_tc, cx.mix_gen);  // (Bu, C, H, W) x 2
    }
    Tensor y = one_hot(xb.labels, cx.K);   // (Bx, K)
    Tensor w = weights_of(w_all, xi);      // (Bx, 1)

    // targets, without gradient: net in training mode, the other network in evaluation mode
    Tensor targets_x, targets_u, logits_x1;
    net.set_train_mode();
    other.model->eval();
    {
      NoGradGuard ng;
      if (have_u) {
        Tensor pu = add(add(softmax(net.model->forward(u1).logits, 1), softmax(net.model->forward(u2).logits, 1)),
                        add(softmax(other.model->forward(u1).logits, 1), softmax(other.model->forward(u2).logits, 1)));
        targets_u = sharpen(div(pu, 4.0), cx.opt.T);  // (Bu, K) co-guessing
      }
      logits_x1 = net.model->forward(x1).logits;
      Tensor px = div(add(softmax(logits_x1, 1), softmax(net.model->forward(x2).logits, 1)), 2.0);
      px = add(mul(w, y), mul(rsub(1.0, w), px));  // w y + (1 - w) p: co-refinement
      targets_x = sharpen(px, cx.opt.T);           // (Bx, K)
    }

    Tensor all_inputs = have_u ? cat({x1, x2, u1, u2}, 0) : cat({x1, x2}, 0);
    Tensor all_targets = have_u ? cat({targets_x, targets_x, targets_u, targets_u}, 0) : cat({targets_x, targets_x}, 0);
    auto [mixed_input, mixed_target] = mixup(cx, all_inputs, all_targets);

    cx.set_lr(net, k, steps);
    Tensor logits = net.model->forward(mixed_input).logits;  // (2 Bx + 2 Bu, K)
    Tensor logits_x = logits.slice(0, 0, 2 * Bx);
    Tensor Lx = neg(mean(sum(mul(log_softmax(logits_x, 1), mixed_target.slice(0, 0, 2 * Bx)), {1})));
    Tensor loss = Lx;
    double lamb = 0;
    if (have_u) {
      Tensor logits_u = logits.slice(0, 2 * Bx, logits.size(0));
      Tensor Lu = mean(pow(sub(softmax(logits_u, 1), mixed_target.slice(0, 2 * Bx, logits.size(0))), 2.0));
      lamb = linear_rampup(cx.opt.lambda_u, (double)cx.epoch + (double)k / (double)steps, cx.opt.warmup,
                           cx.opt.rampup);
      loss = add(loss, mul(Lu, lamb));
      cx.parts["lu" + t].add(Lu.item(), (double)Bx);
    }
    loss = penalty_and_step(cx, net, loss, logits, (double)Bx);

    const double Bu = have_u ? (double)ub.size() : 0.0;
    cx.parts["lx" + t].add(Lx.item(), (double)Bx);
    cx.parts["lambda_u"].add(lamb, 1.0);
    total.add(loss.item(), (double)Bx);
    acc.add(batch_accuracy(logits_x1, xb.labels), (double)Bx);
    cx.seen += (double)Bx + Bu;
    ++k;
    progress.update(k, total.get(), acc.get(), cx.images_per_s());
  }
  progress.finish();
  cx.parts["total" + t] = total;
}

// ---- ACD-U's train_only_clean(): refined targets from two weak views of the labelled set,
// mixup of two strong views (ws_train), soft CE + prior penalty
void clean_only_epoch(Ctx& cx, Net& net, const std::vector<int64_t>& labelled, const std::vector<double>& w_all,
                      bool strong) {
  const int64_t B = 2 * cx.cfg.batch_size;
  data::Dataset lset = data::subset(cx.train_set, labelled);
  auto loader =
      make_loader(lset, B, stream_seed(cx.cfg.seed, cx.epoch, 30 + std::stoi(net.tag)), cx.weak_tc, cx.cfg.prefetch);
  loader->start_epoch(0);
  const int64_t steps = loader->num_batches();
  train::Progress progress(steps, fmt::format("epoch {}/{} net{}", cx.epoch + 1, cx.cfg.epochs, net.tag),
                           cx.cfg.log_every);
  const std::string t = net.tag;
  Mean total, acc;
  data::Batch xb;
  int64_t k = 0;
  while (loader->next(xb)) {
    if (xb.size() < 2) continue;
    const std::vector<int64_t> xi = full_indices(xb, labelled);
    const int64_t Bx = xb.size();
    Tensor x1 = xb.images, x2 = augmented_views(cx.train_set, xi, cx.weak_tc, cx.mix_gen);  // weak views
    Tensor t1 = x1, t2 = x2;                                                                // training views
    if (strong) {
      t1 = augmented_views(cx.train_set, xi, cx.strong_tc, cx.mix_gen);
      t2 = augmented_views(cx.train_set, xi, cx.strong_tc, cx.mix_gen);
    }
    Tensor y = one_hot(xb.labels, cx.K);  // (Bx, K)
    Tensor w = weights_of(w_all, xi);     // (Bx, 1)
    net.set_train_mode();
    Tensor targets_x, logits_x1;
    {
      NoGradGuard ng;
      logits_x1 = net.model->forward(x1).logits;
      Tensor px = div(add(softmax(logits_x1, 1), softmax(net.model->forward(x2).logits, 1)), 2.0);
      px = add(mul(w, y), mul(rsub(1.0, w), px));
      targets_x = sharpen(px, cx.opt.T);  // (Bx, K)
    }
    auto [mixed_input, mixed_target] = mixup(cx, cat({t1, t2}, 0), cat({targets_x, targets_x}, 0));
    cx.set_lr(net, k, steps);
    Tensor logits = net.model->forward(mixed_input).logits;  // (2 Bx, K)
    Tensor Lx = neg(mean(sum(mul(log_softmax(logits, 1), mixed_target), {1})));
    Tensor loss = Lx;
    loss = penalty_and_step(cx, net, loss, logits, (double)Bx);
    cx.parts["lx" + t].add(Lx.item(), (double)Bx);
    total.add(loss.item(), (double)Bx);
    acc.add(batch_accuracy(logits_x1, xb.labels), (double)Bx);
    cx.seen += (double)Bx;
    ++k;
    progress.update(k, total.get(), acc.get(), cx.images_per_s());
  }
  progress.finish();
  cx.parts["total" + t] = total;
}

// Per-sample CE and prediction on the training set (evaluation mode, no augmentation).
void eval_train(Net& net, const data::Dataset& train_set, int64_t batch_size, std::vector<double>& loss,
                std::vector<int64_t>& pred) {
  train::EvalResult r = train::evaluate(*net.model, train_set, batch_size, true);
  NoGradGuard ng;
  CrossEntropyOptions per_sample;
  per_sample.reduction = Reduction::None;
  Tensor ce = cross_entropy(r.logits, train_set.labels, per_sample);  // (N)
  const std::vector<float> l = to_float_vector(ce);
  loss.assign(l.begin(), l.end());
  pred = to_int_vector(argmax(r.logits, 1));
}

// Precision and recall of a predicted clean set against the true clean set.

// Step 1 of a co-training epoch for one network: per-sample CE on the training set, min-max
// normalised into the history, GMM on the last gmm_history of them, w_i and the clean split;
// logs the split's size and, with the true clean set, its precision and recall.
void split_epoch(Net& net, const data::Dataset& train_set, int64_t eval_batch, const AcdUOptions& opt,
                 const std::vector<uint8_t>& truly_clean, nlohmann::json& line) {
  const int64_t N = train_set.size();
  std::vector<double> loss;  // l_i
  eval_train(net, train_set, eval_batch, loss, net.pred);
  net.history.push_back(minmax_normalize(loss));  // l~_i
  std::vector<double> gmm_input = net.history.back();
  const int64_t h = std::min<int64_t>(opt.gmm_history, (int64_t)net.history.size());
  if (h > 1) {  // the mean of the last h normalised losses (the official code at 90% noise)
    for (int64_t i = 0; i < N; ++i) {
      double s = 0;
      for (int64_t j = 0; j < h; ++j) s += net.history[net.history.size() - 1 - j][i];
      gmm_input[i] = s / (double)h;
    }
  }
  net.prob = gmm_clean_probability(gmm_input, opt.gmm);  // w_i
  net.clean.assign(N, 0);
  for (int64_t i = 0; i < N; ++i) net.clean[i] = net.prob[i] > opt.p_threshold;
  line["clean" + net.tag] = std::count(net.clean.begin(), net.clean.end(), 1);
  if (!truly_clean.empty()) {
    auto [p, r] = precision_recall(net.clean, truly_clean);
    line["clean" + net.tag + "_precision"] = p;
    line["clean" + net.tag + "_recall"] = r;
  }
}

}  // namespace

// ============================================================================ the regime

namespace {

// ACD-U as a train::Regime: run_regime (train/regime.h) drives the epochs, the run record, the
// best weights and the checkpoint; this class says what one epoch does and what the checkpoint
// holds besides the driver's scalars.
class AcdURegime : public train::Regime {
 public:
  AcdURegime(train::Run& run, std::shared_ptr<nn::Classifier> second, const AcdUOptions& opt,
             const Tensor& clean_labels);

  nlohmann::json record() override;
  nn::LabeledModules modules() override {
    nn::LabeledModules modules{{"model", n1_.model}, {"second", n2_.model}};
    for (Net* net : {&n1_, &n2_})
      if (net->snapshot) modules.emplace_back("snapshot" + net->tag, net->snapshot.get());
    return modules;
  }
  nn::LabeledOptimizers optimizers() override { return {{"", n1_.opt.get()}, {"2", n2_.opt.get()}}; }
  void save_state(nn::TrainingCheckpoint& info) override;
  void prepare_resume(const nlohmann::json& scalars) override;
  void restore_state(const nn::TrainingCheckpoint& ck) override;
  train::EpochReport run_epoch(int64_t epoch) override;
  void save_best(const train::RunRecorder& recorder) override {
    recorder.save_weights("model_best.safetensors", *n1_.model, n1_.model_name, K_);
  }
  void finish(const train::RunRecorder& recorder) override {
    recorder.save_weights("model_last.safetensors", *n1_.model, n1_.model_name, K_);
    recorder.save_weights("second_last.safetensors", *n2_.model, n2_.model_name, K_);
  }

 private:
  void select_and_unlearn(int64_t epoch, std::vector<uint8_t>& excluded, nlohmann::json& line);

  train::Run& run_;
  std::shared_ptr<nn::Classifier> second_;
  const AcdUOptions& opt_;
  const train::TrainConfig& cfg_;
  const data::Dataset& train_set_;
  int64_t N_ = 0, K_ = 0, eval_bs_ = 0;
  std::vector<int64_t> labels_;
  std::vector<uint8_t> truly_clean_;  // empty when the true labels are unknown
  Net n1_, n2_;
  nn::ModelConfig copy_config_;
  nn::Schedule schedule_;
  Ctx cx_;
  // what carries over from one epoch to the next (the checkpoint holds it)
  std::vector<int64_t> initial_pred_;  // the label condition's predictions before any training
  bool unlearning_flag_ = false;
};

AcdURegime::AcdURegime(train::Run& run, std::shared_ptr<nn::Classifier> second, const AcdUOptions& opt,
                       const Tensor& clean_labels)
    : run_(run), second_(std::move(second)), opt_(opt), cfg_(run.config), train_set_(run.train_set),
      schedule_(train::make_schedule(run.config)), cx_(run.config, opt, run.train_set, schedule_) {
  KD_CHECK(run.model && second_, "acd_u: both networks are needed (run.model = network 1, `second` = network 2)");
  KD_CHECK(run.model.get() != second_.get(), "acd_u: network 1 and network 2 must be two different models");
  KD_CHECK(cfg_.epochs > 0 && cfg_.batch_size > 1 && cfg_.lr > 0,
           "acd_u: epochs ({}), batch_size ({}) and lr ({}) must be positive (batch_size at least 2)", cfg_.epochs,
           cfg_.batch_size, cfg_.lr);
  validate_acd_u_options(opt, cfg_.epochs);
  N_ = train_set_.size();
  KD_CHECK(N_ >= 2 && run.test_set.size() > 0, "acd_u: need at least 2 training and 1 test image (got {} and {})", N_,
           run.test_set.size());
  if (clean_labels.defined())
    KD_CHECK(clean_labels.dim() == 1 && clean_labels.size(0) == N_ && clean_labels.dtype() == DType::i64,
             "acd_u: clean_labels must be (N = {}) int64 like the training labels, got {} {}", N_,
             dtype_name(clean_labels.dtype()), shape_str(clean_labels.shape()));

  // the class count of each network, from one test image in evaluation mode
  auto classes_of = [&](nn::Classifier& m) {
    NoGradGuard ng;
    m.eval();
    const int64_t k = m.forward(run.test_set.images.slice(0, 0, 1).to(DType::f32)).logits.size(1);
    m.train();
    return k;
  };
  K_ = classes_of(*run.model);
  KD_CHECK(classes_of(*second_) == K_, "acd_u: network 1 ({}) has {} classes but network 2 ({}) has {}; build both "
           "for the data set's classes", run.model->type_name(), K_, second_->type_name(), classes_of(*second_));
  labels_ = to_int_vector(train_set_.labels);
  if (clean_labels.defined()) {
    const std::vector<int64_t> c = to_int_vector(clean_labels);
    truly_clean_.resize(N_);
    for (int64_t i = 0; i < N_; ++i) truly_clean_[i] = c[i] == labels_[i];
  }

  // the two networks
  n1_.tag = "1";
  n1_.model = run.model.get();
  n1_.model_name = cfg_.model;
  n2_.tag = "2";
  n2_.model = second_.get();
  n2_.model_name = second_->type_name();
  n2_.lr_scale = opt.second_lr_scale;
  if (opt.freeze_encoder) {
    n2_.head = second_->classifier_head().name;  // the declared classifier is trained alone; the rest is frozen
    for (auto& [name, t] : second_->named_parameters())
      if (name.rfind(n2_.head + ".", 0) != 0) t.impl()->requires_grad = false;
    n2_.encoder_frozen = true;
  }
  n1_.opt = make_optimizer(cfg_, *n1_.model, cfg_.lr);
  n2_.opt = make_optimizer(cfg_, *n2_.model, cfg_.lr * n2_.lr_scale);
  copy_config_.num_classes = K_;
  copy_config_.in_channels = train_set_.input_channels();
  copy_config_.image_size = train_set_.height();
  copy_config_.seed = cfg_.seed;

  cx_.weak_tc = cfg_.augment ? data::train_transform(train_set_) : data::eval_transform(train_set_);
  cx_.strong_tc = data::strong_transform(train_set_);
  cx_.K = K_;
  cx_.conf_penalty = opt.conf_penalty == "on" || (opt.conf_penalty == "auto" && cfg_.label_noise.rfind("asym", 0) == 0);
  eval_bs_ = std::max<int64_t>(cfg_.batch_size, 256);
}

void AcdURegime::save_state(nn::TrainingCheckpoint& info) {
  info.step = n1_.opt->steps_taken();
  info.schedule = schedule_.to_json();
  info.scalars = {{"unlearning", unlearning_flag_}, {"encoder_frozen", n2_.encoder_frozen},
                  {"snapshots", n1_.snapshot != nullptr}};
  for (Net* net : {&n1_, &n2_}) {
    if (!net->history.empty()) info.tensors.emplace_back("history" + net->tag, nn::exact_doubles(net->history));
    if (!net->forget.empty())
      info.tensors.emplace_back("forget" + net->tag, from_vector(net->forget, {(int64_t)net->forget.size()}));
  }
  if (!initial_pred_.empty()) info.tensors.emplace_back("initial_pred", from_vector(initial_pred_, {N_}));
}

void AcdURegime::prepare_resume(const nlohmann::json& scalars) {
  KD_CHECK(scalars.contains("snapshots"),
           "--resume: the checkpoint is not an acd_u checkpoint (it has no acd_u state; was it written by another "
           "method?)");
  // network 2's optimizer over all of it once its encoder has thawed, and the snapshots of an
  // unlearning phase: built before the checkpoint loads into them
  if (n2_.encoder_frozen && !scalars.value("encoder_frozen", true)) {
    n2_.model->unfreeze();
    n2_.encoder_frozen = false;
    n2_.opt = make_optimizer(cfg_, *n2_.model, cfg_.lr * n2_.lr_scale);
  }
  if (scalars.value("snapshots", false))
    for (Net* net : {&n1_, &n2_}) net->snapshot = frozen_copy(*net->model, copy_config_);
}

void AcdURegime::restore_state(const nn::TrainingCheckpoint& ck) {
  unlearning_flag_ = ck.scalars.value("unlearning", false);
  for (auto& [name, t] : ck.tensors) {
    for (Net* net : {&n1_, &n2_}) {
      if (name == "history" + net->tag) net->history = nn::doubles_from_exact(t, N_, "acd_u checkpoint: " + name);
      if (name == "forget" + net->tag) {
        KD_CHECK(t.dim() == 1 && t.size(0) == N_ && t.dtype() == DType::u8,
                 "acd_u checkpoint: '{}' should be ({}) uint8, got {} {}", name, N_, dtype_name(t.dtype()),
                 shape_str(t.shape()));
        const uint8_t* p = t.contiguous().data<uint8_t>();
        net->forget.assign(p, p + N_);
      }
    }
    if (name == "initial_pred") initial_pred_ = to_int_vector(t);
  }
}

nlohmann::json AcdURegime::record() {
  nlohmann::json params_json = nlohmann::json::object();
  for (auto& [k, v] : acd_u_params(opt_)) params_json[k] = v;
  nlohmann::json record = {{"config", cfg_.to_json()},
                           {"method", "acd_u"},
                           {"acd_u", params_json},
                           {"train_set", train_set_.summary()},
                           {"test_set", run_.test_set.summary()},
                           {"num_classes", K_},
                           {"parameters", n1_.model->num_parameters()},
                           {"second_model", n2_.model_name},
                           {"second_parameters", n2_.model->num_parameters()},
                           {"second_trainable_parameters", n2_.model->num_parameters(true)},
                           {"second_head", n2_.head},
                           {"conf_penalty", cx_.conf_penalty},
                           {"schedule", schedule_.describe()}};
  if (!truly_clean_.empty())
    record["label_noise_rate"] = 1.0 - (double)std::count(truly_clean_.begin(), truly_clean_.end(), 1) / N_;
  for (auto& [k, v] : run_.extra_record.items()) record[k] = v;
  return record;
}

// Selection (every select_every epochs after select_start: each network's forget set and a frozen
// snapshot of it) and unlearning (the first forget_epochs epochs of each period: gradient ascent
// on the forget set); `excluded` marks what either network forgets, left out of co-teaching.
void AcdURegime::select_and_unlearn(int64_t epoch, std::vector<uint8_t>& excluded, nlohmann::json& line) {
  if (epoch % opt_.select_every == 0 && epoch > opt_.select_start && epoch != cfg_.epochs - 1) {
    unlearning_flag_ = true;
    const std::vector<int64_t> no_condition;
    const std::vector<int64_t>& predicted = opt_.label_condition == "off"              ? no_condition
                                            : opt_.label_condition == "second_initial" ? initial_pred_
                                                                                       : n2_.pred;
    for (Net* net : {&n1_, &n2_}) {
      ForgetSelection s = select_forget_set(net->history, opt_.select_every, labels_, predicted,
                                            opt_.forget_change_q, opt_.forget_loss_q);
      net->forget = s.mask;
      net->snapshot = frozen_copy(*net->model, copy_config_);
      line["selected" + net->tag] = s.count;
      if (!truly_clean_.empty() && s.count > 0) {
        int64_t noisy = 0;
        for (int64_t i = 0; i < N_; ++i) noisy += s.mask[i] && !truly_clean_[i];
        line["selected" + net->tag + "_noisy_frac"] = (double)noisy / (double)s.count;
      }
      fmt::print("acd_u: epoch {}: net{} forgets {} samples (loss fell most: {}, tiny loss: {}, label != "
                 "prediction: {})\n",
                 epoch + 1, net->tag, s.count, s.by_change, s.by_loss, s.label_disagree);
    }
  }
  if (unlearning_flag_ && epoch % opt_.select_every < opt_.forget_epochs) {
    for (Net* net : {&n1_, &n2_}) {
      std::vector<int64_t> forget;
      for (int64_t i = 0; i < N_; ++i)
        if (net->forget[i]) forget.push_back(i);
      if (forget.empty()) continue;
      cx_.set_lr(*net, 0, 1);
      UnlearnStats st = unlearn_epoch(*net->model, *net->snapshot, *net->opt, train_set_, forget,
                                      opt_.unlearn_batch_mult * cfg_.batch_size, opt_.unlearn_T, opt_.unlearn_weight,
                                      stream_seed(cfg_.seed, epoch, 40 + std::stoi(net->tag)),
                                      [net] { net->set_train_mode(); });
      cx_.parts["unlearn_kl" + net->tag].add(st.mean_kl, 1.0);
      cx_.seen += (double)st.images;
    }
  } else {
    unlearning_flag_ = false;
    n1_.snapshot.reset();
    n2_.snapshot.reset();
  }
  for (int64_t i = 0; i < N_; ++i)
    excluded[i] = (!n1_.forget.empty() && n1_.forget[i]) || (!n2_.forget.empty() && n2_.forget[i]);
  line["forget1"] = n1_.forget.empty() ? 0 : std::count(n1_.forget.begin(), n1_.forget.end(), 1);
  line["forget2"] = n2_.forget.empty() ? 0 : std::count(n2_.forget.begin(), n2_.forget.end(), 1);
  line["excluded"] = std::count(excluded.begin(), excluded.end(), 1);
}

train::EpochReport AcdURegime::run_epoch(int64_t epoch) {
  if (epoch == 0 && opt_.unlearning && opt_.label_condition == "second_initial") {
    std::vector<double> unused;  // network 2's predictions before any training
    eval_train(n2_, train_set_, eval_bs_, unused, initial_pred_);
  }
  const auto t0 = std::chrono::steady_clock::now();
  cx_.epoch = epoch;
  cx_.parts.clear();
  cx_.seen = 0;
  cx_.start = t0;
  cx_.mix_gen = Generator(stream_seed(cfg_.seed, epoch, 2));
  nlohmann::json line = nlohmann::json::object();

  // network 2's encoder thaws (clip_visual_training + a fresh optimizer, as the official code)
  if (n2_.encoder_frozen && opt_.unfreeze_epoch >= 0 && epoch == opt_.unfreeze_epoch) {
    n2_.model->unfreeze();
    n2_.encoder_frozen = false;
    n2_.opt = make_optimizer(cfg_, *n2_.model, cfg_.lr * n2_.lr_scale);
    fmt::print("acd_u: epoch {}: network 2's encoder is trained from now on\n", epoch + 1);
  }

  if (epoch < opt_.warmup) {
    line["phase"] = "warmup";
    warmup_epoch(cx_, n1_, n2_);
  } else {
    line["phase"] = "cotrain";
    // 1. the split of each network: normalised losses -> history -> GMM -> clean probability
    for (Net* net : {&n1_, &n2_}) split_epoch(*net, train_set_, eval_bs_, opt_, truly_clean_, line);

    // 2. selection and unlearning
    std::vector<uint8_t> excluded(N_, 0);
    if (opt_.unlearning) select_and_unlearn(epoch, excluded, line);

    // 3. asymmetric co-teaching: each network learns from the other's split
    auto split_of = [&](const Net& chooser, bool clean) {
      std::vector<int64_t> out;
      for (int64_t i = 0; i < N_; ++i)
        if ((chooser.clean[i] != 0) == clean && !excluded[i]) out.push_back(i);
      return out;
    };
    const std::vector<int64_t> lab1 = split_of(n2_, true), unl1 = split_of(n2_, false);
    const std::vector<int64_t> lab2 = split_of(n1_, true), unl2 = split_of(n1_, false);
    line["labelled1"] = lab1.size();
    line["labelled2"] = lab2.size();
    if (lab1.size() < 2) fmt::print("acd_u: epoch {}: network 2 finds fewer than 2 clean samples; network 1 skips "
                                    "this epoch\n", epoch + 1);
    else if (opt_.mixmatch) mixmatch_epoch(cx_, n1_, n2_, lab1, unl1, n2_.prob);
    else clean_only_epoch(cx_, n1_, lab1, n2_.prob, false);
    if (lab2.size() < 2) fmt::print("acd_u: epoch {}: network 1 finds fewer than 2 clean samples; network 2 skips "
                                    "this epoch\n", epoch + 1);
    else if (opt_.only_clean) clean_only_epoch(cx_, n2_, lab2, n1_.prob, opt_.second_strong_aug);
    else mixmatch_epoch(cx_, n2_, n1_, lab2, unl2, n1_.prob);
  }
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // test both networks and their ensemble (sum of logits)
  const train::EvalResult ev1 = train::evaluate(*n1_.model, run_.test_set, eval_bs_, true);
  const train::EvalResult ev2 = train::evaluate(*n2_.model, run_.test_set, eval_bs_, true);
  double ens_acc = 0;
  {
    NoGradGuard ng;
    ens_acc = mean(eq(argmax(add(ev1.logits, ev2.logits), 1), run_.test_set.labels).to(DType::f32)).item();
  }
  for (auto& [name, m] : cx_.parts) line[name == "lambda_u" ? name : "loss_" + name] = m.get();
  line["train_loss"] = cx_.parts.count("total1") ? cx_.parts["total1"].get() : 0.0;
  line["test_loss"] = ev1.loss;
  line["test_acc"] = ev1.accuracy;
  line["test_acc2"] = ev2.accuracy;
  line["test_loss2"] = ev2.loss;
  line["test_acc_ensemble"] = ens_acc;
  line["lr"] = cx_.lr;
  line["lr2"] = cx_.lr * n2_.lr_scale;
  line["time_s"] = train_seconds;
  line["images_per_s"] = cx_.seen / std::max(train_seconds, 1e-9);
  train::EpochReport r;
  r.test_accuracy = ev1.accuracy;
  r.seconds = train_seconds;
  r.summary = fmt::format("({}) train loss {:.4f} | test acc net1 {:.4f} net2 {:.4f} ensemble {:.4f}",
                          line["phase"].get<std::string>(), line["train_loss"].get<double>(), ev1.accuracy,
                          ev2.accuracy, ens_acc);
  r.speed = fmt::format("{:.1f}s", train_seconds);
  r.line = std::move(line);
  return r;
}

}  // namespace

train::RunSummary run_acd_u(train::Run& run, std::shared_ptr<nn::Classifier> second, const AcdUOptions& opt,
                            const Tensor& clean_labels, bool resume) {
  train::set_threads(run.config.threads);
  AcdURegime regime(run, std::move(second), opt, clean_labels);
  if (opt.unlearning && first_selection_epoch(opt) >= run.config.epochs - 1)
    fmt::print("acd_u: note: no forget-set selection happens in {} epochs (the first would be at epoch {}); lower "
               "select_start / select_every for a short run\n",
               run.config.epochs, first_selection_epoch(opt) + 1);
  return train::run_regime(regime, run.config, run.out_dir, run.command_line, resume);
}

}  // namespace kd::distill
