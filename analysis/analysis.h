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
//   RBF CKA        CKA with Gaussian kernels, bandwidth σ = frac · median pairwise distance
//   layer CKA      linear CKA between every teacher tap and every student tap (a heat map)
//   localisation   class activation maps (CAM = Σ_c w_{y,c} f_c over the last feature map) of
//                  both models for the true class: Pearson correlation and top-20% IoU
//   adversarial    FGSM / PGD images crafted on the teacher (ε in pixel units, L∞); the
//                  student's fooling rate (correct on clean, wrong on adversarial) and how often
//                  a fooled student picks the teacher's adversarial label
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

double rbf_cka(const Tensor& X, const Tensor& Y, double sigma_frac = 1.0);  // (n, p), (n, q)
// Linear CKA through n x n Gram matrices, for wide features (flattened feature maps).
double linear_cka_gram(const Tensor& X, const Tensor& Y);

// The feature taps (f0..fn, pooled) of the first n images, flattened to (n, C*H*W) each.
std::vector<std::pair<std::string, Tensor>> feature_taps(nn::Classifier& model, const data::Dataset& dataset, int64_t n);
// (Lt, Ls) linear CKA between every teacher tap and every student tap.
Tensor layer_cka_matrix(const std::vector<std::pair<std::string, Tensor>>& teacher,
                        const std::vector<std::pair<std::string, Tensor>>& student);
// A heat map of a matrix in [0, 1] with row / column labels and the value in each cell, as a PNG
// or an SVG by the path's extension (drawn on plot::Canvas).
void heatmap_png(const std::string& path, const Tensor& m, const std::vector<std::string>& rows,
                 const std::vector<std::string>& cols, const std::string& title);

// Class activation maps of the true class for the first n images: (n, H, W), each map min-max
// scaled to [0, 1]. Uses the last feature map and the model's linear classifier (K rows).
Tensor class_activation_maps(nn::Classifier& model, const data::Dataset& dataset, int64_t n);
// Mean over images of the Pearson correlation of two (n, H, W) map stacks (resized to the larger
// size by nearest neighbour when they differ), and the mean IoU of their top `frac` pixels.
double cam_correlation(const Tensor& a, const Tensor& b);
double cam_top_iou(const Tensor& a, const Tensor& b, double frac = 0.2);
// A grid (PNG or SVG by the extension): for each of the first `count` images, the image, the
// teacher's CAM overlaid, the student's CAM overlaid.
void cam_grid_png(const std::string& path, const data::Dataset& dataset, const Tensor& teacher_cams,
                  const Tensor& student_cams, int64_t count = 8);

struct Transfer {
  double teacher_fooled = 0;        // teacher wrong on its own adversarial images (of those it got right)
  double student_fooling_rate = 0;  // student wrong on them (of those it got right on clean images)
  double same_wrong_label = 0;      // of the fooled student images, share with the teacher's adversarial label
};
// Adversarial images crafted on the teacher from the first n images: steps = 1 is FGSM (step ε),
// steps > 1 PGD with step 2.5 ε / steps from a random start, projected on the ε-ball and the
// valid pixel range. eps is in pixel units (8/255 = 0.0314).
// The adversarial images themselves, for one batch of normalised images (B, C, H, W) with their
// labels: x0 + eps * sign(grad_x CE(model(x), y)) for FGSM (steps = 1), PGD as above for steps > 1,
// projected on the eps-ball and on pixels in [0, 1] (mean, std per channel say how the images were
// normalised; eps is in pixel units and divided by std per channel).
Tensor adversarial_images(nn::Classifier& model, const Tensor& images, const Tensor& labels,
                          const std::vector<float>& mean, const std::vector<float>& std, double eps, int steps,
                          Generator& gen);
Transfer adversarial_transfer(nn::Classifier& teacher, nn::Classifier& student, const data::Dataset& dataset,
                              int64_t n, double eps, int steps, uint64_t seed = 0);

struct Cost {
  int64_t parameters = 0, macs_per_image = 0;
  double latency_ms = 0;      // one image, median of repeats
  double images_per_s = 0;    // batch of 128, eval mode
};
Cost measure_cost(nn::Classifier& model, int64_t channels, int64_t size, int repeats = 10);

}  // namespace kd::analysis
