// relation.cpp: L = sum_ij d(psi_s(f_i, f_j), psi_t(f_i, f_j)), the relation family's one
// mechanism (Yang et al. 2023), and the `relation` method. The equations are in relation.h.
#include "distill/relation/relation.h"

#include <algorithm>
#include <cmath>

#include "engine/ops.h"

namespace kd::distill {

namespace {

const std::vector<std::string> kPsiNames{"distance", "angle", "gram", "prob", "corr"};
const std::vector<std::string> kDNames{"smooth_l1", "huber", "mse", "frobenius", "kl"};
const std::vector<std::string> kReductions{"mean", "sum", "batchmean"};

bool one_of(const std::string& s, const std::vector<std::string>& names) {
  return std::find(names.begin(), names.end(), s) != names.end();
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// (B, B) float mask: 1 off the diagonal, 0 on it.
Tensor off_diagonal(int64_t B) {
  std::vector<float> m((size_t)(B * B), 1.0f);
  for (int64_t i = 0; i < B; ++i) m[(size_t)(i * B + i)] = 0.0f;
  return from_vector(m, {B, B});
}

void check_pairs(const Tensor& e, const char* psi) {
  KD_CHECK(e.defined() && e.dim() == 2, "relation: psi={} takes features flattened to (B, D), got {}", psi,
           e.defined() ? shape_str(e.shape()) : std::string("an undefined tensor"));
  KD_CHECK(e.size(0) >= 2, "relation: psi={} relates samples to each other and needs a batch of at least 2, got B = {}",
           psi, e.size(0));
}

}  // namespace

void check_relation_options(const RelationOptions& o, const std::string& method) {
  KD_CHECK(one_of(o.psi, kPsiNames), "{}: psi={} is not a relation; choose one of: {}", method, o.psi, joined(kPsiNames));
  KD_CHECK(one_of(o.d, kDNames), "{}: d={} is not a distance; choose one of: {}", method, o.d, joined(kDNames));
  KD_CHECK(o.reduction.empty() || one_of(o.reduction, kReductions), "{}: reduction={} is not a reduction; choose one of: {}",
           method, o.reduction, joined(kReductions));
  KD_CHECK(o.d != "kl" || o.psi == "prob",
           "{}: d=kl compares probability relations (rows that sum to 1); use it with psi=prob, or choose d=mse / "
           "smooth_l1 for psi={}",
           method, o.psi);
  KD_CHECK(o.beta > 0, "{}: beta must be > 0 (the smooth_l1 / huber threshold), got beta={}", method, o.beta);
  KD_CHECK(o.eps > 0, "{}: eps must be > 0, got eps={}", method, o.eps);
  KD_CHECK(o.gamma > 0, "{}: gamma must be > 0 (the RBF kernel's width), got gamma={}", method, o.gamma);
  KD_CHECK(o.order >= 0 && o.order <= 20, "{}: order={} is not a Taylor order; use 0..20 (the CC paper uses 2)", method,
           o.order);
}

std::string relation_reduction(const RelationOptions& o) {
  if (!o.reduction.empty()) return o.reduction;
  return o.d == "frobenius" ? "sum" : "mean";
}

// ------------------------------------------------------------------------------- psi

Tensor pairwise_distance(const Tensor& e, bool squared, double eps) {
  check_pairs(e, "distance");
  const int64_t B = e.size(0);
  Tensor e_square = sum(mul(e, e), {1});                    // (B)     ||e_i||^2
  Tensor prod = matmul(e, e.t());                           // (B, B)  e_i . e_j
  Tensor sq = sub(add(e_square.unsqueeze(1), e_square.unsqueeze(0)), mul(prod, 2.0));  // (B, B)
  Tensor res = clamp(sq, eps, std::nullopt);                // (B, B)  >= eps, so sqrt stays finite
  if (!squared) res = sqrt(res);
  return mul(res, off_diagonal(B));                         // (B, B)  diagonal 0 (no gradient there)
}

Tensor psi_distance(const Tensor& e, bool squared, const ExplainFn& explain, const std::string& prefix,
                    const std::string& side) {
  Tensor dist = pairwise_distance(e, squared);  // (B, B)
  show_step(explain, prefix + "dist_" + side, dist);
  // mu = mean of the positive entries (RKD: d[d > 0].mean()); the diagonal is the only 0 entry
  // unless two samples coincide, where the clamp leaves sqrt(1e-12) > 0 as RKD's code does.
  const double count = sum(gt(dist.detach(), 0.0).to(DType::f32)).item();
  KD_CHECK(count > 0, "relation: psi=distance: every pairwise distance is 0; the batch needs 2 different samples");
  Tensor mu = div(sum(dist), count);  // ()
  show_step(explain, prefix + "mu_" + side, mu);
  return div(dist, mu);  // (B, B)
}

Tensor psi_angle(const Tensor& e, const ExplainFn& explain, const std::string& prefix, const std::string& side) {
  check_pairs(e, "angle");
  const int64_t B = e.size(0);
  Tensor diff = sub(e.unsqueeze(0), e.unsqueeze(1));  // (B, B, D)  diff[i][j] = e_j - e_i
  Tensor unit = normalize(diff, 2.0, 2, 1e-12);       // (B, B, D)  e_i - e_i stays the zero vector
  // The zero vectors at j = i carry no gradient in RKD's code either (their upstream gradient is
  // 0 there); masking makes that exact instead of 0 / 1e-12.
  unit = mul(unit, off_diagonal(B).unsqueeze(2));
  show_step(explain, prefix + "unit_" + side, unit);
  return bmm(unit, unit.transpose(1, 2));  // (B, B, B)  [i][j][k] = <unit_ij, unit_ik>
}

Tensor psi_gram(const Tensor& e, const ExplainFn& explain, const std::string& prefix, const std::string& side) {
  check_pairs(e, "gram");
  Tensor G = matmul(e, e.t());  // (B, B)  Q Q^T
  show_step(explain, prefix + "gram_" + side, G);
  return normalize(G, 2.0, 1, 1e-12);  // (B, B)  each row of unit L2 norm
}

Tensor psi_prob(const Tensor& e, double eps, const ExplainFn& explain, const std::string& prefix,
                const std::string& side) {
  check_pairs(e, "prob");
  Tensor n = sqrt(sum(mul(e, e), {1}, /*keepdim=*/true));  // (B, 1)
  Tensor x = div(e, add(n, eps));                          // (B, D)  x / (||x|| + eps)
  Tensor cosine = matmul(x, x.t());                        // (B, B)
  show_step(explain, prefix + "cos_" + side, cosine);
  Tensor kernel = div(add(cosine, 1.0), 2.0);              // (B, B)  in [0, 1]
  return div(kernel, sum(kernel, {1}, /*keepdim=*/true));  // (B, B)  rows sum to 1
}

Tensor psi_corr(const Tensor& e, double gamma, int64_t order, const ExplainFn& explain, const std::string& prefix,
                const std::string& side) {
  check_pairs(e, "corr");
  Tensor x = normalize(e, 2.0, 1, 1e-12);  // (B, D) unit rows
  Tensor c = matmul(x, x.t());             // (B, B) x_i . x_j
  show_step(explain, prefix + "cos_" + side, c);
  // exp(-gamma ||x_i - x_j||^2) = e^{-2 gamma} e^{2 gamma x_i.x_j} ~ sum_p e^{-2 gamma} (2 gamma)^p / p! (x_i.x_j)^p
  Tensor k = full(c.shape(), std::exp(-2.0 * gamma));  // p = 0
  double coef = std::exp(-2.0 * gamma);
  Tensor power = ones(c.shape());
  for (int64_t p = 1; p <= order; ++p) {
    coef *= 2.0 * gamma / (double)p;
    power = mul(power, c);  // (x_i . x_j)^p
    k = add(k, mul(power, coef));
  }
  return k;  // (B, B)
}

Tensor relation_psi(const Tensor& f, const RelationOptions& o, const ExplainFn& explain, const std::string& prefix,
                    const std::string& side) {
  KD_CHECK(f.defined() && f.dim() >= 2, "relation: psi={} takes a tap (B, ...), got {}", o.psi,
           f.defined() ? shape_str(f.shape()) : std::string("an undefined tensor"));
  Tensor e = f.reshape({f.size(0), -1});  // (B, D)
  if (o.psi == "distance") return psi_distance(e, o.squared, explain, prefix, side);
  if (o.psi == "angle") return psi_angle(e, explain, prefix, side);
  if (o.psi == "gram") return psi_gram(e, explain, prefix, side);
  if (o.psi == "prob") return psi_prob(e, o.eps, explain, prefix, side);
  if (o.psi == "corr") return psi_corr(e, o.gamma, o.order, explain, prefix, side);
  check_relation_options(o, "relation");  // throws naming the choices
  return Tensor();
}

// ------------------------------------------------------------------------------- d

Tensor relation_d(const Tensor& psi_s, const Tensor& psi_t, const RelationOptions& o) {
  KD_CHECK(psi_s.shape() == psi_t.shape(),
           "relation: the student's relation {} and the teacher's {} differ in shape; both networks must see the same "
           "batch",
           shape_str(psi_s.shape()), shape_str(psi_t.shape()));
  Tensor entries;  // the shape of psi: d per entry
  if (o.d == "smooth_l1") entries = smooth_l1_loss(psi_s, psi_t, Reduction::None, o.beta);
  else if (o.d == "huber") entries = huber_loss(psi_s, psi_t, Reduction::None, o.beta);
  else if (o.d == "mse" || o.d == "frobenius") entries = pow(sub(psi_s, psi_t), 2.0);
  else if (o.d == "kl") entries = mul(psi_t, log(div(add(psi_t, o.eps), add(psi_s, o.eps))));
  else check_relation_options(o, "relation");  // throws naming the choices
  const std::string r = relation_reduction(o);
  if (r == "sum") return sum(entries);
  if (r == "batchmean") return div(sum(entries), (double)psi_s.size(0));
  return mean(entries);
}

Tensor relation_loss(const Tensor& fs, const Tensor& ft_in, const RelationOptions& o, const ExplainFn& explain,
                     const std::string& prefix) {
  KD_CHECK(fs.defined() && ft_in.defined() && fs.size(0) == ft_in.size(0),
           "relation: the student's features {} and the teacher's {} must both be given, with the same batch size",
           fs.defined() ? shape_str(fs.shape()) : std::string("(undefined)"),
           ft_in.defined() ? shape_str(ft_in.shape()) : std::string("(undefined)"));
  const Tensor ft = ft_in.detach();  // the teacher's relation is a constant
  Tensor psi_t = relation_psi(ft, o, explain, prefix, "t");
  show_step(explain, prefix + "psi_t", psi_t);
  Tensor psi_s = relation_psi(fs, o, explain, prefix, "s");
  show_step(explain, prefix + "psi_s", psi_s);
  Tensor l = relation_d(psi_s, psi_t, o);  // ()
  show_step(explain, prefix + "L", l);
  return l;
}

// ------------------------------------------------------------------------------- the method

Tensor relation_features(const Tensor& f, int64_t B, const std::string& method, const std::string& side) {
  KD_CHECK(f.defined() && f.dim() >= 2 && f.size(0) == B,
           "{}: the {} features {} must be (B, ...) with the batch size B = {} of the logits", method, side,
           f.defined() ? shape_str(f.shape()) : std::string("(undefined)"), B);
  KD_CHECK(B >= 2, "{}: a relation compares samples with each other; it needs a batch of at least 2, got B = {}",
           method, B);
  return f.reshape({B, -1});  // (B, D)
}

LossBreakdown relation_method_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs_in, const Tensor& ft_in,
                                   const RelationMethodOptions& opt, const ExplainFn& explain) {
  check_logits_labels("relation", zs, Tensor(), labels);
  check_relation_options(opt.rel, "relation");
  const int64_t B = zs.size(0);
  Tensor fs = relation_features(fs_in, B, "relation", "student");  // (B, Ds)
  Tensor ft = relation_features(ft_in, B, "relation", "teacher");  // (B, Dt)
  Tensor l_rel = relation_loss(fs, ft, opt.rel, explain, opt.rel.psi + ".");
  Tensor rel_part = mul(l_rel, opt.weight);  // weight * L_rel
  LossBreakdown out;
  out.total = rel_part;
  out.parts = {{opt.rel.psi, rel_part}};
  return out;  // distill_loss adds ce_weight * CE(zs, y)
}

LossBreakdown RelationDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                      const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.tap, "relation", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_tap, "relation", "teacher");
  return relation_method_loss(student.logits, batch.labels, fs, ft, opt_, explain);
}

Params RelationDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_relation_distiller(const Params& params, const DistillerContext&) {
  RelationMethodOptions o = parse_options<RelationMethodOptions>("relation", params);
  if (!params.count("teacher_tap")) o.teacher_tap = o.tap;
  check_relation_options(o.rel, "relation");
  check_tap_name(o.tap, "relation");
  check_tap_name(o.teacher_tap, "relation");
  // a constant that the chosen psi and d do not read is a mistake: say which ones read it
  auto unused = [&](const char* key, bool read, const char* readers) {
    KD_CHECK(!params.count(key) || read, "relation: {} is read by {} only, not by psi={} d={}; remove it", key, readers,
             o.rel.psi, o.rel.d);
  };
  unused("beta", o.rel.d == "smooth_l1" || o.rel.d == "huber", "d=smooth_l1 and d=huber");
  unused("eps", o.rel.psi == "prob" || o.rel.d == "kl", "psi=prob and d=kl");
  unused("squared", o.rel.psi == "distance", "psi=distance");
  unused("gamma", o.rel.psi == "corr", "psi=corr");
  unused("order", o.rel.psi == "corr", "psi=corr");
  o.rel.reduction = relation_reduction(o.rel);
  return std::make_shared<RelationDistiller>(o);
}

}  // namespace kd::distill
