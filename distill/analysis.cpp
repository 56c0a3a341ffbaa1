// analysis.cpp: see analysis.h. Every measure is a readable loop over rows of logits or features.
#include "distill/analysis.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "datasets/loader.h"
#include "distill/output/wkd_cost.h"
#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::analysis {

// ------------------------------------------------------------------ outputs

// x (B, C, H, W) float, contiguous: the image transforms of the invariance test, in place.
static void transform_batch(Tensor& x, const std::string& transform, Generator& gen) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  float* p = x.data<float>();
  if (transform == "hflip") {
    for (int64_t r = 0; r < B * C * H; ++r) std::reverse(p + r * W, p + (r + 1) * W);
  } else if (transform == "shift") {  // content moves 4 pixels right and down, zeros come in
    const int64_t s = 4;
    for (int64_t bc = 0; bc < B * C; ++bc) {
      float* img = p + bc * H * W;
      for (int64_t i = H - 1; i >= 0; --i)
        for (int64_t j = W - 1; j >= 0; --j)
          img[i * W + j] = (i >= s && j >= s) ? img[(i - s) * W + (j - s)] : 0.f;
    }
  } else if (transform == "noise") {
    for (int64_t k = 0; k < x.numel(); ++k) p[k] += 0.1f * (float)gen.normal();
  } else {
    KD_CHECK(transform == "none", "unknown transform '{}'; known: none, hflip, shift, noise", transform);
  }
}

Outputs predict(nn::Classifier& model, const data::Dataset& dataset, int64_t batch_size, const std::string& transform) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.transform = data::eval_transform(dataset);
  data::DataLoader loader(dataset, lo);
  loader.start_epoch(0);
  Generator gen(0);
  std::vector<Tensor> logits, pooled;
  data::Batch b;
  while (loader.next(b)) {
    Tensor x = b.images.contiguous();  // (B, C, H, W)
    transform_batch(x, transform, gen);
    nn::ModelOutput out = model.forward(x);
    logits.push_back(out.logits.contiguous());
    if (out.pooled.defined()) pooled.push_back(out.pooled.contiguous());
  }
  model.train(was_training);
  Outputs o;
  o.logits = cat(logits, 0);  // (N, K)
  if (!pooled.empty()) o.pooled = cat(pooled, 0);  // (N, C)
  return o;
}

// ------------------------------------------------------------------ prediction measures

static void check_pair(const char* what, const Tensor& a, const Tensor& b) {
  KD_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(0) == b.size(0), "{}: need two (N, K) logits with the same N, got {} and {}",
           what, shape_str(a.shape()), shape_str(b.shape()));
}

// Row n's softmax, in double.
static std::vector<double> softmax_row(const float* z, int64_t K) {
  std::vector<double> p(K);
  double m = z[0], s = 0;
  for (int64_t k = 1; k < K; ++k) m = std::max(m, (double)z[k]);
  for (int64_t k = 0; k < K; ++k) s += p[k] = std::exp(z[k] - m);
  for (auto& v : p) v /= s;
  return p;
}

static int64_t argmax_row(const float* z, int64_t K) { return std::max_element(z, z + K) - z; }

double accuracy(const Tensor& logits, const Tensor& labels) {
  Tensor z = logits.contiguous(), y = labels.contiguous();
  const int64_t N = z.size(0), K = z.size(1);
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) correct += argmax_row(z.data<float>() + n * K, K) == y.data<int64_t>()[n];
  return N ? (double)correct / N : 0.0;
}

double top1_agreement(const Tensor& a, const Tensor& b) {
  check_pair("top1_agreement", a, b);
  Tensor za = a.contiguous(), zb = b.contiguous();
  const int64_t N = za.size(0), K = za.size(1);
  int64_t same = 0;
  for (int64_t n = 0; n < N; ++n) same += argmax_row(za.data<float>() + n * K, K) == argmax_row(zb.data<float>() + n * K, K);
  return N ? (double)same / N : 0.0;
}

double mean_kl(const Tensor& t, const Tensor& s) {
  check_pair("mean_kl", t, s);
  Tensor zt = t.contiguous(), zs = s.contiguous();
  const int64_t N = zt.size(0), K = zt.size(1);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    auto pt = softmax_row(zt.data<float>() + n * K, K), ps = softmax_row(zs.data<float>() + n * K, K);
    for (int64_t k = 0; k < K; ++k)
      if (pt[k] > 0) total += pt[k] * (std::log(pt[k]) - std::log(std::max(ps[k], 1e-300)));
  }
  return N ? total / N : 0.0;
}

double mean_js(const Tensor& a, const Tensor& b) {
  check_pair("mean_js", a, b);
  Tensor za = a.contiguous(), zb = b.contiguous();
  const int64_t N = za.size(0), K = za.size(1);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    auto pa = softmax_row(za.data<float>() + n * K, K), pb = softmax_row(zb.data<float>() + n * K, K);
    for (int64_t k = 0; k < K; ++k) {
      const double m = 0.5 * (pa[k] + pb[k]);
      if (pa[k] > 0) total += 0.5 * pa[k] * std::log(pa[k] / m);
      if (pb[k] > 0) total += 0.5 * pb[k] * std::log(pb[k] / m);
    }
  }
  return N ? total / N : 0.0;
}

double expected_calibration_error(const Tensor& logits, const Tensor& labels, int bins) {
  KD_CHECK(bins >= 1, "ECE needs at least one bin, got {}", bins);
  Tensor z = logits.contiguous(), y = labels.contiguous();
  const int64_t N = z.size(0), K = z.size(1);
  std::vector<double> conf_sum(bins, 0), acc_sum(bins, 0), count(bins, 0);
  for (int64_t n = 0; n < N; ++n) {
    auto p = softmax_row(z.data<float>() + n * K, K);
    const int64_t pred = std::max_element(p.begin(), p.end()) - p.begin();
    const double conf = p[pred];
    const int b = std::clamp((int)std::ceil(conf * bins) - 1, 0, bins - 1);  // bin (b/bins, (b+1)/bins]
    conf_sum[b] += conf;
    acc_sum[b] += pred == y.data<int64_t>()[n];
    count[b] += 1;
  }
  double ece = 0;
  for (int b = 0; b < bins; ++b)
    if (count[b] > 0) ece += count[b] / N * std::abs(acc_sum[b] / count[b] - conf_sum[b] / count[b]);
  return ece;
}

// ------------------------------------------------------------------ representation similarity

double linear_cka(const Tensor& X, const Tensor& Y) { return distill::linear_cka(X, Y); }

// The unbiased HSIC of two Gram matrices with zeroed diagonals (Song et al. 2012):
//   HSIC_u = [tr(K L) + (1'K1)(1'L1) / ((n-1)(n-2)) - 2/(n-2) 1'K L 1] / (n (n-3))
static double hsic_unbiased(const std::vector<double>& K, const std::vector<double>& L, int64_t n) {
  double tr = 0, sum_k = 0, sum_l = 0, cross = 0;
  std::vector<double> Krow(n, 0), Lrow(n, 0);  // row sums of K and L
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      if (i == j) continue;
      tr += K[i * n + j] * L[j * n + i];
      Krow[i] += K[i * n + j];
      Lrow[i] += L[i * n + j];
    }
  for (int64_t i = 0; i < n; ++i) {
    sum_k += Krow[i];
    sum_l += Lrow[i];
    cross += Krow[i] * Lrow[i];  // 1'K L 1 = sum_i (K1)_i (L1)_i for symmetric K, L
  }
  return (tr + sum_k * sum_l / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * cross) / (n * (n - 3.0));
}

double debiased_linear_cka(const Tensor& X, const Tensor& Y) {
  KD_CHECK(X.dim() == 2 && Y.dim() == 2 && X.size(0) == Y.size(0) && X.size(0) >= 4,
           "debiased_linear_cka: X and Y must be (n, p) and (n, q) with the same n >= 4, got {} and {}",
           shape_str(X.shape()), shape_str(Y.shape()));
  const int64_t n = X.size(0);
  auto gram = [&](const Tensor& A) {  // A A' with a zeroed diagonal, (n, n) in double
    Tensor G = matmul(A, A.t()).contiguous();
    std::vector<double> g(G.data<float>(), G.data<float>() + n * n);
    for (int64_t i = 0; i < n; ++i) g[i * n + i] = 0;
    return g;
  };
  auto K = gram(X.detach()), L = gram(Y.detach());
  const double kl = hsic_unbiased(K, L, n), kk = hsic_unbiased(K, K, n), ll = hsic_unbiased(L, L, n);
  return kk > 0 && ll > 0 ? kl / std::sqrt(kk * ll) : 0.0;
}

// ------------------------------------------------------------------ cost

Cost measure_cost(nn::Classifier& model, int64_t channels, int64_t size, int repeats) {
  Cost c;
  nn::ModelInfo info = nn::describe_model(model, {channels, size, size});
  c.parameters = info.parameters;
  c.macs_per_image = info.macs_per_image;
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  using clock = std::chrono::steady_clock;
  Tensor one = zeros({1, channels, size, size}), batch = zeros({128, channels, size, size});
  model.forward(one);  // warm-up (allocations, caches)
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = clock::now();
    model.forward(one);
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  c.latency_ms = ms[ms.size() / 2];
  model.forward(batch);
  auto t0 = clock::now();
  const int batch_repeats = 3;
  for (int r = 0; r < batch_repeats; ++r) model.forward(batch);
  c.images_per_s = 128.0 * batch_repeats / std::chrono::duration<double>(clock::now() - t0).count();
  model.train(was_training);
  return c;
}

}  // namespace kd::analysis
