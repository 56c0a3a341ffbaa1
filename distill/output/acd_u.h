// acd_u.h: ACD-U, asymmetric co-teaching with machine unlearning, for learning with noisy labels.
//
// Paper: R. Fukunaga, S. Yoshida, M. Muneyasu, "ACD-U: Asymmetric co-teaching with machine
//        unlearning for robust learning with noisy labels" (2026; submitted to Image and Vision
//        Computing). Official code: github.com/meruemon/ACD-U (Train_cifar.py, train_function.py,
//        utils.py, dataloader_cifar.py, args_config.py), built on DivideMix (Li, Socher, Hoi,
//        ICLR 2020).
//
// Two different networks learn from the same noisily labelled training set: network 1, a CNN
// trained from scratch (PreAct ResNet-18 in the paper), and network 2, a stronger model (CLIP
// ViT-B/32's frozen image encoder plus a trained head in the paper; here any classifier, with
// `freeze_encoder` training only its last Linear layer until `unfreeze_epoch`). Each epoch after
// the warm-up, each network splits the training set into clean and noisy samples by its own
// per-sample losses, and each network trains on the split chosen by the OTHER network
// (asymmetric co-teaching: the architectures make different mistakes). Every `select_every`
// epochs, samples a network has probably memorised with a wrong label are selected and
// "unlearned" by gradient ascent on a KL divergence to a frozen snapshot of the network.
//
// Equations (N training samples, noisy labels y_i, K classes; epochs e counted from 0):
//
//   warm-up (e < W):  L = CE(f(x), y) [+ sum_k p_k log p_k, the confidence penalty, for asym noise]
//
//   split (e >= W), for each network m:
//     l_i   = CE(f_m(x_i), y_i)                         evaluation mode, no augmentation
//     l~_i  = (l_i - min l) / (max l - min l)            kept in the loss history H_m
//     w_i   = p(low-mean component | l~_i)               2-component 1-D GMM (distill/gmm.h)
//     clean_m = { i : w_i > tau }                        tau = p_threshold (0.5)
//
//   co-teaching: network 1 trains on clean_2 (weights w from network 2), network 2 on clean_1,
//   both without the forget sets F_1 u F_2 of the last selection.
//     network 1 (DivideMix's MixMatch; X = labelled batch from clean_2, U = the rest):
//       q_u  = sharpen(mean of softmax of f_1 and f_2 on two views of u, T)      co-guessing
//       q_x  = sharpen(w y + (1 - w) mean of softmax of f_1 on two views of x, T) co-refinement
//       sharpen(p, T) = p^(1/T) / sum_k p_k^(1/T)
//       lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda); mixup of the 4 views
//       L_1 = -mean sum_k q'_x log softmax(f_1(x'))   +  lambda_u(e) mean (softmax(f_1(u')) - q'_u)^2
//             + sum_k pi_k log(pi_k / mean_b softmax(f_1(.))_k)         (pi = uniform prior)
//       lambda_u(e) = lambda_u * clip((e + b/B - W) / rampup, 0, 1)
//     network 2 ("only clean", ws_train): refined targets q_x from two weak views of clean_1,
//       mixup of two strong views, L_2 = soft CE + the same prior penalty
//
//   selection (e % P == 0, e > S, not the last epoch), for each network m, from its history:
//     d_i = l~_i(e) - l~_i(e - P)                                   the loss change over P epochs
//     F_m = { i : (d_i < q_0.2(d)  or  l~_i(e) < q_0.05(l~(e)))  and  y_i != yhat_i }
//     yhat = network 2's prediction (CLIP's zero-shot prediction in the paper; `label_condition`)
//     q_a = torch.quantile (linear interpolation). Note d < q_0.2(d) selects the samples whose
//     loss fell the MOST: memorised samples, whose loss drops fast.
//
//   unlearning (epochs e with e % P < forget_epochs after a selection), for each network m:
//     snapshot g_m = a frozen copy of f_m taken at the selection
//     L_u = - weight * T_u^2 / B * sum_b KL(softmax(g_m(x_b) / T_u) || softmax(f_m(x_b) / T_u)),
//     x_b in F_m, T_u = 0.05, gradient DESCENT on L_u = ascent on the KL; f_m in training mode,
//     g_m in evaluation mode (the official code's model.train() / model_copy(...).eval()).
//
// Official-code semantics reproduced (see docs/methods/acd_u.md for the full list):
//   - epoch loop order: GMM split of both networks -> selection -> unlearning -> co-training
//     (the split is computed before unlearning changes the networks) -> test of both networks;
//   - loss history: min-max normalised losses of every co-training epoch; GMM on the current
//     one (gmm_history = 1; the official code averages the last 5 at 90% noise);
//   - the selection and the forget sets persist until the next selection; F_1 u F_2 is left
//     out of both networks' labelled AND unlabelled sets;
//   - the unlearning uses each network's own optimizer at the epoch's LR, on batches of
//     8 x batch_size with the training augmentation, skipping batches of one sample;
//   - batches: warm-up 2 B, network 1's labelled and unlabelled batches B each, network 2's
//     clean batches 2 B (B = batch_size of the recipe; 64 in the official runs);
//   - network 2's LR is second_lr_scale (0.1 = 0.002 / 0.02) times network 1's, on the same
//     schedule; the official schedule is LR / 10 from epoch 150 of 300 (multistep [150]);
//   - test accuracy of network 1, network 2 and their ensemble (sum of logits).
// Departures (no CLIP here): network 2 warms up with CE on the noisy labels (the official
// non-ViT path) instead of CLIP zero-shot pseudo-labels; the label condition uses network 2's
// current prediction by default; network 2's strong views are kdlab's strong_transform
// (RandAugment-style ops + cutout) instead of CLIP's colour jitter / grayscale / solarize; both
// networks see the same images at the same resolution; the GMM starts from a deterministic
// 2-means (distill/gmm.h); loaders keep a last batch smaller than B (the official drop_last
// drops it) but skip batches of one sample.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "distill/gmm.h"
#include "train/train.h"

namespace kd::distill {

struct AcdUOptions {
  // --- the epoch plan (epochs counted from 0). Published values for 300 epochs; a short run
  //     scales them (docs/methods/acd_u.md: 15 epochs -> warmup 3, select_start 5,
  //     select_every 3, forget_epochs 1, rampup 4, unfreeze_epoch 5).
  int64_t warmup = 10;         // W: CE warm-up epochs (official: 10 for CIFAR-10, 30 for CIFAR-100)
  int64_t select_start = 50;   // S: selections happen at epochs e > S (unlearning_start)
  int64_t select_every = 10;   // P: ... with e % P == 0 (unlearning_period); also the loss-change span
  int64_t forget_epochs = 4;   // epochs of unlearning after each selection (unlearning_duration 3 + 1)
  // --- the clean/noisy split
  double p_threshold = 0.5;    // tau (official: 0.6 at 90% noise)
  int64_t gmm_history = 1;     // GMM on the mean of the last n normalised losses (official: 5 at 90% noise)
  // --- the forget-set selection
  bool unlearning = true;      // false: plain asymmetric co-teaching (ACD without U)
  double forget_change_q = 0.2;  // threshold_diff: d < its q-quantile (0 turns the condition off)
  double forget_loss_q = 0.05;   // threshold_current: l~ < its q-quantile (0 turns it off)
  // "second": network 2's prediction at the selection epoch (default); "second_initial": its
  // prediction before any training (the zero-shot CLIP prediction's place); "off": no label condition
  std::string label_condition = "second";
  // --- the unlearning
  double unlearn_T = 0.05;          // T_u (unlearning_T)
  double unlearn_weight = 1.0;      // multiplies the ascent loss (1: the official loss)
  int64_t unlearn_batch_mult = 8;   // unlearning batch = this x batch_size (unlearning_batch_size)
  // --- co-training (DivideMix's parts)
  bool mixmatch = true;        // network 1: MixMatch on labelled + unlabelled (official); false: the clean-only routine
  bool only_clean = true;      // network 2: clean-only routine (official); false: MixMatch with network 1 co-guessing
  double T = 0.5;              // sharpening temperature
  double alpha = 4.0;          // mixup Beta(alpha, alpha)
  double lambda_u = 25.0;      // unlabelled-loss weight (DivideMix CIFAR-10 50%: 25; 20%: 0; 80%/90%: 25/50)
  int64_t rampup = 16;         // epochs of the linear ramp of lambda_u after the warm-up
  bool prior_penalty = true;   // the uniform-prior regulariser
  std::string conf_penalty = "auto";  // warm-up negative entropy: "auto" = on for asym noise, "on", "off"
  bool second_strong_aug = true;      // network 2 trains on strong views, targets from weak ones (ws_train)
  // --- network 2
  bool freeze_encoder = false;  // train only the last Linear (the head) of network 2 ...
  int64_t unfreeze_epoch = 50;  // ... until this epoch, then all of it (resume_epoch; -1: never)
  double second_lr_scale = 0.1; // network 2's LR / network 1's (vit_learning_rate 0.002 / lr 0.02)
  GmmOptions gmm;               // max_iter 10, tol 1e-2, reg_covar 5e-4 (not parameters)
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("warmup", o.warmup, "W: CE warm-up epochs");
    f("select_start", o.select_start, "S: forget-set selections happen at epochs e > S ...");
    f("select_every", o.select_every, "P: ... with e % P == 0; also the span of the loss change");
    f("forget_epochs", o.forget_epochs, "epochs of unlearning after each selection");
    f("p_threshold", o.p_threshold, "tau: clean when the GMM's clean probability is above it");
    f("gmm_history", o.gmm_history, "the GMM fits the mean of the last n normalised losses");
    f("unlearning", o.unlearning, "false: plain asymmetric co-teaching (ACD without U)");
    f("forget_change_q", o.forget_change_q, "forget when the loss change is below its q-quantile (0: off)");
    f("forget_loss_q", o.forget_loss_q, "forget when the loss is below its q-quantile (0: off)");
    f("label_condition", o.label_condition, "second, second_initial or off: whose prediction must disagree");
    f("unlearn_T", o.unlearn_T, "T_u, the temperature of the unlearning KL");
    f("unlearn_weight", o.unlearn_weight, "the weight of the ascent loss");
    f("unlearn_batch_mult", o.unlearn_batch_mult, "the unlearning batch is this x batch_size");
    f("mixmatch", o.mixmatch, "network 1 trains with MixMatch (official); false: the clean-only routine");
    f("only_clean", o.only_clean, "network 2 trains on the clean split only (official); false: MixMatch");
    f("T", o.T, "the sharpening temperature");
    f("alpha", o.alpha, "mixup's Beta(alpha, alpha)");
    f("lambda_u", o.lambda_u, "the weight of the unlabelled loss");
    f("rampup", o.rampup, "epochs of the linear ramp of lambda_u after the warm-up");
    f("prior_penalty", o.prior_penalty, "the uniform-prior regulariser");
    f("conf_penalty", o.conf_penalty, "the warm-up's negative entropy: auto (on for asym noise), on or off");
    f("second_strong_aug", o.second_strong_aug, "network 2 trains on strong views, targets from weak ones");
    f("freeze_encoder", o.freeze_encoder, "train only network 2's last Linear until unfreeze_epoch");
    f("unfreeze_epoch", o.unfreeze_epoch, "... then all of it (-1: never)");
    f("second_lr_scale", o.second_lr_scale, "network 2's LR / network 1's");
  }
};

// Reads the options from --set parameters (parse_options, distill/options.h); unknown keys are an
// error listing the known ones. Keys: the field names above, except gmm.
AcdUOptions acd_u_options(const Params& params);
// The options as parameters (acd_u_options(acd_u_params(o)) == o), for run records.
Params acd_u_params(const AcdUOptions& o);
// Checks the options against a run of `epochs` epochs; errors say which value to change.
void validate_acd_u_options(const AcdUOptions& o, int64_t epochs);
// Gamma(a, 1) (Marsaglia and Tsang) and Beta(a, a) draws, for mixup's lambda.
double sample_gamma(double a, Generator& gen);
double sample_beta(double a, Generator& gen);
// The first epoch (from 0) at which a forget set is selected.
int64_t first_selection_epoch(const AcdUOptions& o);
// Precision and recall of a predicted clean set against the true one (0/1 per sample).
std::pair<double, double> precision_recall(const std::vector<uint8_t>& predicted, const std::vector<uint8_t>& truth);

// ------------------------------------------------------------------ building blocks (tested one by one)

// (l - min l) / (max l - min l); all zeros when max == min.
std::vector<double> minmax_normalize(const std::vector<double>& losses);
// torch.quantile(v, q) (linear interpolation between order statistics); q in [0, 1].
double quantile_linear(std::vector<double> v, double q);

struct ForgetSelection {
  std::vector<uint8_t> mask;       // (N) 1 = forget
  double change_threshold = 0;     // q_0.2 of d
  double loss_threshold = 0;       // q_0.05 of l~(e)
  int64_t by_change = 0, by_loss = 0, label_disagree = 0, count = 0;
};
// The selection rule above from a loss history (one vector of N normalised losses per co-training
// epoch, oldest first; needs more than `period` entries). predicted empty: no label condition.
ForgetSelection select_forget_set(const std::vector<std::vector<double>>& history, int64_t period,
                                  const std::vector<int64_t>& labels, const std::vector<int64_t>& predicted,
                                  double change_q, double loss_q);

// T^2 / B * sum_b KL(softmax(snapshot_logits / T) || softmax(logits / T)); logits (B, K), the
// snapshot's detached. The unlearning step minimises -weight times this.
Tensor unlearning_kl(const Tensor& logits, const Tensor& snapshot_logits, double T);

struct UnlearnStats {
  double mean_kl = 0;  // the mean of unlearning_kl over the steps
  int64_t steps = 0, images = 0;
};
// One unlearning epoch of `model` on the training images `forget` (indices into train_set):
// shuffled batches of `batch_size` with the training augmentation (seeded by `seed`), gradient
// ascent on unlearning_kl against `snapshot` with `optimizer` at its current LR. `set_train_mode`
// puts the model in training mode (ACD-U keeps a frozen encoder in evaluation mode).
UnlearnStats unlearn_epoch(nn::Classifier& model, nn::Classifier& snapshot, nn::Optimizer& optimizer,
                           const data::Dataset& train_set, const std::vector<int64_t>& forget, int64_t batch_size,
                           double T, double weight, uint64_t seed,
                           const std::function<void()>& set_train_mode = {});

// A frozen copy (evaluation mode, no gradients) of a zoo model: the registry model named
// model.type_name(), built with `config`, with model's state dict.
std::shared_ptr<nn::Classifier> frozen_copy(const nn::Classifier& model, const nn::ModelConfig& config);

// p^(1/T) / sum_k p^(1/T) over dim 1; p (B, K).
Tensor sharpen(const Tensor& p, double T);
// sum_k pi_k log(pi_k / mean_b softmax(logits)_bk), pi_k = 1 / K; logits (B, K) -> 0-d.
Tensor prior_penalty(const Tensor& logits);
// lambda_u * clip((current - warmup) / rampup, 0, 1): DivideMix's linear_rampup (rampup 0: a step).
double linear_rampup(double lambda_u, double current, int64_t warmup, int64_t rampup);

// ------------------------------------------------------------------ the run
// run.model = network 1 (a CNN trained from scratch); `second` = network 2 (the caller may have
// loaded pretrained weights into it). run.train_set.labels are the (noisy) training labels;
// clean_labels (N) int64 are the true ones when known (undefined otherwise: no precision /
// recall). run.config gives epochs, batch size, optimizer, LR and schedule, seed, threads.
// Writes into run.out_dir: config.json; metrics.jsonl (one line per epoch: phase, loss parts,
// clean-split sizes, precision / recall of each split against the true clean set, forget-set
// sizes, test accuracy of both networks and of the ensemble, LR, time, images/s);
// model_last.safetensors and model_best.safetensors (network 1, best by its test accuracy);
// second_last.safetensors (network 2); checkpoint.safetensors after every epoch: both networks,
// both optimizers, the unlearning snapshots while a phase runs, the loss histories, the forget
// sets, the label condition's initial predictions and the best accuracy. `resume` continues from
// it at the next epoch, bit for bit on one thread (every generator of an epoch is seeded from
// (seed, epoch), so nothing else carries over); a kill loses the epoch in progress, a Ctrl-C
// finishes it first. ACD-U is a train::Regime (acd_u_run.cpp) that train::run_regime drives.
train::RunSummary run_acd_u(train::Run& run, std::shared_ptr<nn::Classifier> second, const AcdUOptions& opt,
                            const Tensor& clean_labels, bool resume = false);

// The registry's runner for "acd_u" (distill/distiller.cpp): the data and network 1 as
// config says (train::prepare_run, label noise included), network 2 = config.teacher (with
// config.teacher_weights when given, trained further), the options from config.method_params.
train::RunSummary run_acd_u_method(const train::TrainConfig& config, const std::string& out_dir,
                                   const std::string& command_line, bool resume);

}  // namespace kd::distill
