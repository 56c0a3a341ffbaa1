// gmm.h: a two-component Gaussian mixture on 1-D values, fitted by EM: the clean/noisy split of
// DivideMix (Li, Socher, Hoi, ICLR 2020) and ACD-U.
//
// Noisy-label methods fit it to the per-sample training losses (min-max normalised to [0, 1]):
// correctly labelled samples are learned first and have small losses, so the component with the
// smaller mean is "clean", and its posterior w_i = p(clean | loss_i) is each sample's clean
// probability.
//
// Model: p(x) = pi_0 N(x; mu_0, var_0) + pi_1 N(x; mu_1, var_1).
// EM, as sklearn.mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2,
// reg_covar=5e-4) -- the call in DivideMix's and ACD-U's eval_train:
//   init   hard 2-means on x: resp_ik = 1 for the nearer centre, then one M-step
//   E      r_ik = pi_k N(x_i; mu_k, var_k) / sum_j pi_j N(x_i; mu_j, var_j)   (in log space)
//          L = mean_i log sum_k pi_k N(x_i; mu_k, var_k)   (the lower bound)
//   M      n_k = sum_i r_ik + 10 eps;  pi_k = n_k / sum n;  mu_k = sum_i r_ik x_i / n_k;
//          var_k = sum_i r_ik (x_i - mu_k)^2 / n_k + reg_covar
//   stop   after max_iter E/M rounds, or as soon as |L - L_prev| < tol
//   output the posteriors of a final E-step (sklearn's predict_proba)
// One difference: sklearn's KMeans starts from random k-means++ centres (random_state=None in
// both official codes, so their splits are not reproducible run to run); here 2-means starts
// from the smallest and the largest value and runs Lloyd's iterations to convergence, which is
// deterministic and, in 1-D, finds the same split a good k-means++ start does.
#pragma once
#include <cstdint>
#include <vector>

namespace kd::distill {

struct GmmOptions {
  int64_t max_iter = 10;
  double tol = 1e-2;
  double reg_covar = 5e-4;
};

struct Gmm1d {
  double weight[2] = {0.5, 0.5};  // pi_k
  double mean[2] = {0, 0};        // mu_k
  double var[2] = {1, 1};         // var_k (reg_covar included)
  int64_t iterations = 0;         // E/M rounds run
  bool converged = false;         // |L - L_prev| < tol was reached
  double lower_bound = 0;         // the last L
  int64_t low_component() const { return mean[0] <= mean[1] ? 0 : 1; }  // argmin of the means
};

// Fits the mixture to x (at least 2 values).
Gmm1d fit_gmm_1d(const std::vector<double>& x, const GmmOptions& options = {});

// p(component | x_i) for every value (a final E-step).
std::vector<double> gmm_posterior(const Gmm1d& gmm, const std::vector<double>& x, int64_t component);

// The whole split: fit, then the posterior of the low-mean component for every value. With
// fewer than two distinct values nothing separates the samples and every probability is 1.
std::vector<double> gmm_clean_probability(const std::vector<double>& losses, const GmmOptions& options = {});

}  // namespace kd::distill
