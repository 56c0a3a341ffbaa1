// wkd_l.h: WKD-L, logit distillation by the Wasserstein distance between class distributions.
//
// Paper: J. Lv, H. Yang, P. Li, "Wasserstein Distance Rivals Kullback-Leibler Divergence for
//        Knowledge Distillation", NeurIPS 2024 (arXiv 2412.08139). Official code: JiamingLv/WKD,
//        mdistiller/distillers/WKD.py (sinkhorn, wkd_logit_loss, wkd_logit_loss_with_speration,
//        WKD.forward_train) and tools/generate_class_proto.py, tools/generate_cost_matrix.py.
//
// KL compares the two distributions class by class; the Wasserstein distance also knows how far
// apart the classes are (a cost matrix D between categories, built offline from the teacher, see
// wkd_cost.h), so mass the student puts on a class similar to the teacher's choice costs little.
//
// Equation (B samples, K classes, label y; n = K - 1 non-target classes):
//     sharpened cost     D <- 1 - exp(-kappa * D)                         (K, K), once
//     target term        L_target = -(1/B) sum_b pt_{b,y} * log ps_{b,y}   (T = 1, pt detached)
//     non-target         qs = softmax(zs[not y] / tau), qt = softmax(zt[not y] / tau)   (B, n)
//     per-sample cost    M = D[not y, not y];  M <- relu(M) + 1e-8                      (B, n, n)
//     Sinkhorn (eps)     Kmat = exp(-M / eps), u = 1/n
//                        repeat iters times:  v = qt / (Kmat^T u + 1e-8);  u = qs / (Kmat v + 1e-8)
//                        transport_plan = diag(u) Kmat diag(v)
//     WD_b               = sum_ij transport_plan_ij * M_ij
//     L = w_ce * CE(zs, y) + L_target + gamma(epoch) * (1/B) sum_b WD_b
//         (w_ce * CE added by distill_loss, distiller.h)
//     gamma(e) = gamma for e <= E_d, then 0.5 * gamma * (1 + cos(pi (e - E_d) / (E - E_d)))
//
// Official-code semantics reproduced exactly: the order above (v first, then u), u initialised
// to 1/n, the two 1e-8 in the denominators, relu(M) + 1e-8 after the sharpening and the
// per-sample selection, exactly `iters` = 10 iterations with eps = 0.05 (not converged: the
// column marginals are off), the gradient flowing through the unrolled iterations into qs (the
// teacher side and the cost are constants), the mean over the batch of the target term
// (`-(t_t * s_t).mean()`) and of WD, the target term's weight fixed at 1 and outside the decay,
// kappa = 0 meaning no sharpening, and the cosine decay of gamma after COSINE_DECAY_EPOCH (E_d)
// reaching 0 at the last epoch E. CIFAR-100 resnet32x4->resnet8x4: gamma 600, tau 8, E_d 150,
// kappa 1, eps 0.05, 10 iterations, CE weight 1 (wrn_40_2->ShuffleV1: gamma 200, tau 6).
// Offered beside it: `converged=true` runs the same iteration in the log domain (f = log u,
// g = log v, logsumexp instead of the products) WITHOUT the 1e-8 guards, until the plan's
// marginals match qs and qt to `tol` (L1 of both marginals, worst sample) or `max_iters`; the
// paper's WD is the converged one. (The guards move the fixed point: the row sums become
// qs * Kv / (Kv + 1e-8), which never reach qs when Kv is small, as it is with eps = 0.05.)
//
// Parameters (--set): the option table WkdLOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method wkd_l`).
// Loss parts: "target" = L_target, "wd" = gamma(epoch) * mean_b WD_b (after distill_loss's "ce").
#pragma once
#include "distill/distiller.h"
#include "distill/output/common.h"

namespace kd::distill {

struct SinkhornOptions {
  double eps = 0.05;         // entropic regularisation (the official "lambda" 0.05)
  int64_t iters = 10;        // the official count
  bool converged = false;    // iterate to tolerance instead
  double tol = 1e-4;         // converged: max_b (|plan 1 - qs|_1 + |plan^T 1 - qt|_1)
  int64_t max_iters = 1000;  // converged: the cap
};

struct SinkhornResult {
  Tensor transport_plan;        // (B, n, n), differentiable w.r.t. qs
  Tensor u, v;                  // (B, n, 1) the scalings
  int64_t iterations = 0;       // iterations run
  double marginal_error = 0.0;  // max over the batch of |plan 1 - qs|_1 + |plan^T 1 - qt|_1 (float32)
};

// qs, qt (B, n) distributions (rows of the plan follow qs, columns qt), M (B, n, n) costs.
SinkhornResult sinkhorn(const Tensor& qs, const Tensor& qt, const Tensor& M, const SinkhornOptions& opt,
                        const ExplainFn& explain = {});

// D <- 1 - exp(-kappa D); kappa = 0 leaves D unchanged (the official COST_MATRIX_SHARPEN = 0).
Tensor sharpen_cost_matrix(const Tensor& D, double kappa);

// gamma(e): constant to decay_epoch, then cosine to 0 at total_epochs.
double wkd_gamma(double gamma, int64_t epoch, int64_t decay_epoch, int64_t total_epochs);

struct WkdLOptions {
  double tau = 8.0;
  double gamma = 600.0;
  double kappa = 1.0;
  int64_t decay_epoch = 150;
  double ce_weight = 1.0;
  SinkhornOptions sinkhorn;
  std::string cost_matrix;  // path of the .npy; empty: set_cost_matrix() gives it
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("tau", o.tau, "temperature of the non-target distributions");
    f("gamma", o.gamma, "weight of WD until decay_epoch, then cosine to 0");
    f("eps", o.sinkhorn.eps, "Sinkhorn's entropic regularisation (the official lambda)");
    f("iters", o.sinkhorn.iters, "Sinkhorn iterations (the official 10, not converged)");
    f("kappa", o.kappa, "sharpening of the cost, D <- 1 - exp(-kappa D); 0 = none");
    f("decay_epoch", o.decay_epoch, "E_d: gamma is constant to this epoch, then decays to 0 at the last");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("converged", o.sinkhorn.converged, "iterate in the log domain until the marginals match to tol");
    f("tol", o.sinkhorn.tol, "converged: L1 error of the plan's marginals to stop at");
    f("max_iters", o.sinkhorn.max_iters, "converged: the cap on iterations");
    f("cost_matrix", o.cost_matrix, "the K x K category costs (.npy from `kdlab wkd-cost`), before sharpening",
      !o.cost_matrix.empty());
  }
};

// zs, zt (B, K), labels (B), D (K, K) the cost matrix BEFORE sharpening. Intermediates shown:
// D_sharpened, log_ps, pt_y, L_target, qs, qt, M, Kmat, u, v, transport_plan, wd_b, WD,
// gamma_e. The method's terms only (add_cross_entropy adds the CE for the whole L).
LossBreakdown wkd_l_loss(const Tensor& zs, const Tensor& zt, const Tensor& labels, const Tensor& D,
                         const WkdLOptions& opt, int64_t epoch, int64_t total_epochs, const ExplainFn& explain = {});

class WkdLDistiller : public Distiller {
 public:
  explicit WkdLDistiller(const WkdLOptions& opt) : opt_(opt) {}
  std::string name() const override { return "wkd_l"; }
  std::string type_name() const override { return "WKD-L"; }
  TeacherNeeds needs() const override { return {.class_cost = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const WkdLOptions& options() const { return opt_; }
  // The K x K category cost matrix before sharpening (wkd_cost.h builds it).
  void set_cost_matrix(const Tensor& D);
  const Tensor& cost_matrix() const { return cost_; }
  // The cost matrix when the method built it from the teacher's classifier (no cost_matrix given).
  std::vector<Artifact> artifacts() const override;

 private:
  WkdLOptions opt_;
  Tensor cost_;  // (K, K), before sharpening
  bool built_from_teacher_ = false;
  friend std::shared_ptr<Distiller> make_wkd_l_distiller(const Params& params, const DistillerContext& ctx);
};

// Reads the parameters and takes the cost matrix, the first there is of: ctx.class_cost (kdlab
// loss --cost-matrix), the `cost_matrix=PATH` .npy, or 1 - cos of the rows of ctx.teacher_model's
// classifier (WKD's "fc" variant; `kdlab wkd-cost --source features` builds the CKA one). Each
// is checked against ctx.num_classes.
std::shared_ptr<Distiller> make_wkd_l_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
