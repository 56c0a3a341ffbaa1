// wkd_cost.h: the category cost matrix D (K x K) that WKD-L transports probability mass over.
//
// Paper: J. Lv, H. Yang, P. Li, "Wasserstein Distance Rivals Kullback-Leibler Divergence for
//        Knowledge Distillation", NeurIPS 2024. Official code: JiamingLv/WKD,
//        tools/generate_class_proto.py (collect teacher features per class) and
//        tools/generate_cost_matrix.py (linear_CKA_precenter), WKD.py (the "fc" variant).
//
// Two ways to say how far apart classes i and j are, both from the teacher:
//   features    D_ij = 1 - CKA(X_i, X_j), X_i (n, d) = n teacher features of class i. Linear CKA
//               with the columns centred (Kornblith et al. 2019):
//                   CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
//               Row r of X_i is paired with row r of X_j, so every class needs the same n.
//   classifier  D_ij = 1 - cos(w_i, w_j), w_i the i-th row of the teacher's last linear layer.
// The loss then sharpens D <- 1 - exp(-kappa D) itself (wkd_l.h); these functions return D
// before sharpening, which is what `kdlab wkd-cost` saves.
//
// Official-code semantics: generate_cost_matrix.py computes D_ij = 1 - linear_CKA_precenter(
// X_i, X_j) for j >= i and mirrors it (symmetric; the diagonal is 1 - CKA(X, X) = 0 up to
// rounding: here exactly 0). The features it collects are, for CIFAR-100, the teacher's last
// feature map of every training image with every spatial position a row (500 images x 8 x 8
// positions per class; CIFAR-100 has exactly 500 per class) and, for ImageNet, the logits,
// truncated to the smallest class count. Here the rows are whatever the caller stacks: pooled
// features (B, C) by default in kdlab, or the spatial rows (spatial_rows below) as the official
// CIFAR recipe; stack_class_features truncates every class to the smallest count as the official
// ImageNet path does. The "fc" variant normalises the rows with F.normalize (eps 1e-12).
#pragma once
#include <utility>

#include "engine/tensor.h"
#include "nn/models/model.h"

namespace kd::distill {

// Linear CKA of X (n, p) and Y (n, q); the columns are centred here. In [0, 1].
double linear_cka(const Tensor& X, const Tensor& Y);

// class_feats (K, n, d): D_ij = 1 - CKA(class_feats[i], class_feats[j]). (K, K), symmetric,
// zero diagonal. Uses n x n Gram matrices when n <= d (each class's once) and d x d cross
// products otherwise; force_path: 0 = choose, 1 = Gram, 2 = cross products (for tests).
Tensor cost_matrix_cka(const Tensor& class_feats, int force_path = 0);

// weight (K, C), the classifier's rows: D_ij = 1 - cos(w_i, w_j). (K, K).
Tensor cost_matrix_cosine(const Tensor& weight);
// The weight (K, C) of the model's classifier, the layer it declares (nn::Classifier::
// classifier_name()), detached (for WKD-L's cosine cost matrix). Errors when it has not K rows.
Tensor classifier_weight(nn::Classifier& model, int64_t num_classes);


// Group rows of feats (N, d) by labels (N) int64 into (K, n, d), keeping the first n rows of
// every class in order; n = per_class if > 0, else the smallest class count. Errors name an
// empty class or a class with fewer than per_class rows.
Tensor stack_class_features(const Tensor& feats, const Tensor& labels, int64_t K, int64_t per_class = 0);

// The official CIFAR rows: a feature map (B, C, H, W) becomes (B*H*W, C), one row per spatial
// position, with the labels repeated H*W times.
std::pair<Tensor, Tensor> spatial_rows(const Tensor& fmap, const Tensor& labels);

}  // namespace kd::distill
