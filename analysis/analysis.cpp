// analysis.cpp: see analysis.h. Every measure is a readable loop over rows of logits or features.
#include "analysis/analysis.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "datasets/loader.h"
#include "distill/output/wkd_cost.h"
#include "engine/autograd.h"
#include "distill/distill_run.h"
#include "analysis/plot.h"
#include "train/train.h"
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
  Generator gen(0);
  std::vector<Tensor> logits, pooled;
  train::for_each_eval_batch(model, dataset, batch_size, [&](const data::Batch& b) {
    Tensor x = b.images.contiguous();  // (B, C, H, W)
    transform_batch(x, transform, gen);
    nn::ModelOutput out = model.forward(x);
    logits.push_back(out.logits.contiguous());
    if (out.pooled.defined()) pooled.push_back(out.pooled.contiguous());
  });
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

// The argmax of every row of (N, K) float logits (the first on ties, as torch.argmax).
static std::vector<int64_t> argmax_rows(const Tensor& logits) {
  const Tensor z = logits.contiguous();
  const int64_t N = z.size(0), K = z.size(1);
  std::vector<int64_t> out(N);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = z.data<float>() + n * K;
    out[n] = std::max_element(row, row + K) - row;
  }
  return out;
}

// The fraction of positions where a and b agree.
static double agreement(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  int64_t same = 0;
  for (size_t n = 0; n < a.size(); ++n) same += a[n] == b[n];
  return a.empty() ? 0.0 : (double)same / (double)a.size();
}

double accuracy(const Tensor& logits, const Tensor& labels) {
  const Tensor y = labels.contiguous();
  const std::vector<int64_t> truth(y.data<int64_t>(), y.data<int64_t>() + y.numel());
  return agreement(argmax_rows(logits), truth);
}

double top1_agreement(const Tensor& a, const Tensor& b) {
  check_pair("top1_agreement", a, b);
  return agreement(argmax_rows(a), argmax_rows(b));
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

// ------------------------------------------------------------------ more similarity measures

// HSIC with centring: tr(K H L H) for n x n Gram matrices (biased estimator; CKA normalises it).
static double hsic_centred(const std::vector<double>& K, const std::vector<double>& L, int64_t n) {
  // centre K: Kc = H K H, then tr(Kc L) = sum_ij Kc_ij L_ij (L symmetric)
  auto centre = [n](std::vector<double> M) {
    std::vector<double> row(n, 0), col(n, 0);
    double all = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) row[i] += M[i * n + j] / n, col[j] += M[i * n + j] / n, all += M[i * n + j] / (n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) M[i * n + j] += all - row[i] - col[j];
    return M;
  };
  auto Kc = centre(K);
  double t = 0;
  for (int64_t i = 0; i < n * n; ++i) t += Kc[i] * L[i];
  return t;
}

static std::vector<double> gram_linear(const Tensor& X) {
  const int64_t n = X.size(0);
  Tensor G = matmul(X.detach().contiguous(), X.detach().contiguous().t()).contiguous();  // (n, n)
  return std::vector<double>(G.data<float>(), G.data<float>() + n * n);
}

static double cka_from_grams(const std::vector<double>& K, const std::vector<double>& L, int64_t n) {
  const double kl = hsic_centred(K, L, n), kk = hsic_centred(K, K, n), ll = hsic_centred(L, L, n);
  return kk > 0 && ll > 0 ? kl / std::sqrt(kk * ll) : 0.0;
}

double linear_cka_gram(const Tensor& X, const Tensor& Y) {
  KD_CHECK(X.dim() == 2 && Y.dim() == 2 && X.size(0) == Y.size(0), "linear_cka_gram: need (n, p) and (n, q), got {} and {}",
           shape_str(X.shape()), shape_str(Y.shape()));
  return cka_from_grams(gram_linear(X), gram_linear(Y), X.size(0));
}

double rbf_cka(const Tensor& X, const Tensor& Y, double sigma_frac) {
  KD_CHECK(X.dim() == 2 && Y.dim() == 2 && X.size(0) == Y.size(0) && X.size(0) >= 2,
           "rbf_cka: need (n, p) and (n, q) with the same n >= 2, got {} and {}", shape_str(X.shape()), shape_str(Y.shape()));
  const int64_t n = X.size(0);
  auto rbf = [&](const Tensor& A) {
    std::vector<double> G = gram_linear(A), D(n * n), d;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        D[i * n + j] = std::max(0.0, G[i * n + i] + G[j * n + j] - 2 * G[i * n + j]);  // ||a_i - a_j||^2
        if (i < j) d.push_back(std::sqrt(D[i * n + j]));
      }
    std::nth_element(d.begin(), d.begin() + d.size() / 2, d.end());
    const double sigma = sigma_frac * std::max(d[d.size() / 2], 1e-12);  // σ = frac · median distance
    for (auto& v : D) v = std::exp(-v / (2 * sigma * sigma));
    return D;
  };
  return cka_from_grams(rbf(X), rbf(Y), n);
}

std::vector<std::pair<std::string, Tensor>> feature_taps(nn::Classifier& model, const data::Dataset& dataset, int64_t n) {
  std::vector<std::vector<Tensor>> parts;
  std::vector<std::string> names;
  train::for_each_eval_batch(model, dataset, /*batch_size=*/128, [&](const data::Batch& b) {
    nn::ModelOutput out = model.forward(b.images);
    std::vector<Tensor> taps = out.feats;
    if (out.pooled.defined()) taps.push_back(out.pooled);
    if (names.empty()) {
      for (size_t i = 0; i < out.feats.size(); ++i) names.push_back("f" + std::to_string(i));
      if (out.pooled.defined()) names.push_back("pooled");
      parts.resize(taps.size());
    }
    for (size_t i = 0; i < taps.size(); ++i) parts[i].push_back(taps[i].reshape({taps[i].size(0), -1}).contiguous());
  }, std::min(n, dataset.size()));
  std::vector<std::pair<std::string, Tensor>> result;
  for (size_t i = 0; i < names.size(); ++i) result.push_back({names[i], cat(parts[i], 0)});  // (n, C*H*W)
  return result;
}

Tensor layer_cka_matrix(const std::vector<std::pair<std::string, Tensor>>& t,
                        const std::vector<std::pair<std::string, Tensor>>& s) {
  Tensor m = empty({(int64_t)t.size(), (int64_t)s.size()});  // (Lt, Ls)
  std::vector<std::vector<double>> gt, gs;
  for (auto& [n, x] : t) gt.push_back(gram_linear(x));
  for (auto& [n, x] : s) gs.push_back(gram_linear(x));
  const int64_t n = t.empty() ? 0 : t[0].second.size(0);
  for (size_t i = 0; i < t.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j) m.data<float>()[i * s.size() + j] = (float)cka_from_grams(gt[i], gs[j], n);
  return m;
}

// A colour from white (0) to dark blue (1).
static plot::Color heat(double v) {
  v = std::clamp(v, 0.0, 1.0);
  return {(uint8_t)(255 - 225 * v), (uint8_t)(255 - 180 * v), (uint8_t)(255 - 80 * v)};
}

void heatmap_png(const std::string& path, const Tensor& m, const std::vector<std::string>& rows,
                 const std::vector<std::string>& cols, const std::string& title) {
  const int R = (int)m.size(0), C = (int)m.size(1);
  KD_CHECK(R == (int)rows.size() && C == (int)cols.size(),
           "heatmap_png('{}'): a {} x {} matrix with {} row and {} column labels", path, R, C, rows.size(),
           cols.size());
  const double size = 13, cell = 58, pad = 10;  // font size and cell side, pixels
  double row_w = 0;
  for (const std::string& r : rows) row_w = std::max(row_w, plot::text_width(r, size));
  const double left = pad + row_w + pad, top = pad + plot::text_height(16) + pad;
  const double width = std::max(left + C * cell + pad, 2 * pad + plot::text_width(title, 16));
  plot::Canvas cv((int)std::ceil(width), (int)std::ceil(top + R * cell + plot::text_height(size) + 2 * pad));
  cv.text(pad, pad, title, plot::kBlack, 16);
  for (int i = 0; i < R; ++i) {
    const double y = top + i * cell, mid = y + (cell - 2) / 2 - plot::text_height(size) / 2;
    cv.text(left - pad, mid, rows[i], plot::kBlack, size, plot::Align::right);
    for (int j = 0; j < C; ++j) {
      const double v = m.at({i, j});
      cv.fill_rect(left + j * cell, y, cell - 2, cell - 2, heat(v));
      cv.text(left + j * cell + (cell - 2) / 2, mid, fmt::format("{:.2f}", v), v > 0.6 ? plot::kWhite : plot::kBlack,
              size, plot::Align::center);
    }
  }
  for (int j = 0; j < C; ++j)
    cv.text(left + j * cell + (cell - 2) / 2, top + R * cell + pad / 2, cols[j], plot::kBlack, size,
            plot::Align::center);
  cv.save(path);
}

// ------------------------------------------------------------------ localisation

Tensor class_activation_maps(nn::Classifier& model, const data::Dataset& dataset, int64_t n) {
  const int64_t K = dataset.num_classes();
  Tensor w = distill::classifier_weight(model, K).contiguous();  // (K, C)
  std::vector<Tensor> maps;
  train::for_each_eval_batch(model, dataset, /*batch_size=*/128, [&](const data::Batch& b) {
    nn::ModelOutput out = model.forward(b.images);
    Tensor f = out.feats.back().contiguous();  // (B, C, H, W): the map the classifier pools
    KD_CHECK(f.dim() == 4 && f.size(1) == w.size(1), "CAM: the last feature map {} does not feed a classifier of {} inputs",
             shape_str(f.shape()), w.size(1));
    const int64_t B = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
    Tensor cam = empty({B, f.size(2), f.size(3)});  // (B, H, W)
    for (int64_t i = 0; i < B; ++i) {
      const float* wy = w.data<float>() + b.labels.data<int64_t>()[i] * C;  // w_{y,:}
      float* out_map = cam.data<float>() + i * HW;
      for (int64_t p = 0; p < HW; ++p) {
        double v = 0;  // CAM_y(p) = sum_c w_{y,c} f_c(p)
        for (int64_t c = 0; c < C; ++c) v += wy[c] * f.data<float>()[(i * C + c) * HW + p];
        out_map[p] = (float)v;
      }
      auto [lo_it, hi_it] = std::minmax_element(out_map, out_map + HW);
      const float lo_v = *lo_it, span = std::max(*hi_it - lo_v, 1e-12f);
      for (int64_t p = 0; p < HW; ++p) out_map[p] = (out_map[p] - lo_v) / span;  // to [0, 1]
    }
    maps.push_back(cam);
  }, std::min(n, dataset.size()));
  return cat(maps, 0);
}

// Map i of a (n, H, W) stack at size (h, w) by nearest neighbour.
static std::vector<double> resized(const Tensor& m, int64_t i, int64_t h, int64_t w) {
  const int64_t H = m.size(1), W = m.size(2);
  std::vector<double> out(h * w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) out[y * w + x] = m.data<float>()[(i * H + y * H / h) * W + x * W / w];
  return out;
}

double cam_correlation(const Tensor& a, const Tensor& b) {
  KD_CHECK(a.size(0) == b.size(0), "cam_correlation: {} and {} maps", a.size(0), b.size(0));
  const int64_t h = std::max(a.size(1), b.size(1)), w = std::max(a.size(2), b.size(2)), n = a.size(0);
  Tensor ac = a.contiguous(), bc = b.contiguous();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto x = resized(ac, i, h, w), y = resized(bc, i, h, w);
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (size_t p = 0; p < x.size(); ++p) mx += x[p] / x.size(), my += y[p] / y.size();
    for (size_t p = 0; p < x.size(); ++p)
      sxy += (x[p] - mx) * (y[p] - my), sxx += (x[p] - mx) * (x[p] - mx), syy += (y[p] - my) * (y[p] - my);
    total += sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
  }
  return n ? total / n : 0.0;
}

double cam_top_iou(const Tensor& a, const Tensor& b, double frac) {
  KD_CHECK(a.size(0) == b.size(0) && frac > 0 && frac <= 1, "cam_top_iou: {} and {} maps, frac {}", a.size(0), b.size(0), frac);
  const int64_t h = std::max(a.size(1), b.size(1)), w = std::max(a.size(2), b.size(2)), n = a.size(0);
  const int64_t k = std::max<int64_t>(1, (int64_t)std::llround(frac * h * w));
  Tensor ac = a.contiguous(), bc = b.contiguous();
  auto top = [&](const std::vector<double>& m) {  // indices of the k largest values
    std::vector<int64_t> idx(m.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t p, int64_t q) { return m[p] > m[q]; });
    std::vector<char> in(m.size(), 0);
    for (int64_t j = 0; j < k; ++j) in[idx[j]] = 1;
    return in;
  };
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto x = top(resized(ac, i, h, w)), y = top(resized(bc, i, h, w));
    double inter = 0, uni = 0;
    for (size_t p = 0; p < x.size(); ++p) inter += x[p] && y[p], uni += x[p] || y[p];
    total += uni > 0 ? inter / uni : 0.0;
  }
  return n ? total / n : 0.0;
}

void cam_grid_png(const std::string& path, const data::Dataset& dataset, const Tensor& tc, const Tensor& sc, int64_t count) {
  count = std::min({count, tc.size(0), sc.size(0), dataset.size()});
  const int64_t C = dataset.channels(), H = dataset.height(), W = dataset.width();
  const int scale = std::max<int>(1, 96 / (int)H), cw = (int)W * scale, ch = (int)H * scale, pad = 6, top = 30;
  plot::Canvas cv(3 * (cw + pad) + pad, top + (int)count * (ch + pad) + pad);
  cv.text(pad, 8, "image | teacher CAM | student CAM (true class)", plot::kBlack, 13);
  const uint8_t* img = dataset.images.contiguous().data<uint8_t>();
  std::vector<uint8_t> rgb((size_t)H * W * 3);  // one picture of the grid, (H, W, 3)
  for (int64_t i = 0; i < count; ++i)
    for (int col = 0; col < 3; ++col) {
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          auto chan = [&](int64_t c) { return (double)img[((i * C + std::min(c, C - 1)) * H + y) * W + x]; };
          double r = chan(0), g = chan(1), b = chan(2);
          if (col > 0) {  // overlay the map: red where it is high
            const Tensor& m = col == 1 ? tc : sc;
            const double v = 0.6 * m.at({i, y * m.size(1) / H, x * m.size(2) / W});
            r = r * (1 - v) + 255 * v, g *= 1 - v, b *= 1 - v;
          }
          uint8_t* p = &rgb[((size_t)y * W + x) * 3];
          p[0] = (uint8_t)r, p[1] = (uint8_t)g, p[2] = (uint8_t)b;
        }
      cv.image(pad + col * (cw + pad), top + (int)i * (ch + pad), rgb, (int)W, (int)H, scale);
    }
  cv.save(path);
}

// ------------------------------------------------------------------ adversarial transfer

Tensor adversarial_images(nn::Classifier& model, const Tensor& images, const Tensor& labels,
                          const std::vector<float>& mean, const std::vector<float>& std, double eps, int steps,
                          Generator& gen) {
  KD_CHECK(eps > 0 && steps >= 1, "adversarial images need eps > 0 and steps >= 1, got eps={} steps={}", eps, steps);
  KD_CHECK(images.dim() == 4 && (int64_t)mean.size() == images.size(1) && (int64_t)std.size() == images.size(1),
           "adversarial images need (B, C, H, W) images and one mean and std per channel, got {} with {} means",
           shape_str(images.shape()), mean.size());
  Tensor x0 = images.contiguous();  // (B, C, H, W), normalised
  const int64_t C = x0.size(1), HW = x0.size(2) * x0.size(3);
  // per channel: eps and the valid range [0, 1] of a pixel, in normalised units
  std::vector<float> e(C), lo_v(C), hi_v(C);
  for (int64_t c = 0; c < C; ++c) {
    e[c] = (float)(eps / std[c]);
    lo_v[c] = -mean[c] / std[c];
    hi_v[c] = (1 - mean[c]) / std[c];
  }
  auto project = [&](Tensor& x) {  // onto the eps-ball around x0 and the valid range
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t c = (i / HW) % C;
      float v = std::clamp(x.data<float>()[i], x0.data<float>()[i] - e[c], x0.data<float>()[i] + e[c]);
      x.data<float>()[i] = std::clamp(v, lo_v[c], hi_v[c]);
    }
  };
  Tensor x = x0.clone();
  if (steps > 1) {  // PGD's random start
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += e[(i / HW) % C] * (2 * gen.uniform() - 1);
    project(x);
  }
  const double step = steps == 1 ? 1.0 : 2.5 / steps;  // in units of eps
  for (int s = 0; s < steps; ++s) {
    Tensor xv = x.detach().clone().requires_grad_();
    Tensor loss = cross_entropy(model.forward(xv).logits, labels);
    loss.backward();
    Tensor g = xv.grad().contiguous();
    for (int64_t i = 0; i < x.numel(); ++i) {  // x <- x + step * eps * sign(grad)
      const float gi = g.data<float>()[i];
      x.data<float>()[i] += (float)step * e[(i / HW) % C] * (gi > 0 ? 1.f : gi < 0 ? -1.f : 0.f);
    }
    project(x);
  }
  return x;
}

Transfer adversarial_transfer(nn::Classifier& teacher, nn::Classifier& student, const data::Dataset& dataset,
                              int64_t n, double eps, int steps, uint64_t seed) {
  KD_CHECK(eps > 0 && steps >= 1, "adversarial transfer needs eps > 0 and steps >= 1, got eps={} steps={}", eps, steps);
  n = std::min(n, dataset.size());
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  data::Dataset ds = data::subset(dataset, idx);
  const data::TransformConfig tc = data::eval_transform(ds);
  teacher.eval();
  student.eval();
  Generator gen(seed);
  int64_t t_right = 0, t_fooled = 0, s_right = 0, s_fooled = 0, same = 0;
  data::LoaderOptions lo;
  lo.batch_size = 64;
  lo.shuffle = false;
  lo.transform = tc;
  data::DataLoader loader(ds, lo);
  loader.start_epoch(0);
  data::Batch b;
  while (loader.next(b)) {
    Tensor x0 = b.images.contiguous();  // (B, C, H, W), normalised
    const int64_t B = x0.size(0);
    Tensor x = adversarial_images(teacher, x0, b.labels, tc.mean, tc.std, eps, steps, gen);
    NoGradGuard ng;
    Tensor t_clean = argmax(teacher.forward(x0).logits, 1), t_adv = argmax(teacher.forward(x).logits, 1);
    Tensor s_clean = argmax(student.forward(x0).logits, 1), s_adv = argmax(student.forward(x).logits, 1);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t y = b.labels.data<int64_t>()[i];
      if (t_clean.data<int64_t>()[i] == y) {
        ++t_right;
        t_fooled += t_adv.data<int64_t>()[i] != y;
      }
      if (s_clean.data<int64_t>()[i] == y) {
        ++s_right;
        if (s_adv.data<int64_t>()[i] != y) {
          ++s_fooled;
          same += s_adv.data<int64_t>()[i] == t_adv.data<int64_t>()[i];
        }
      }
    }
  }
  Transfer r;
  r.teacher_fooled = t_right ? (double)t_fooled / t_right : 0.0;
  r.student_fooling_rate = s_right ? (double)s_fooled / s_right : 0.0;
  r.same_wrong_label = s_fooled ? (double)same / s_fooled : 0.0;
  return r;
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
