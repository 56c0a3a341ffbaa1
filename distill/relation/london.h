// london.h: LONDON, Lipschitz continuity guided knowledge distillation.
//
// Paper: Y. Shang, B. Duan, Z. Zong, L. Nie, Y. Yan, "Lipschitz Continuity Guided Knowledge
//        Distillation", ICCV 2021 (arXiv 2108.12905). Official code: 42Shawn/LONDON (released as
//        LONDON.zip in the repository's history, commit 72265a1; deleted later), built on the
//        OFD codebase (Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019):
//        CIFAR-100/distiller_london.py and train_with_distillation_b.py.
//
// A network's Lipschitz constant bounds how much its output can move when its input moves; for
// a composition of layers it is bounded by the product of the layers' spectral norms. LONDON
// transfers a proxy of it between consecutive stages: the "transmitting matrix" of stages i and
// i+1 (the FSP matrix of Yim et al. 2017) and its largest singular value.
//     a = F_i, b = F_{i+1}                 pre-ReLU maps; the larger one average-pooled to the
//                                          smaller one's size (B, C, H, W)
//     G_i = a b^T / HW                     (B, C_i, C_{i+1})   a, b flattened to (B, C, HW)
//     sigma(G) = ||G||_2 = sqrt(lambda_max(G G^T)),  by power iteration on K = G G^T:
//         v_0 ~ U[0, 1)^{C_i},  m_k = K v_{k-1},  v_k = m_k / ||m_k||     (k = 1..10)
//         sigma = sqrt(||m_10|| / ||v_10||)
//     L_london = sum_{i=0}^{n-2} (1 / 2^(n-i-1)) * mean_b (sigma(G_i^s)_b - sigma(G_i^t)_b)^2
// with n taps (i counted from 0: the pair nearest the input weighs least, 1/2^(n-1)). The loss is
// used on top of OFD's feature loss, as the official code does (the "base" feature loss):
//     c_i(f)   = BN(conv1x1(f))                 student map -> the teacher's channels (connector)
//     L_ofd    = (1/B) sum_i (1 / 2^(n-i-1)) sum_{b,c,h,w} (c_i(f_s) - max(f_t, m_c))^2
//                                              * [c_i(f_s) > max(f_t, m_c)  or  f_t > 0]
//     L        = w_ce * CE(zs, y) + w_base * L_ofd + w_london * L_london
//                (w_ce * CE added by distill_loss, distiller.h)
// where m_c is OFD's margin, E[x | x < 0] of the teacher's pre-ReLU response x ~ N(mu_c, s_c^2):
//     m_c = mu_c - s_c phi(mu_c / s_c) / Phi(-mu_c / s_c)     (-3 s_c when Phi(-mu_c/s_c) <= 0.001)
//
// Official-code semantics reproduced:
//   - taps: the pre-ReLU output of each stage (extract_feature(preReLU=True)): pre1..pren here;
//   - connectors: Conv2d(Cs, Ct, 1, bias=False), weight ~ N(0, 2 / Ct), + BatchNorm2d(Ct)
//     (weight 1, bias 0), trained with the student (batch statistics in training);
//   - the student's pair (i, i+1) is (connector_i(f_i), raw f_{i+1}): the official loop connects
//     s_feats[i] at iteration i and s_feats[i+1] only at the next one (connect_both=true connects
//     both ends);
//   - the larger map of a pair pooled to the smaller (F.adaptive_avg_pool2d), G divided by HW;
//   - 10 power iterations from torch.rand, value sqrt(n / ||v||), F.mse_loss over the batch;
//   - pair and OFD layer weights 1 / 2^(n - i - 1);
//   - train_with_distillation_b.py: loss = CE + loss_distill.sum() / B / 1000
//                                            + alpha * loss_spectral / 200, alpha = 0.2,
//     i.e. w_base = 0.001 (with the 1/B above) and w_london = 0.001.
// Where we differ, on purpose:
//   - the released top_eigenvalue runs under torch.no_grad(), so its LONDON term carries no
//     gradient at all (the published numbers came from CE + OFD). ../shared/METHODS.md asks for
//     the proxy differentiated through the unrolled loop: power_grad=true (default) does that;
//     power_grad=false reproduces the released code (the term is then logged only);
//   - OFD reads mu_c and s_c from the teacher's BatchNorm before the ReLU (bias and |weight|). In
//     the CIFAR ResNets here the pre-ReLU map is BN + shortcut, not a BN output, so mu_c and s_c
//     are measured per channel on the teacher's pre-ReLU tap of the sample batch
//     (DistillerContext::teacher_sample) and kept as buffers margin1..marginn (checkpointed);
//   - v_0 comes from the distiller's seeded generator (not the global torch.rand);
//   - base= offers other feature losses: "at" (mdistiller's AT on the raw student taps, summed
//     over stages, weight 1000), "mse" (a FitNets hint MSE(c_i(f_s), f_t) per stage, weight 100)
//     and "none" (CE + LONDON only). The 1/2^(n-i-1) layer weights apply to OFD only.
//
// Parameters (--set): the option table LondonOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method london`).
// Loss parts (after distill_loss's "ce"): "feature" (the base term, 0 for base=none), "london".
// Helpers: "connectors.<i>" (conv + bn per tap, trained with the student), buffers margin1..n.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "distill/feature/common.h"
#include "engine/generator.h"

namespace kd::distill {

struct LondonOptions {
  std::vector<std::string> layers{"pre1", "pre2", "pre3"};
  std::vector<std::string> teacher_layers{"pre1", "pre2", "pre3"};
  std::string base = "ofd";
  double base_weight = 1e-3;    // OFD: loss_distill.sum() / B / 1000
  double london_weight = 1e-3;  // alpha / 200 with alpha = 0.2
  double ce_weight = 1.0;
  int64_t power_iters = 10;
  bool power_grad = true;
  double pair_decay = 2.0;
  bool connect_both = false;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("layers", o.layers, "the student's taps, in order (consecutive pairs)");
    f("teacher_layers", o.teacher_layers, "the teacher's taps, one per student tap; when not given: layers");
    f("base", o.base, "the feature loss LONDON is added to: ofd, at, mse or none");
    f("base_weight", o.base_weight, "the weight of the base loss; when not given: base's own (ofd 0.001, at 1000, mse 100)");
    f("london_weight", o.london_weight, "the weight of L_london (alpha / 200 with alpha = 0.2)");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("power_iters", o.power_iters, "power iterations for each spectral norm");
    f("power_grad", o.power_grad, "differentiate through the unrolled power iteration");
    f("pair_decay", o.pair_decay, "pair i is weighted 1 / pair_decay^(n - i - 1)");
    f("connect_both", o.connect_both, "connect both maps of the student's pair (released: only the first)");
  }
};

// The default base_weight of a base feature loss (0.001 ofd, 1000 at, 100 mse, 0 none).
double london_default_base_weight(const std::string& base);

// G = a b^T / HW: a (B, Ca, Ha, Wa), b (B, Cb, Hb, Wb) -> (B, Ca, Cb); the larger map (by height)
// is adaptive-average-pooled to the smaller one's (H, W) first.
Tensor transmitting_matrix(const Tensor& a, const Tensor& b);

// sigma(G) (B) of G (B, m, k) by `iters` power iterations on K = G G^T from v0 (B, m, 1), each v0
// column non-zero. differentiable=false runs under no-grad (the released code): the result then
// has no gradient.
Tensor lipschitz_proxy(const Tensor& G, const Tensor& v0, int64_t iters, bool differentiable = true);

// OFD's margin E[x | x < 0] of x ~ N(mu, s^2) (get_margin_from_BN), or -3|s| when P(x < 0) <= 0.001.
double ofd_margin(double mu, double s);
// The margins (C) of a teacher's pre-ReLU map f (B, C, H, W): mu_c, s_c measured over (B, H, W)
// (population standard deviation), then ofd_margin.
Tensor ofd_margins_of(const Tensor& f);
// OFD's distillation_loss: s, t (B, C, H, W) (t detached here), margin (C) -> () the sum of
// (s - max(t, m))^2 where s > max(t, m) or t > 0.
Tensor ofd_distillation_loss(const Tensor& s, const Tensor& t, const Tensor& margin);

// The power-iteration starts of one batch: one (B, C_i^t, 1) per pair, for each side.
struct PowerStarts {
  std::vector<Tensor> student, teacher;
};

// zs (B, K), labels (B); fs[i] (B, Cs_i, H_i, W_i) the student's raw taps, connected[i]
// (B, Ct_i, H_i, W_i) = connector_i(fs[i]), ft[i] (B, Ct_i, H_i, W_i) the teacher's (detached
// here); margins[i] (Ct_i) (read by base=ofd). Intermediates shown: per pair i "pair<i>.G_s",
// "pair<i>.G_t", "pair<i>.sigma_s", "pair<i>.sigma_t", "pair<i>.L"; then L_london, L_feature.
// The method's terms only (add_cross_entropy adds the CE).
LossBreakdown london_loss(const Tensor& zs, const Tensor& labels, const std::vector<Tensor>& fs,
                          const std::vector<Tensor>& connected, const std::vector<Tensor>& ft,
                          const std::vector<Tensor>& margins, const PowerStarts& starts, const LondonOptions& opt,
                          const ExplainFn& explain = {});

// The 1x1 conv + BN connector of the official code (build_feature_connector).
class LondonConnector : public nn::Layer {
 public:
  LondonConnector(int64_t s_channels, int64_t t_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (B, Cs, H, W) -> (B, Ct, H, W)
  std::string type_name() const override { return "LondonConnector"; }
  std::shared_ptr<nn::Conv2d> conv;   // "conv", no bias
  std::shared_ptr<nn::BatchNorm> bn;  // "bn"
};

class LondonDistiller : public Distiller {
 public:
  // s_shapes, t_shapes: (B, C, H, W) of each tap (B ignored); margins (Ct_i) per tap.
  LondonDistiller(const LondonOptions& opt, const std::vector<Shape>& s_shapes, const std::vector<Shape>& t_shapes,
                  const std::vector<Tensor>& margins, uint64_t seed);
  std::string name() const override { return "london"; }
  std::string type_name() const override { return "LONDON"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  // Draws the power-iteration starts from the distiller's generator, then loss_with_starts.
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  LossBreakdown loss_with_starts(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch,
                                 const PowerStarts& starts);
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const LondonOptions& options() const { return opt_; }
  LondonConnector& connector(size_t i) { return *connectors_.at(i); }
  std::vector<Tensor> margins() const;

 private:
  LondonOptions opt_;
  std::vector<std::shared_ptr<LondonConnector>> connectors_;
  Generator gen_;
};

// Reads the parameters; sizes the connectors and measures the margins from ctx.student_sample /
// ctx.teacher_sample.
std::shared_ptr<Distiller> make_london_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
