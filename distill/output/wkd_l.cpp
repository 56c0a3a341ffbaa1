// wkd_l.cpp: WKD-L (Lv et al. 2024), the official WKD.py semantics. The equation is in wkd_l.h.
#include "distill/output/wkd_l.h"

#include <cmath>
#include <numbers>

#include "distill/output/wkd_cost.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"

namespace kd::distill {

// ------------------------------------------------------------------------------- Sinkhorn

namespace {

// max over the batch of |plan 1 - qs|_1 + |plan^T 1 - qt|_1, for plan = diag(u) Kmat diag(v):
// row sums u_i (Kmat v)_i, column sums v_j (Kmat^T u)_j.
double marginal_error(const Tensor& Kmat, const Tensor& Kmat_T, const Tensor& u, const Tensor& v, const Tensor& a,
                      const Tensor& b) {
  NoGradGuard no_grad;
  Tensor rows = mul(u, bmm(Kmat, v));    // (B, n, 1)
  Tensor cols = mul(v, bmm(Kmat_T, u));  // (B, n, 1)
  Tensor err = add(sum(abs(sub(rows, a)), {1, 2}), sum(abs(sub(cols, b)), {1, 2}));  // (B)
  return max(err).item();
}

}  // namespace

SinkhornResult sinkhorn(const Tensor& qs, const Tensor& qt, const Tensor& M, const SinkhornOptions& opt,
                        const ExplainFn& explain) {
  KD_CHECK(qs.dim() == 2 && qt.shape() == qs.shape(), "sinkhorn: qs {} and qt {} must both be (B, n)",
           shape_str(qs.shape()), shape_str(qt.shape()));
  const int64_t B = qs.size(0), n = qs.size(1);
  KD_CHECK(M.dim() == 3 && M.size(0) == B && M.size(1) == n && M.size(2) == n,
           "sinkhorn: the cost M has shape {}; expected ({}, {}, {}) for distributions of shape {}", shape_str(M.shape()),
           B, n, n, shape_str(qs.shape()));
  KD_CHECK(opt.eps > 0, "sinkhorn: eps must be > 0, got {}", opt.eps);
  KD_CHECK(opt.iters >= 1, "sinkhorn: iters must be >= 1, got {}", opt.iters);
  KD_CHECK(!opt.converged || (opt.tol > 0 && opt.max_iters >= 1),
           "sinkhorn: the converged variant needs tol > 0 and max_iters >= 1, got tol={} max_iters={}", opt.tol,
           opt.max_iters);
  SinkhornResult r;
  Tensor a = qs.reshape({B, n, 1});  // (B, n, 1) row marginal: the student
  Tensor b = qt.reshape({B, n, 1});  // (B, n, 1) column marginal: the teacher

  if (!opt.converged) {
    // ---- the official iteration, exactly: scalings u, v with the 1e-8 guards, `iters` times
    Tensor Kmat = exp(div(M, -opt.eps));                // (B, n, n) Gibbs kernel exp(-M / eps)
    Tensor Kmat_T = Kmat.transpose(1, 2).contiguous();  // (B, n, n)
    show_step(explain, "Kmat", Kmat);
    Tensor u = full({B, n, 1}, 1.0 / (double)n);  // (B, n, 1)
    Tensor v;                                     // (B, n, 1)
    for (int64_t it = 0; it < opt.iters; ++it) {
      v = div(b, add(bmm(Kmat_T, u), 1e-8));  // v = qt / (Kmat^T u + 1e-8)
      u = div(a, add(bmm(Kmat, v), 1e-8));    // u = qs / (Kmat v + 1e-8)
    }
    r.iterations = opt.iters;
    show_step(explain, "u", u);
    show_step(explain, "v", v);
    // transport_plan = diag(u) Kmat diag(v): u_i * Kmat_ij * v_j
    r.transport_plan = mul(mul(u, Kmat), v.reshape({B, 1, n}));  // (B, n, n)
    r.u = u;
    r.v = v;
    r.marginal_error = marginal_error(Kmat, Kmat_T, u, v, a, b);
  } else {
    // ---- converged: the same iteration in the log domain, f = log u, g = log v, without the
    // 1e-8 guards (they move the fixed point: the row sums become qs * Kv / (Kv + 1e-8), so the
    // marginals never match when Kv is small), until the marginals match to tol.
    Tensor log_K = div(M, -opt.eps);                    // (B, n, n) log Kmat
    show_step(explain, "Kmat", exp(log_K));
    Tensor log_a = log(clamp(a, 1e-30, std::nullopt));  // (B, n, 1); the clamp keeps log 0 out of the gradient
    Tensor log_b = log(clamp(b, 1e-30, std::nullopt)).reshape({B, 1, n});  // (B, 1, n)
    Tensor f = full({B, n, 1}, -std::log((double)n));  // (B, n, 1) log u, u = 1/n as the official start
    Tensor g;                                           // (B, 1, n) log v
    for (int64_t it = 0; it < opt.max_iters; ++it) {
      g = sub(log_b, logsumexp(add(log_K, f), {1}, /*keepdim=*/true));  // log v = log qt - log(Kmat^T u)
      f = sub(log_a, logsumexp(add(log_K, g), {2}, /*keepdim=*/true));  // log u = log qs - log(Kmat v)
      r.iterations = it + 1;
      NoGradGuard no_grad;
      Tensor plan = exp(add(add(f, log_K), g));  // (B, n, n)
      Tensor err = add(sum(abs(sub(sum(plan, {2}, true), a)), {1, 2}),
                       sum(abs(sub(sum(plan, {1}, true), b.reshape({B, 1, n}))), {1, 2}));  // (B)
      r.marginal_error = max(err).item();
      if (r.marginal_error < opt.tol) break;
    }
    r.u = exp(f);
    r.v = exp(g).reshape({B, n, 1});
    show_step(explain, "u", r.u);
    show_step(explain, "v", r.v);
    r.transport_plan = exp(add(add(f, log_K), g));  // (B, n, n) u_i Kmat_ij v_j
  }
  show_step(explain, "transport_plan", r.transport_plan);
  show_step(explain, "sinkhorn_iterations", scalar_tensor((double)r.iterations));
  show_step(explain, "marginal_error", scalar_tensor(r.marginal_error));
  return r;
}

Tensor sharpen_cost_matrix(const Tensor& D, double kappa) {
  if (kappa == 0.0) return D;
  return rsub(1.0, exp(mul(D, -kappa)));  // 1 - exp(-kappa D)
}

double wkd_gamma(double gamma, int64_t epoch, int64_t decay_epoch, int64_t total_epochs) {
  if (epoch <= decay_epoch) return gamma;
  KD_CHECK(total_epochs > decay_epoch,
           "wkd_l: epoch {} is past decay_epoch {}, but the run's total epochs ({}) are not; the cosine decay of gamma "
           "needs total_epochs > decay_epoch (set BatchInfo::total_epochs, `kdlab loss --total-epochs`, or a larger "
           "decay_epoch)",
           epoch, decay_epoch, total_epochs);
  const double progress = (double)(epoch - decay_epoch) / (double)(total_epochs - decay_epoch);
  return 0.5 * gamma * (1.0 + std::cos(progress * std::numbers::pi));
}

// ------------------------------------------------------------------------------- the loss

namespace {

void check_cost_matrix(const Tensor& D, int64_t K) {
  KD_CHECK(D.defined(),
           "wkd_l: no category cost matrix; build it with `kdlab wkd-cost` and pass --set cost_matrix=PATH "
           "(or --cost-matrix PATH to `kdlab loss`)");
  KD_CHECK(D.dtype() == DType::f32, "wkd_l: the cost matrix must be float32, got {}", dtype_name(D.dtype()));
  KD_CHECK(D.dim() == 2 && D.size(0) == K && D.size(1) == K,
           "wkd_l: the cost matrix has shape {} but the logits have K = {} classes; expected ({}, {})",
           shape_str(D.shape()), K, K, K);
  for (float x : to_float_vector(D))
    KD_CHECK(std::isfinite(x), "wkd_l: the cost matrix holds a non-finite value ({}); rebuild it", x);
}

// M[b, i, j] = D[o_b,i, o_b,j] over the non-target classes o_b of sample b: (B, n, n). D is a
// constant (no gradient), so plain loops build it.
Tensor per_sample_cost(const Tensor& D, const Tensor& other_idx) {
  const int64_t B = other_idx.size(0), n = other_idx.size(1), K = D.size(0);
  std::vector<float> d = to_float_vector(D);
  std::vector<int64_t> o = to_int_vector(other_idx);
  Tensor M = empty({B, n, n});
  float* m = M.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) m[(b * n + i) * n + j] = d[o[b * n + i] * K + o[b * n + j]];
  return M;
}

}  // namespace

LossBreakdown wkd_l_loss(const Tensor& zs, const Tensor& zt_in, const Tensor& labels, const Tensor& D,
                         const WkdLOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain) {
  check_logits_labels("wkd_l", zs, zt_in, labels);
  const int64_t B = zs.size(0), K = zs.size(1);
  KD_CHECK(K >= 2, "wkd_l: the logits have K = {} class; WKD-L needs K >= 2", K);
  check_cost_matrix(D, K);
  KD_CHECK(opt.tau > 0, "wkd_l: the temperature tau must be > 0, got {}", opt.tau);
  KD_CHECK(epoch >= 1, "wkd_l: epoch {} given; epochs are counted from 1", epoch);
  const Tensor zt = zt_in.detach();  // the teacher is frozen
  const Tensor y = labels.reshape({B, 1});

  Tensor D_sharp = sharpen_cost_matrix(D, opt.kappa);  // (K, K)
  show_step(explain, "D_sharpened", D_sharp);

  // ---- target term at T = 1: -(1/B) sum_b pt_y log ps_y, pt detached
  Tensor log_ps = log_softmax(zs, 1);             // (B, K)
  Tensor pt = softmax(zt, 1);                     // (B, K)
  Tensor log_ps_y = gather(log_ps, 1, y);         // (B, 1)
  Tensor pt_y = gather(pt, 1, y);                 // (B, 1)
  show_step(explain, "log_ps", log_ps);
  show_step(explain, "pt_y", pt_y);
  Tensor l_target = neg(mean(mul(pt_y, log_ps_y)));  // ()
  show_step(explain, "L_target", l_target);

  // ---- non-target distributions over the K - 1 other classes, at temperature tau
  Tensor other_idx = non_target_index(labels, K);                  // (B, n) int64
  Tensor qs = softmax(div(gather(zs, 1, other_idx), opt.tau), 1);  // (B, n)
  Tensor qt = softmax(div(gather(zt, 1, other_idx), opt.tau), 1);  // (B, n)
  show_step(explain, "qs", qs);
  show_step(explain, "qt", qt);

  // ---- per-sample cost and the entropic optimal transport
  Tensor M = add(relu(per_sample_cost(D_sharp, other_idx)), 1e-8);  // (B, n, n)
  show_step(explain, "M", M);
  SinkhornResult ot = sinkhorn(qs, qt, M, opt.sinkhorn, explain);
  Tensor wd_b = sum(mul(ot.transport_plan, M), {1, 2});  // (B) WD_b = sum_ij plan_ij M_ij
  show_step(explain, "wd_b", wd_b);
  Tensor wd = mean(wd_b);  // ()
  show_step(explain, "WD", wd);

  const double gamma_e = wkd_gamma(opt.gamma, epoch, opt.decay_epoch, total_epochs);
  show_step(explain, "gamma_e", scalar_tensor(gamma_e));

  Tensor wd_part = mul(wd, gamma_e);  // gamma(epoch) * mean_b WD_b
  LossBreakdown out;
  out.total = add(l_target, wd_part);
  out.parts = {{"target", l_target}, {"wd", wd_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

// ------------------------------------------------------------------------------- the distiller

void WkdLDistiller::set_cost_matrix(const Tensor& D) {
  KD_CHECK(D.defined() && D.dim() == 2 && D.size(0) == D.size(1),
           "wkd_l: the cost matrix must be square (K, K), got {}", D.defined() ? shape_str(D.shape()) : "undefined");
  cost_ = D.detach().to(DType::f32).contiguous();
}

LossBreakdown WkdLDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  return wkd_l_loss(student.logits, teacher.logits, batch.labels, cost_, opt_, batch.epoch, batch.total_epochs, explain);
}

Params WkdLDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_wkd_l_distiller(const Params& params, const DistillerContext& ctx) {
  const WkdLOptions o = parse_options<WkdLOptions>("wkd_l", params);
  const std::string& path = o.cost_matrix;
  KD_CHECK(o.tau > 0, "wkd_l: the temperature tau must be > 0, got tau={}", o.tau);
  KD_CHECK(o.sinkhorn.eps > 0, "wkd_l: the Sinkhorn regularisation eps must be > 0, got eps={}", o.sinkhorn.eps);
  KD_CHECK(o.sinkhorn.iters >= 1, "wkd_l: iters must be >= 1, got iters={}", o.sinkhorn.iters);
  KD_CHECK(o.sinkhorn.tol > 0 && o.sinkhorn.max_iters >= 1,
           "wkd_l: need tol > 0 and max_iters >= 1, got tol={} max_iters={}",
           o.sinkhorn.tol, o.sinkhorn.max_iters);
  auto d = std::make_shared<WkdLDistiller>(o);
  if (ctx.class_cost.defined()) {
    const Tensor& D = ctx.class_cost;
    KD_CHECK(D.dim() == 2 && D.size(0) == D.size(1) && (ctx.num_classes == 0 || D.size(0) == ctx.num_classes),
             "wkd_l: the given cost matrix is {}; expected ({}, {})", shape_str(D.shape()), ctx.num_classes,
             ctx.num_classes);
    d->set_cost_matrix(D);
  } else if (!path.empty()) {
    Tensor D = load_npy(path);
    KD_CHECK(D.dim() == 2 && D.size(0) == D.size(1), "wkd_l: the cost matrix {} has shape {}; expected a square (K, K)",
             path, shape_str(D.shape()));
    KD_CHECK(ctx.num_classes == 0 || D.size(0) == ctx.num_classes,
             "wkd_l: the cost matrix {} is {} but the data set has {} classes; build it for this data set with `kdlab "
             "wkd-cost`",
             path, shape_str(D.shape()), ctx.num_classes);
    d->set_cost_matrix(D);
  } else if (ctx.teacher_model) {
    // No cost matrix given: the classifier-weight (cosine) one from the teacher, as WKD's "fc"
    // variant; the run keeps it as RUN_DIR/cost_matrix.npy (artifacts()).
    d->set_cost_matrix(cost_matrix_cosine(classifier_weight(*ctx.teacher_model, ctx.num_classes)));  // (K, K)
    d->built_from_teacher_ = true;
  }
  return d;
}

std::vector<Artifact> WkdLDistiller::artifacts() const {
  if (!built_from_teacher_) return {};
  return {{"cost_matrix", cost_,
           "wkd_l: no cost_matrix given; 1 - cos of the teacher's classifier rows (kdlab wkd-cost --source features "
           "builds the CKA one)"}};
}

}  // namespace kd::distill
