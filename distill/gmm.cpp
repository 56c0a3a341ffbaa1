// gmm.cpp: EM for a two-component 1-D Gaussian mixture (sklearn's GaussianMixture semantics;
// the equations are in gmm.h).
#include "distill/gmm.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace kd::distill {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();

// log N(x; mu, var)
double log_gauss(double x, double mu, double var) {
  const double d = x - mu;
  return -0.5 * (std::log(2.0 * M_PI) + std::log(var) + d * d / var);
}

// The M-step from responsibilities resp0_i = r_i0 (r_i1 = 1 - r_i0).
void m_step(const std::vector<double>& x, const std::vector<double>& resp0, double reg_covar, Gmm1d& g) {
  const int64_t N = (int64_t)x.size();
  double nk[2] = {10 * kEps, 10 * kEps}, sx[2] = {0, 0};
  for (int64_t i = 0; i < N; ++i) {
    const double r[2] = {resp0[i], 1.0 - resp0[i]};
    for (int k = 0; k < 2; ++k) {
      nk[k] += r[k];
      sx[k] += r[k] * x[i];
    }
  }
  for (int k = 0; k < 2; ++k) g.mean[k] = sx[k] / nk[k];
  double sv[2] = {0, 0};
  for (int64_t i = 0; i < N; ++i) {
    const double r[2] = {resp0[i], 1.0 - resp0[i]};
    for (int k = 0; k < 2; ++k) sv[k] += r[k] * (x[i] - g.mean[k]) * (x[i] - g.mean[k]);
  }
  for (int k = 0; k < 2; ++k) g.var[k] = sv[k] / nk[k] + reg_covar;
  const double total = nk[0] + nk[1];
  for (int k = 0; k < 2; ++k) g.weight[k] = nk[k] / total;
}

// The E-step: resp0_i = p(component 0 | x_i); returns L = mean_i log p(x_i).
double e_step(const std::vector<double>& x, const Gmm1d& g, std::vector<double>& resp0) {
  const int64_t N = (int64_t)x.size();
  resp0.resize(N);
  double sum_log_norm = 0;
  const double lw0 = std::log(g.weight[0]), lw1 = std::log(g.weight[1]);
  for (int64_t i = 0; i < N; ++i) {
    const double a = lw0 + log_gauss(x[i], g.mean[0], g.var[0]);  // log pi_0 N_0
    const double b = lw1 + log_gauss(x[i], g.mean[1], g.var[1]);  // log pi_1 N_1
    const double m = std::max(a, b);
    const double log_norm = m + std::log(std::exp(a - m) + std::exp(b - m));  // logsumexp
    resp0[i] = std::exp(a - log_norm);
    sum_log_norm += log_norm;
  }
  return sum_log_norm / (double)N;
}

}  // namespace

Gmm1d fit_gmm_1d(const std::vector<double>& x, const GmmOptions& opt) {
  const int64_t N = (int64_t)x.size();
  KD_CHECK(N >= 2, "fit_gmm_1d: a two-component mixture needs at least 2 values, got {}", N);
  KD_CHECK(opt.max_iter >= 1 && opt.tol >= 0 && opt.reg_covar >= 0,
           "fit_gmm_1d: need max_iter >= 1, tol >= 0, reg_covar >= 0 (got {}, {}, {})", opt.max_iter, opt.tol,
           opt.reg_covar);
  for (int64_t i = 0; i < N; ++i)
    KD_CHECK(std::isfinite(x[i]), "fit_gmm_1d: value {} is {} (the losses must be finite)", i, x[i]);

  // init: hard 2-means, centres from the extremes, Lloyd's iterations until nothing moves
  double c0 = *std::min_element(x.begin(), x.end()), c1 = *std::max_element(x.begin(), x.end());
  std::vector<double> resp0(N);
  for (int it = 0; it < 100; ++it) {
    double s0 = 0, s1 = 0;
    int64_t n0 = 0, n1 = 0;
    for (int64_t i = 0; i < N; ++i) {
      const bool near0 = std::abs(x[i] - c0) <= std::abs(x[i] - c1);
      resp0[i] = near0 ? 1.0 : 0.0;
      if (near0) s0 += x[i], ++n0;
      else s1 += x[i], ++n1;
    }
    const double n_c0 = n0 ? s0 / n0 : c0, n_c1 = n1 ? s1 / n1 : c1;
    if (n_c0 == c0 && n_c1 == c1) break;
    c0 = n_c0;
    c1 = n_c1;
  }
  Gmm1d g;
  m_step(x, resp0, opt.reg_covar, g);

  // EM
  double lower_bound = -std::numeric_limits<double>::infinity();
  for (int64_t it = 1; it <= opt.max_iter; ++it) {
    const double prev = lower_bound;
    lower_bound = e_step(x, g, resp0);
    m_step(x, resp0, opt.reg_covar, g);
    g.iterations = it;
    if (std::abs(lower_bound - prev) < opt.tol) {
      g.converged = true;
      break;
    }
  }
  g.lower_bound = lower_bound;
  return g;
}

std::vector<double> gmm_posterior(const Gmm1d& g, const std::vector<double>& x, int64_t component) {
  KD_CHECK(component == 0 || component == 1, "gmm_posterior: component must be 0 or 1, got {}", component);
  std::vector<double> resp0;
  e_step(x, g, resp0);
  if (component == 1)
    for (double& r : resp0) r = 1.0 - r;
  return resp0;
}

std::vector<double> gmm_clean_probability(const std::vector<double>& losses, const GmmOptions& opt) {
  if (losses.size() < 2) return std::vector<double>(losses.size(), 1.0);
  const auto [lo, hi] = std::minmax_element(losses.begin(), losses.end());
  if (*lo == *hi) return std::vector<double>(losses.size(), 1.0);  // nothing to separate
  const Gmm1d g = fit_gmm_1d(losses, opt);
  return gmm_posterior(g, losses, g.low_component());
}

}  // namespace kd::distill
