// wkd_cost.cpp: WKD-L's category cost matrix from teacher features (linear CKA) or from the
// teacher's classifier weights (cosine). The definitions are in wkd_cost.h.
#include "distill/output/wkd_cost.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

namespace {

// Frobenius inner product <A, B> and squared norm, accumulated in double.
double frobenius_dot(const Tensor& A, const Tensor& B) {
  const Tensor a = A.contiguous(), b = B.contiguous();
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += (double)x[i] * (double)y[i];
  return s;
}

Tensor center_columns(const Tensor& X) { return sub(X, mean(X, {0}, /*keepdim=*/true)).contiguous(); }  // (n, d)

}  // namespace

double linear_cka(const Tensor& X, const Tensor& Y) {
  KD_CHECK(X.defined() && Y.defined() && X.dim() == 2 && Y.dim() == 2 && X.size(0) == Y.size(0),
           "linear_cka: X and Y must be (n, p) and (n, q) with the same n, got {} and {}",
           X.defined() ? shape_str(X.shape()) : "undefined", Y.defined() ? shape_str(Y.shape()) : "undefined");
  NoGradGuard no_grad;
  Tensor Xc = center_columns(X.to(DType::f32));  // (n, p)
  Tensor Yc = center_columns(Y.to(DType::f32));  // (n, q)
  Tensor YtX = matmul(Yc.t(), Xc);  // (q, p)
  Tensor XtX = matmul(Xc.t(), Xc);  // (p, p)
  Tensor YtY = matmul(Yc.t(), Yc);  // (q, q)
  const double hsic = frobenius_dot(YtX, YtX);                 // ||Y^T X||_F^2
  const double var_x = std::sqrt(frobenius_dot(XtX, XtX));      // ||X^T X||_F
  const double var_y = std::sqrt(frobenius_dot(YtY, YtY));      // ||Y^T Y||_F
  KD_CHECK(var_x > 0 && var_y > 0, "linear_cka: {} is constant over its rows (after centring it is all zeros); CKA is "
           "undefined", var_x > 0 ? "Y" : "X");
  return hsic / (var_x * var_y);
}

Tensor cost_matrix_cka(const Tensor& class_feats, int force_path) {
  KD_CHECK(class_feats.defined() && class_feats.dim() == 3,
           "wkd cost: class features must be (K, n, d): n rows of d features for each of K classes, got {}",
           class_feats.defined() ? shape_str(class_feats.shape()) : "undefined");
  const int64_t K = class_feats.size(0), n = class_feats.size(1), d = class_feats.size(2);
  KD_CHECK(K >= 1 && n >= 2 && d >= 1, "wkd cost: class features of shape {}; need at least 2 rows per class",
           shape_str(class_feats.shape()));
  NoGradGuard no_grad;
  const Tensor feats = class_feats.to(DType::f32);
  const bool gram = force_path == 1 || (force_path == 0 && n <= d);

  // Per class: the centred rows and, for the normalisers, ||X^T X||_F = ||X X^T||_F.
  std::vector<Tensor> Xc(K), G(K);  // (n, d) each; G: (n, n) Gram or (d, d) covariance
  std::vector<double> norm(K);
  for (int64_t i = 0; i < K; ++i) {
    Xc[i] = center_columns(feats.select(0, i));
    G[i] = gram ? matmul(Xc[i], Xc[i].t()) : matmul(Xc[i].t(), Xc[i]);
    norm[i] = std::sqrt(frobenius_dot(G[i], G[i]));
    KD_CHECK(norm[i] > 0, "wkd cost: the features of class {} are constant over its {} rows; CKA is undefined", i, n);
  }
  Tensor D = zeros({K, K});
  float* dp = D.data<float>();
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = i + 1; j < K; ++j) {
      double hsic;  // ||X_j^T X_i||_F^2 = <X_i X_i^T, X_j X_j^T>_F
      if (gram) {
        hsic = frobenius_dot(G[i], G[j]);
      } else {
        Tensor cross = matmul(Xc[j].t(), Xc[i]);  // (d, d)
        hsic = frobenius_dot(cross, cross);
      }
      const double cka = hsic / (norm[i] * norm[j]);
      dp[i * K + j] = dp[j * K + i] = (float)(1.0 - cka);  // symmetric; the diagonal stays 0
    }
  return D;
}

Tensor cost_matrix_cosine(const Tensor& weight) {
  KD_CHECK(weight.defined() && weight.dim() == 2,
           "wkd cost: classifier weights must be (K, C), one row per class, got {}",
           weight.defined() ? shape_str(weight.shape()) : "undefined");
  NoGradGuard no_grad;
  Tensor w = normalize(weight.detach().to(DType::f32), 2.0, 1, 1e-12);  // (K, C) unit rows (F.normalize)
  Tensor cosine = matmul(w, w.t());                                     // (K, K)
  return rsub(1.0, cosine).contiguous();                                // 1 - cos(w_i, w_j)
}

Tensor stack_class_features(const Tensor& feats, const Tensor& labels, int64_t K, int64_t per_class) {
  KD_CHECK(feats.defined() && feats.dim() == 2, "wkd cost: features must be (N, d), got {}",
           feats.defined() ? shape_str(feats.shape()) : "undefined");
  KD_CHECK(labels.defined() && labels.dtype() == DType::i64 && labels.dim() == 1 && labels.size(0) == feats.size(0),
           "wkd cost: labels must be int64 of shape ({}), got {}", feats.size(0),
           labels.defined() ? shape_str(labels.shape()) : "undefined");
  KD_CHECK(K >= 1, "wkd cost: K must be >= 1, got {}", K);
  const int64_t N = feats.size(0), d = feats.size(1);
  std::vector<int64_t> y = to_int_vector(labels);
  std::vector<std::vector<int64_t>> rows(K);
  for (int64_t r = 0; r < N; ++r) {
    KD_CHECK(y[r] >= 0 && y[r] < K, "wkd cost: label {} of row {} is out of range for K = {}", y[r], r, K);
    rows[y[r]].push_back(r);
  }
  int64_t n = per_class;
  if (n <= 0) {
    n = N;
    for (int64_t k = 0; k < K; ++k) n = std::min<int64_t>(n, (int64_t)rows[k].size());
  }
  for (int64_t k = 0; k < K; ++k)
    KD_CHECK((int64_t)rows[k].size() >= n && !rows[k].empty(),
             "wkd cost: class {} has {} feature rows but {} are needed (every class needs the same count)", k,
             rows[k].size(), std::max<int64_t>(n, 1));
  const Tensor f = feats.to(DType::f32).contiguous();
  const float* src = f.data<float>();
  Tensor out = empty({K, n, d});  // (K, n, d)
  float* dst = out.data<float>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < n; ++i)
      std::copy(src + rows[k][i] * d, src + (rows[k][i] + 1) * d, dst + (k * n + i) * d);
  return out;
}

std::pair<Tensor, Tensor> spatial_rows(const Tensor& fmap, const Tensor& labels) {
  KD_CHECK(fmap.defined() && fmap.dim() == 4, "wkd cost: spatial_rows needs a (B, C, H, W) feature map, got {}",
           fmap.defined() ? shape_str(fmap.shape()) : "undefined");
  const int64_t B = fmap.size(0), C = fmap.size(1), HW = fmap.size(2) * fmap.size(3);
  KD_CHECK(labels.defined() && labels.dtype() == DType::i64 && labels.dim() == 1 && labels.size(0) == B,
           "wkd cost: labels must be int64 of shape ({})", B);
  NoGradGuard no_grad;
  Tensor rows = fmap.detach().permute({0, 2, 3, 1}).reshape({B * HW, C}).contiguous();  // (B*H*W, C)
  std::vector<int64_t> y = to_int_vector(labels), yr;
  yr.reserve(B * HW);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < HW; ++p) yr.push_back(y[b]);
  return {rows, from_vector(yr, {B * HW})};
}

Tensor classifier_weight(nn::Classifier& model, int64_t K) {
  const nn::ClassifierHead head = model.classifier_head();
  KD_CHECK(head.weight.size(0) == K,
           "the classifier '{}' of {} has {} outputs but the data set has {} classes; build the model for {} classes",
           head.name, model.type_name(), head.weight.size(0), K, K);
  return head.weight.detach();  // (K, C)
}

}  // namespace kd::distill
