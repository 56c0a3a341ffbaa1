// relation.h: the relation family's one mechanism, and the `relation` method that exposes it.
//
// Survey form: C. Yang, X. Yu, Z. An, Y. Xu, "Categories of Response-Based, Feature-Based, and
//              Relation-Based Knowledge Distillation" (2023). A relation-based method transfers
//              how samples relate to each other, not what each sample looks like:
//     L = sum_ij d( psi_s(f_i, f_j), psi_t(f_i, f_j) )
// psi is a relation between samples of one network (computed on the student's features f^s and,
// separately, on the teacher's f^t; the two networks' feature widths need not agree, since psi
// only compares samples of one network), and d compares the two relation tensors entry by entry.
//
// Features: a tap (B, ...) flattened to e = (B, D) per network. The teacher's relation is a
// constant (the teacher's features are detached). The relation functions psi, by name:
//   "distance"  psi_ij = ||e_i - e_j|| / mu, mu = mean of the positive entries    (B, B)   RKD
//               (RKD's pdist: squared distance ||e_i||^2 + ||e_j||^2 - 2 e_i.e_j clamped at 1e-12
//               before the sqrt, diagonal set to 0; `squared` keeps the squared distance)
//   "angle"     psi_ijk = < normalize(e_j - e_i), normalize(e_k - e_i) >          (B, B, B) RKD
//               (normalize: x / max(||x||, 1e-12), so e_i - e_i gives the zero vector)
//   "gram"      G = e e^T with each row L2-normalised                              (B, B)   SP
//   "prob"      x = e / (||e|| + eps), K_ij = (x_i . x_j + 1) / 2, psi_ij = K_ij / sum_j K_ij  (B, B) PKT
//   "corr"      the Gaussian RBF kernel exp(-gamma ||x_i - x_j||^2) of L2-normalised x, by its
//               order-P Taylor expansion sum_{p=0..P} e^{-2 gamma} (2 gamma)^p / p! (x_i . x_j)^p
//                                                                                   (B, B)   CC (paper)
// The distances d, by name, entry by entry with a = psi_s, b = psi_t:
//   "smooth_l1" 0.5 (a - b)^2 / beta where |a - b| < beta, else |a - b| - 0.5 beta (PyTorch's)
//   "huber"     beta * smooth_l1 (PyTorch's huber_loss with delta = beta)
//   "mse"       (a - b)^2
//   "frobenius" (a - b)^2, summed by default: ||psi_s - psi_t||_F^2
//   "kl"        b log((b + eps) / (a + eps))    (KL(psi_t || psi_s) of probability relations; psi=prob)
// then a reduction over all entries: "mean" (divide by B^2, or B^3 for angles), "sum", or
// "batchmean" (divide by B). The default is "sum" for frobenius and "mean" for the others.
//
// The named methods are instances: RKD = distance + angle with smooth_l1 (rkd.h), SP = gram with
// frobenius / B^2 (sp.h), PKT = prob with kl (pkt.h); CC's official code is not of this form
// (cc.h), its paper is: corr with mse.
//
// The `relation` method (--method relation): L = ce_weight * CE(zs, y) + weight * L_rel (the CE
// added by distill_loss, distiller.h), with the parameters of RelationMethodOptions' table below
// (`kdlab distill --list --method relation`): psi, d, reduction, the taps, the weights, and the
// constants of each psi / d. Parts (after distill_loss's "ce"): one named by psi.
#pragma once
#include <string>

#include "distill/distiller.h"
#include "distill/feature/common.h"
#include "distill/output/common.h"

namespace kd::distill {

struct RelationOptions {
  std::string psi = "distance";  // distance | angle | gram | prob | corr
  std::string d = "smooth_l1";   // smooth_l1 | huber | mse | frobenius | kl
  std::string reduction;         // mean | sum | batchmean; empty: the default of d
  double beta = 1.0;             // smooth_l1 / huber threshold
  double eps = 1e-7;             // prob's norm and kl's logarithm (PKT's constant)
  bool squared = false;          // distance: keep the squared distance (RKD's `squared`)
  double gamma = 0.4;            // corr: the RBF kernel's gamma
  int64_t order = 2;             // corr: the Taylor expansion's order P
};

// Throws naming the problem and the choices when a name or a constant is not valid.
void check_relation_options(const RelationOptions& o, const std::string& method);
// The reduction in effect: o.reduction, or "sum" for frobenius and "mean" for the other d.
std::string relation_reduction(const RelationOptions& o);

// The relation functions on e (B, D). `side` ("s" or "t") and `prefix` name the intermediates
// shown ("<prefix>dist_t", "<prefix>psi_t", ...).
Tensor pairwise_distance(const Tensor& e, bool squared, double eps = 1e-12);  // (B, B), zero diagonal
Tensor psi_distance(const Tensor& e, bool squared, const ExplainFn& explain = {}, const std::string& prefix = "",
                    const std::string& side = "s");  // (B, B)
Tensor psi_angle(const Tensor& e, const ExplainFn& explain = {}, const std::string& prefix = "",
                 const std::string& side = "s");  // (B, B, B)
Tensor psi_gram(const Tensor& e, const ExplainFn& explain = {}, const std::string& prefix = "",
                const std::string& side = "s");  // (B, B)
Tensor psi_prob(const Tensor& e, double eps, const ExplainFn& explain = {}, const std::string& prefix = "",
                const std::string& side = "s");  // (B, B)
Tensor psi_corr(const Tensor& e, double gamma, int64_t order, const ExplainFn& explain = {},
                const std::string& prefix = "", const std::string& side = "s");  // (B, B)

// psi by name on a tap f (B, ...), flattened to (B, D) first.
Tensor relation_psi(const Tensor& f, const RelationOptions& o, const ExplainFn& explain = {},
                    const std::string& prefix = "", const std::string& side = "s");
// d by name between psi_s and psi_t (same shape), reduced: () .
Tensor relation_d(const Tensor& psi_s, const Tensor& psi_t, const RelationOptions& o);
// L = sum_ij d(psi_s, psi_t): fs (B, ...) the student's tap, ft (B, ...) the teacher's (detached
// here). Shows <prefix>psi_t (and its steps), <prefix>psi_s (and its steps), <prefix>L.
Tensor relation_loss(const Tensor& fs, const Tensor& ft, const RelationOptions& o, const ExplainFn& explain = {},
                     const std::string& prefix = "");

// ---- the `relation` method

struct RelationMethodOptions {
  RelationOptions rel;
  std::string tap = "pooled";
  std::string teacher_tap = "pooled";
  double weight = 1.0;
  double ce_weight = 1.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    const RelationOptions& r = o.rel;  // for the in-use conditions of the last five
    f("psi", o.rel.psi, "the relation: distance, angle, gram, prob or corr");
    f("d", o.rel.d, "the distance between relations: smooth_l1, huber, mse, frobenius or kl");
    f("reduction", o.rel.reduction, "mean, sum or batchmean; when not given: sum for d=frobenius, mean for the others");
    f("tap", o.tap, "the student's tap (pooled, f0..fN, pre1..preN)");
    f("teacher_tap", o.teacher_tap, "the teacher's tap; when not given: tap");
    f("weight", o.weight, "the weight of L_rel");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("beta", o.rel.beta, "d=smooth_l1, huber: the threshold", r.d == "smooth_l1" || r.d == "huber");
    f("eps", o.rel.eps, "psi=prob, d=kl: the constant in the norms and the logarithm", r.psi == "prob" || r.d == "kl");
    f("squared", o.rel.squared, "psi=distance: squared distances", r.psi == "distance");
    f("gamma", o.rel.gamma, "psi=corr: the RBF kernel's gamma", r.psi == "corr");
    f("order", o.rel.order, "psi=corr: the order of the kernel's Taylor expansion", r.psi == "corr");
  }
};

// zs (B, K), labels (B), fs / ft the taps. Part <psi> (= weight * L_rel); the CE is added by
// add_cross_entropy.
LossBreakdown relation_method_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs, const Tensor& ft,
                                   const RelationMethodOptions& opt, const ExplainFn& explain = {});

class RelationDistiller : public Distiller {
 public:
  explicit RelationDistiller(const RelationMethodOptions& opt) : opt_(opt) {}
  std::string name() const override { return "relation"; }
  std::string type_name() const override { return "Relation"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const RelationMethodOptions& options() const { return opt_; }

 private:
  RelationMethodOptions opt_;
};

std::shared_ptr<Distiller> make_relation_distiller(const Params& params, const DistillerContext& ctx);

// Shared by the relation methods: the tap of `side` flattened to (B, D), with checks that it has
// the batch size of the logits and at least 2 samples (a relation needs pairs).
Tensor relation_features(const Tensor& f, int64_t B, const std::string& method, const std::string& side);

}  // namespace kd::distill
