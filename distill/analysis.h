// analysis.h: what did the student learn from its teacher? (kdlab analyze; Ojha et al., "What
// Knowledge Gets Distilled in Knowledge Distillation?", NeurIPS 2023). Accuracy alone does not
// say what was transferred; these measures compare a student's behaviour with its teacher's on
// the same images:
//
//   agreement      (1/N) Σ_n [argmax z_t,n == argmax z_s,n]                    top-1 agreement
//   KL             (1/N) Σ_n KL(p_t,n || p_s,n),  p = softmax(z)                prediction distance
//   JS             (1/N) Σ_n ½ KL(p_t || m) + ½ KL(p_s || m),  m = ½ (p_t + p_s)  (symmetric, ≤ ln 2)
//   ECE            Σ_b (n_b / N) |acc_b − conf_b| over 15 equal-width confidence bins (each model)
//   CKA            linear CKA between the pooled features of teacher and student (Kornblith 2019),
//                  and its debiased form (unbiased HSIC, Nguyen et al. 2021)
//   invariance     agreement of a model with itself on flipped / shifted / noisy images
//   cost           parameters, MACs, latency (batch 1) and throughput (batch 128)
//
// All measures are plain loops over (N, K) logits and (N, C) features, in double precision.
#pragma once
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "nn/models/model.h"

namespace kd::analysis {

// Eval-mode outputs over a data set, in its order: logits (N, K) and pooled features (N, C).
struct Outputs {
  Tensor logits, pooled;
};
// transform: "none", "hflip", "shift" (4-pixel translation with zero fill), "noise" (Gaussian,
// std 0.1 in normalised units, seeded) applied to every image before the forward pass.
Outputs predict(nn::Classifier& model, const data::Dataset& dataset, int64_t batch_size,
                const std::string& transform = "none");

double accuracy(const Tensor& logits, const Tensor& labels);
double top1_agreement(const Tensor& a, const Tensor& b);
double mean_kl(const Tensor& teacher_logits, const Tensor& student_logits);  // KL(p_t || p_s), nats
double mean_js(const Tensor& a_logits, const Tensor& b_logits);               // nats, in [0, ln 2]
double expected_calibration_error(const Tensor& logits, const Tensor& labels, int bins = 15);
double linear_cka(const Tensor& X, const Tensor& Y);           // (n, p), (n, q): in [0, 1]
double debiased_linear_cka(const Tensor& X, const Tensor& Y);  // unbiased HSIC estimator

struct Cost {
  int64_t parameters = 0, macs_per_image = 0;
  double latency_ms = 0;      // one image, median of repeats
  double images_per_s = 0;    // batch of 128, eval mode
};
Cost measure_cost(nn::Classifier& model, int64_t channels, int64_t size, int repeats = 10);

}  // namespace kd::analysis
