// acd_u.cpp: ACD-U (Fukunaga, Yoshida, Muneyasu 2026), the official code's semantics: options
// and the building blocks (normalised losses, quantiles, the forget-set selection, the
// unlearning KL, sharpening, the prior penalty, the ramp-up). The two-network regime that runs
// them epoch by epoch is acd_u_run.cpp. The equations and the list of what is reproduced are in
// acd_u.h; docs/methods/acd_u.md maps each term to the function that computes it.
#include "distill/output/acd_u.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "datasets/loader.h"
#include "datasets/transforms.h"
#include "distill/distill_run.h"
#include "distill/output/common.h"
#include "distill/teacher_cache.h"
#include "train/progress.h"
#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "engine/version.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;

namespace kd::distill {

// ============================================================================ options

AcdUOptions acd_u_options(const Params& params) { return parse_options<AcdUOptions>("acd_u", params); }

Params acd_u_params(const AcdUOptions& o) { return option_params(o); }

// The first epoch e > select_start with e % select_every == 0.
int64_t first_selection_epoch(const AcdUOptions& o) {
  return (o.select_start / o.select_every + 1) * o.select_every;
}

void validate_acd_u_options(const AcdUOptions& o, int64_t epochs) {
  KD_CHECK(epochs >= 1, "acd_u: epochs must be >= 1, got {}", epochs);
  KD_CHECK(o.warmup >= 0, "acd_u: warmup={} must be >= 0 (epochs of CE warm-up)", o.warmup);
  KD_CHECK(o.select_every >= 1, "acd_u: select_every={} must be >= 1", o.select_every);
  KD_CHECK(o.select_start >= 0, "acd_u: select_start={} must be >= 0", o.select_start);
  KD_CHECK(o.forget_epochs >= 0 && o.forget_epochs <= o.select_every,
           "acd_u: forget_epochs={} must be in [0, select_every={}] (unlearning runs on the epochs e with "
           "e % select_every < forget_epochs after a selection)",
           o.forget_epochs, o.select_every);
  if (o.unlearning) {
    const int64_t e0 = first_selection_epoch(o);
    KD_CHECK(e0 - o.warmup >= o.select_every,
             "acd_u: the first selection (epoch {}, the first multiple of select_every={} above select_start={}) "
             "compares losses {} epochs apart but only {} co-training epochs follow warmup={} by then; raise "
             "select_start to at least {} (or lower warmup / select_every)",
             e0, o.select_every, o.select_start, o.select_every, e0 - o.warmup + 1, o.warmup,
             o.warmup + o.select_every - 1);
  }
  KD_CHECK(o.p_threshold > 0 && o.p_threshold < 1, "acd_u: p_threshold={} must be in (0, 1)", o.p_threshold);
  KD_CHECK(o.gmm_history >= 1, "acd_u: gmm_history={} must be >= 1", o.gmm_history);
  KD_CHECK(o.forget_change_q >= 0 && o.forget_change_q <= 1 && o.forget_loss_q >= 0 && o.forget_loss_q <= 1,
           "acd_u: forget_change_q={} and forget_loss_q={} are quantiles in [0, 1] (0 turns a condition off)",
           o.forget_change_q, o.forget_loss_q);
  KD_CHECK(o.label_condition == "second" || o.label_condition == "second_initial" || o.label_condition == "off",
           "acd_u: label_condition='{}'; known: second, second_initial, off", o.label_condition);
  KD_CHECK(o.unlearn_T > 0, "acd_u: unlearn_T={} must be > 0", o.unlearn_T);
  KD_CHECK(o.unlearn_batch_mult >= 1, "acd_u: unlearn_batch_mult={} must be >= 1", o.unlearn_batch_mult);
  KD_CHECK(o.T > 0 && o.alpha > 0, "acd_u: T={} and alpha={} must be > 0", o.T, o.alpha);
  KD_CHECK(o.lambda_u >= 0 && o.rampup >= 0, "acd_u: lambda_u={} and rampup={} must be >= 0", o.lambda_u, o.rampup);
  KD_CHECK(o.conf_penalty == "auto" || o.conf_penalty == "on" || o.conf_penalty == "off",
           "acd_u: conf_penalty='{}'; known: auto (on for asymmetric noise), on, off", o.conf_penalty);
  KD_CHECK(o.second_lr_scale > 0, "acd_u: second_lr_scale={} must be > 0", o.second_lr_scale);
  KD_CHECK(o.unfreeze_epoch >= -1, "acd_u: unfreeze_epoch={} must be >= 0, or -1 for never", o.unfreeze_epoch);
}

// ============================================================================ building blocks

// Gamma(a, 1): the engine's sampler (Generator::gamma, Marsaglia and Tsang).
double sample_gamma(double a, Generator& gen) { return gen.gamma(a); }

double sample_beta(double a, Generator& gen) {
  const double x = sample_gamma(a, gen), y = sample_gamma(a, gen);
  return x / (x + y);
}

std::pair<double, double> precision_recall(const std::vector<uint8_t>& predicted, const std::vector<uint8_t>& truth) {
  double tp = 0, p = 0, t = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    tp += predicted[i] && truth[i];
    p += predicted[i];
    t += truth[i];
  }
  return {p > 0 ? tp / p : 0.0, t > 0 ? tp / t : 0.0};
}


std::vector<double> minmax_normalize(const std::vector<double>& losses) {
  if (losses.empty()) return {};
  const auto [lo, hi] = std::minmax_element(losses.begin(), losses.end());
  const double min = *lo, range = *hi - *lo;
  std::vector<double> out(losses.size(), 0.0);
  if (range > 0)
    for (size_t i = 0; i < losses.size(); ++i) out[i] = (losses[i] - min) / range;
  return out;
}

double quantile_linear(std::vector<double> v, double q) {
  KD_CHECK(!v.empty(), "quantile_linear: no values");
  KD_CHECK(q >= 0 && q <= 1, "quantile_linear: q={} must be in [0, 1]", q);
  std::sort(v.begin(), v.end());
  const double pos = q * (double)(v.size() - 1);
  const size_t lo = (size_t)std::floor(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
}

ForgetSelection select_forget_set(const std::vector<std::vector<double>>& history, int64_t period,
                                  const std::vector<int64_t>& labels, const std::vector<int64_t>& predicted,
                                  double change_q, double loss_q) {
  KD_CHECK(period >= 1 && (int64_t)history.size() > period,
           "select_forget_set: the loss change over {} epochs needs more than {} epochs of history, got {}", period,
           period, history.size());
  const std::vector<double>& now = history.back();                      // l~(e)
  const std::vector<double>& before = history[history.size() - 1 - period];  // l~(e - P)
  const size_t N = now.size();
  KD_CHECK(before.size() == N && labels.size() == N && (predicted.empty() || predicted.size() == N),
           "select_forget_set: sizes differ (losses {}, {} epochs earlier {}, labels {}, predictions {})", N, period,
           before.size(), labels.size(), predicted.size());
  ForgetSelection s;
  s.mask.assign(N, 0);
  if (N == 0) return s;
  std::vector<double> d(N);  // d_i = l~_i(e) - l~_i(e - P)
  for (size_t i = 0; i < N; ++i) d[i] = now[i] - before[i];
  s.change_threshold = quantile_linear(d, change_q);
  s.loss_threshold = quantile_linear(now, loss_q);
  for (size_t i = 0; i < N; ++i) {
    const bool by_change = change_q > 0 && d[i] < s.change_threshold;  // the loss fell the most
    const bool by_loss = loss_q > 0 && now[i] < s.loss_threshold;      // the loss is tiny
    const bool disagree = predicted.empty() || labels[i] != predicted[i];
    s.by_change += by_change;
    s.by_loss += by_loss;
    s.label_disagree += disagree;
    s.mask[i] = (by_change || by_loss) && disagree;
    s.count += s.mask[i];
  }
  return s;
}

Tensor unlearning_kl(const Tensor& logits, const Tensor& snapshot_logits, double T) {
  KD_CHECK(logits.dim() == 2 && logits.shape() == snapshot_logits.shape(),
           "unlearning_kl: logits {} and snapshot logits {} must both be (B, K)", shape_str(logits.shape()),
           shape_str(snapshot_logits.shape()));
  KD_CHECK(T > 0, "unlearning_kl: T={} must be > 0", T);
  Tensor log_p = log_softmax(div(logits, T), 1);                    // (B, K) log softmax(f(x) / T)
  Tensor q = softmax(div(snapshot_logits.detach(), T), 1);          // (B, K) softmax(g(x) / T)
  Tensor kl = sum(kl_div(log_p, q, Reduction::None));               // () sum_b KL(q_b || p_b)
  return mul(kl, T * T / (double)logits.size(0));                   // F.kl_div(sum) * T^2 / B
}

std::shared_ptr<nn::Classifier> frozen_copy(const nn::Classifier& model, const nn::ModelConfig& config) {
  const std::string name = model.type_name();
  const auto& names = nn::model_names();
  KD_CHECK(std::find(names.begin(), names.end(), name) != names.end(),
           "acd_u: the unlearning needs a frozen copy of the network, made by building model '{}' from the "
           "registry, which has no such model; use a zoo model ({}) or set unlearning=false",
           name, fmt::join(names, ", "));
  std::shared_ptr<nn::Classifier> copy = nn::create_model(name, config);
  nn::LoadReport rep = copy->load_state_dict(model.state_dict(), false);
  KD_CHECK(rep.ok(), "acd_u: the frozen copy of '{}' does not match the network (built with {} classes, {} channels, "
           "size {}): {}", name, config.num_classes, config.in_channels, config.image_size, rep.to_string());
  copy->eval();
  copy->freeze();
  return copy;
}

Tensor sharpen(const Tensor& p, double T) {
  Tensor pt = pow(p, 1.0 / T);                // (B, K) p^(1/T)
  return div(pt, sum(pt, {1}, true));         // (B, K) normalised per row
}

Tensor prior_penalty(const Tensor& logits) {
  const int64_t K = logits.size(1);
  Tensor pred_mean = mean(softmax(logits, 1), {0});                  // (K) mean_b p_bk
  const double prior = 1.0 / (double)K;                              // pi_k
  // sum_k pi_k (log pi_k - log mean_b p_bk)
  return mul(sum(rsub(std::log(prior), log(pred_mean))), prior);
}

double linear_rampup(double lambda_u, double current, int64_t warmup, int64_t rampup) {
  if (rampup <= 0) return current >= (double)warmup ? lambda_u : 0.0;
  return lambda_u * std::clamp((current - (double)warmup) / (double)rampup, 0.0, 1.0);
}

// ------------------------------------------------------------------ the registry's runner

train::RunSummary run_acd_u_method(const train::TrainConfig& cfg, const std::string& out_dir,
                                   const std::string& command_line, bool resume) {
  KD_CHECK(!cfg.teacher.empty(),
           "acd_u needs its second network: --teacher MODEL [--teacher-weights W] (pretrained or not)");
  AcdUOptions opt = acd_u_options(params_from_json(cfg.method_params));
  train::Run run = train::prepare_run(cfg, out_dir, command_line);
  const int64_t K = cfg.num_classes > 0 ? cfg.num_classes : run.train_set.num_classes();
  auto second = nn::create_model(cfg.teacher, {K, run.train_set.input_channels(), run.train_set.height(), cfg.seed + 1});
  if (!cfg.teacher_weights.empty()) {  // pretrained, but trained further (run_acd_u freezes what it freezes)
    second = load_guide(cfg.teacher, cfg.teacher_weights, K, run.train_set).net;
    for (auto& [name, p] : second->named_parameters()) p.requires_grad_(true);
    second->train();
  }
  fmt::print("{}\n{}\nacd_u: network 1 {} ({} parameters), network 2 {}{}, {} epochs, run directory {}\n",
             run.train_set.summary(), run.test_set.summary(), cfg.model, run.model->num_parameters(), cfg.teacher,
             cfg.teacher_weights.empty() ? " (from scratch)" : " from " + cfg.teacher_weights, cfg.epochs, out_dir);
  return run_acd_u(run, second, opt, run.clean_train_labels, resume);
}

}  // namespace kd::distill
