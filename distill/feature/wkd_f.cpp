// wkd_f.cpp: WKD-F (Lv, Yang, Li 2024), the official code's diagonal-Gaussian Wasserstein
// feature loss. The equations are in wkd_f.h.
#include "distill/feature/wkd_f.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

namespace {

Tensor eye_like(int64_t n) {  // (n, n) identity
  std::vector<float> v((size_t)(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) v[i * n + i] = 1.0f;
  return from_vector(v, {n, n});
}

}  // namespace

double wkd_f_weight(double weight, int64_t epoch, int64_t decay_epoch, int64_t total_epochs) {
  if (epoch <= decay_epoch) return weight;
  KD_CHECK(total_epochs > decay_epoch,
           "wkd_f: epoch {} is past decay_epoch {}, but the run's total epochs ({}) are not; the cosine decay of the "
           "feature weight needs total_epochs > decay_epoch (set BatchInfo::total_epochs, or a larger decay_epoch)",
           epoch, decay_epoch, total_epochs);
  const double progress = (double)(epoch - decay_epoch) / (double)(total_epochs - decay_epoch);
  return 0.5 * weight * (1.0 + std::cos(progress * std::numbers::pi));
}

std::vector<std::array<int64_t, 4>> grid_cells(int64_t H, int64_t W, int64_t g) {
  KD_CHECK(g >= 1, "wkd_f: the spatial grid must be >= 1 (1 = statistics over the whole map), got grid={}", g);
  KD_CHECK(g <= H && g <= W, "wkd_f: a {}x{} grid does not fit a {}x{} map; use grid <= {}", g, g, H, W,
           std::min(H, W));
  // PyTorch's adaptive-pooling cells: rows floor(i H / g) .. ceil((i + 1) H / g) (exclusive)
  auto start = [](int64_t i, int64_t out, int64_t in) { return (i * in) / out; };
  auto end = [](int64_t i, int64_t out, int64_t in) { return ((i + 1) * in + out - 1) / out; };
  std::vector<std::array<int64_t, 4>> cells;
  for (int64_t i = 0; i < g; ++i)
    for (int64_t j = 0; j < g; ++j) {
      std::array<int64_t, 4> c{start(i, g, H), end(i, g, H), start(j, g, W), end(j, g, W)};
      KD_CHECK((c[1] - c[0]) * (c[3] - c[2]) >= 2,
               "wkd_f: grid={} cuts the {}x{} map into cells of one position, which have no unbiased variance (the "
               "official code gives NaN); use a smaller grid",
               g, H, W);
      cells.push_back(c);
    }
  return cells;
}

ChannelGaussians channel_gaussians(const Tensor& f, int64_t g, double eps) {
  KD_CHECK(f.defined() && f.dim() == 4, "wkd_f: channel statistics are taken of (B, C, H, W) maps, got {}",
           f.defined() ? shape_str(f.shape()) : std::string("an undefined tensor"));
  const int64_t B = f.size(0), C = f.size(1);
  std::vector<Tensor> mus, sigmas;
  for (const auto& [h0, h1, w0, w1] : grid_cells(f.size(2), f.size(3), g)) {
    Tensor cell = f.slice(2, h0, h1).slice(3, w0, w1);                             // (B, C, h, w)
    mus.push_back(mean(cell, {2, 3}));                                              // (B, C)
    sigmas.push_back(sqrt(add(var(cell, {2, 3}, /*unbiased=*/true), eps)));        // (B, C)
  }
  // cells in row-major order -> (B, C, g, g)
  return {stack(mus, 2).reshape({B, C, g, g}), stack(sigmas, 2).reshape({B, C, g, g})};
}

// ------------------------------------------------------------------------------- full covariance

void symmetric_eigen(const std::vector<double>& A, int64_t n, std::vector<double>& w, std::vector<double>& V) {
  std::vector<double> a((size_t)(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) a[i * n + j] = 0.5 * (A[i * n + j] + A[j * n + i]);
  V.assign((size_t)(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) V[i * n + i] = 1.0;
  double scale = 0;
  for (double x : a) scale += x * x;
  // Cyclic Jacobi: each rotation J (angle phi in the (p, q) plane) zeroes a_pq in J^T A J, with
  // cot(2 phi) = (a_qq - a_pp) / (2 a_pq); the off-diagonal mass shrinks quadratically per sweep.
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off <= 1e-30 * scale || off == 0) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q of A J
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q of J^T (A J)
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (int64_t k = 0; k < n; ++k) {  // V <- V J
          const double vkp = V[k * n + p], vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  // sort ascending, permuting V's columns with the eigenvalues
  std::vector<int64_t> order((size_t)n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a[x * n + x] < a[y * n + y]; });
  std::vector<double> Vs((size_t)(n * n));
  w.resize((size_t)n);
  for (int64_t j = 0; j < n; ++j) {
    w[j] = a[order[j] * n + order[j]];
    for (int64_t i = 0; i < n; ++i) Vs[i * n + j] = V[i * n + order[j]];
  }
  V = std::move(Vs);
}

namespace {

// f(M) = V diag(f(w)) V^T for each (n, n) matrix of M (B, n, n), float32 out; also sum f(w).
Tensor spectral_map(const Tensor& M, const std::function<double(double)>& f, std::vector<double>* traces = nullptr) {
  KD_CHECK(M.dim() == 3 && M.size(1) == M.size(2), "wkd_f: expected square matrices (B, n, n), got {}",
           shape_str(M.shape()));
  const int64_t B = M.size(0), n = M.size(1);
  std::vector<float> in = to_float_vector(M.contiguous());
  std::vector<float> out((size_t)(B * n * n));
  if (traces) traces->assign((size_t)B, 0.0);
  std::vector<double> A((size_t)(n * n)), w, V;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < n * n; ++i) A[i] = in[b * n * n + i];
    symmetric_eigen(A, n, w, V);
    std::vector<double> fw((size_t)n);
    for (int64_t k = 0; k < n; ++k) fw[k] = f(w[k]);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < n; ++k) acc += V[i * n + k] * fw[k] * V[j * n + k];
        out[b * n * n + i * n + j] = (float)acc;
      }
    if (traces)
      for (int64_t k = 0; k < n; ++k) (*traces)[b] += std::sqrt(std::max(w[k], 0.0));
  }
  return from_vector(out, {B, n, n});
}

}  // namespace

Tensor sqrtm_constant(const Tensor& M) {
  return spectral_map(M.detach(), [](double x) { return std::sqrt(std::max(x, 0.0)); });
}

Tensor trace_sqrtm(const Tensor& M) {
  // value: sum_k sqrt(w_k); gradient: V diag(1 / (2 sqrt(w_k))) V^T = M^-1/2 / 2
  std::vector<double> traces;
  Tensor half_inv_sqrt =
      spectral_map(M.detach(), [](double x) { return 0.5 / std::sqrt(std::max(x, 1e-20)); }, &traces);  // (B, n, n)
  const int64_t B = M.size(0);
  std::vector<float> tv(traces.begin(), traces.end());
  Tensor out = from_vector(tv, {B});  // (B)
  return record(out, "trace_sqrtm", {M}, {half_inv_sqrt}, [B](const Node& node, const Tensor& g) {
    return std::vector<Tensor>{mul(node.saved[0], g.reshape({B, 1, 1}))};
  });
}

FullGaussians full_gaussians(const Tensor& f, double eps) {
  KD_CHECK(f.defined() && f.dim() == 4, "wkd_f: Gaussians are fitted to (B, C, H, W) maps, got {}",
           f.defined() ? shape_str(f.shape()) : std::string("an undefined tensor"));
  const int64_t B = f.size(0), C = f.size(1), N = f.size(2) * f.size(3);
  KD_CHECK(N >= 2, "wkd_f: a map of one position has no covariance; distil a larger feature map");
  Tensor X = f.reshape({B, C, N});                                      // (B, C, N)
  Tensor mu = mean(X, {2}, /*keepdim=*/true);                           // (B, C, 1)
  Tensor Xc = sub(X, mu);                                               // (B, C, N) centred
  Tensor cov = div(bmm(Xc, Xc.transpose(1, 2)), (double)(N - 1));       // (B, C, C) unbiased
  cov = add(cov, mul(eye_like(C), eps));                                // + eps I
  return {mu.reshape({B, C}), cov};
}

Tensor bures_term(const Tensor& cov_s, const Tensor& cov_t_in) {
  const Tensor cov_t = cov_t_in.detach();
  Tensor st = sqrtm_constant(cov_t);                                    // (B, C, C) Sigma_t^1/2
  Tensor inner = bmm(bmm(st, cov_s), st);                               // (B, C, C)
  Tensor tr_s = sum(mul(cov_s, eye_like(cov_s.size(1))), {1, 2});      // (B) tr Sigma_s
  Tensor tr_t = sum(mul(cov_t, eye_like(cov_t.size(1))), {1, 2});      // (B)
  return sub(add(tr_s, tr_t), mul(trace_sqrtm(inner), 2.0));            // (B)
}

static void check_cov(const std::string& cov) {
  KD_CHECK(cov == "diag" || cov == "full",
           "wkd_f: cov={} is not a covariance model; use cov=diag (the official per-channel Gaussians) or cov=full "
           "(the Bures term of full covariances)",
           cov);
}

LossBreakdown wkd_f_loss(const Tensor& zs, const Tensor& fs, const Tensor& ft_in, const Tensor& labels, ConvReg& projector,
                         const WkdFOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain) {
  check_logits_labels("wkd_f", zs, Tensor(), labels);
  KD_CHECK(fs.defined() && ft_in.defined() && fs.dim() == 4 && ft_in.dim() == 4,
           "wkd_f: the student and teacher features must be (B, C, H, W) maps");
  KD_CHECK(fs.size(0) == zs.size(0) && ft_in.size(0) == zs.size(0),
           "wkd_f: the student feature {} and teacher feature {} must have the batch size of the logits ({})",
           shape_str(fs.shape()), shape_str(ft_in.shape()), zs.size(0));
  KD_CHECK(epoch >= 1, "wkd_f: epoch {} given; epochs are counted from 1", epoch);
  KD_CHECK(opt.eps >= 0, "wkd_f: eps must be >= 0, got {}", opt.eps);
  const int64_t B = zs.size(0);
  const Tensor ft = ft_in.detach();  // the teacher is a constant

  Tensor projected = projector.forward(fs);  // (B, Ct, Ht, Wt)
  show_step(explain, "projected", projected);
  KD_CHECK(projected.shape() == ft.shape(),
           "wkd_f: the projector ({}) maps the student feature {} to {}, but the teacher feature is {}; the projector "
           "was sized for other feature shapes (build the distiller from a sample batch of the same input size)",
           projector.kind(), shape_str(fs.shape()), shape_str(projected.shape()), shape_str(ft.shape()));

  const double denom = (double)(opt.grid * opt.grid * B);  // g^2 B
  Tensor l_mean, l_cov;
  check_cov(opt.cov);
  if (opt.cov == "diag") {
    ChannelGaussians gs = channel_gaussians(projected, opt.grid, opt.eps);  // (B, Ct, g, g) each
    ChannelGaussians gt = channel_gaussians(ft, opt.grid, opt.eps);
    show_step(explain, "mu_s", gs.mean);
    show_step(explain, "sigma_s", gs.std);
    show_step(explain, "mu_t", gt.mean);
    show_step(explain, "sigma_t", gt.std);
    // the two terms of W2^2 between diagonal Gaussians, summed over channels and cells
    l_mean = div(sum(pow(sub(gs.mean, gt.mean), 2.0)), denom);  // ()
    l_cov = div(sum(pow(sub(gs.std, gt.std), 2.0)), denom);     // ()
  } else {
    // one C-dimensional Gaussian per cell; the covariance term is the Bures distance
    std::vector<Tensor> mu_s, cov_s, mu_t, cov_t, mean_terms, bures_terms;
    for (const auto& [h0, h1, w0, w1] : grid_cells(ft.size(2), ft.size(3), opt.grid)) {
      FullGaussians a = full_gaussians(projected.slice(2, h0, h1).slice(3, w0, w1), opt.eps);  // (B, C), (B, C, C)
      FullGaussians b = full_gaussians(ft.slice(2, h0, h1).slice(3, w0, w1), opt.eps);
      mu_s.push_back(a.mean);
      cov_s.push_back(a.cov);
      mu_t.push_back(b.mean);
      cov_t.push_back(b.cov);
      mean_terms.push_back(sum(pow(sub(a.mean, b.mean), 2.0)));  // ()
      bures_terms.push_back(sum(bures_term(a.cov, b.cov)));       // ()
    }
    show_step(explain, "mu_s", stack(mu_s, 1));      // (B, cells, C)
    show_step(explain, "Sigma_s", stack(cov_s, 1));  // (B, cells, C, C)
    show_step(explain, "mu_t", stack(mu_t, 1));
    show_step(explain, "Sigma_t", stack(cov_t, 1));
    l_mean = div(sum(stack(mean_terms, 0)), denom);   // ()
    l_cov = div(sum(stack(bures_terms, 0)), denom);   // ()
  }
  show_step(explain, "L_mean", l_mean);
  show_step(explain, "L_cov", l_cov);

  const double w = wkd_f_weight(opt.weight, epoch, opt.decay_epoch, total_epochs);
  show_step(explain, "weight_e", scalar_tensor(w));

  Tensor mean_part = mul(l_mean, w * opt.gamma);  // w(e) * gamma * L_mean
  Tensor cov_part = mul(l_cov, w);                // w(e) * L_cov
  LossBreakdown out;
  out.total = add(mean_part, cov_part);
  out.parts = {{"mean", mean_part}, {"cov", cov_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

WkdFDistiller::WkdFDistiller(const WkdFOptions& opt, const Shape& s_shape, const Shape& t_shape, uint64_t seed)
    : opt_(opt) {
  Generator gen(seed);
  conv_reg_ = register_module("conv_reg", std::make_shared<ConvReg>(s_shape, t_shape, gen, true, "wkd_f"));
}

LossBreakdown WkdFDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.hint_layer, "wkd_f", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_layer, "wkd_f", "teacher");
  return wkd_f_loss(student.logits, fs, ft, batch.labels, *conv_reg_, opt_, batch.epoch, batch.total_epochs, explain);
}

Params WkdFDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_wkd_f_distiller(const Params& params, const DistillerContext& ctx) {
  WkdFOptions o = parse_options<WkdFOptions>("wkd_f", params);
  if (!params.count("teacher_layer")) o.teacher_layer = o.hint_layer;
  check_cov(o.cov);
  check_tap_name(o.hint_layer, "wkd_f");
  check_tap_name(o.teacher_layer, "wkd_f");
  KD_CHECK(o.grid >= 1, "wkd_f: the spatial grid must be >= 1 (1 = statistics over the whole map), got grid={}", o.grid);
  KD_CHECK(o.eps >= 0, "wkd_f: eps must be >= 0, got eps={}", o.eps);
  KD_CHECK(o.decay_epoch >= 0, "wkd_f: decay_epoch must be >= 0, got {}", o.decay_epoch);
  const Shape s = sample_tap_shape(ctx.student_sample, o.hint_layer, "wkd_f", "student");
  const Shape t = sample_tap_shape(ctx.teacher_sample, o.teacher_layer, "wkd_f", "teacher");
  return std::make_shared<WkdFDistiller>(o, s, t, ctx.seed);
}

}  // namespace kd::distill
