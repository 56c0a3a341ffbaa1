// hcd.h: HCD, Heterogeneous Complementary Distillation.
//
// Paper: L. Xu, H. Zheng, L. Wang, L. Xu, J. Cheng, "Heterogeneous Complementary Distillation",
//        AAAI 2026 (arXiv 2511.10942). No official code was available to check against; the
//        paper's text and ../shared/METHODS.md are the specification. Base setup: OFA-KD (Hao et
//        al., NeurIPS 2023; Hao840/OFAKD, distillers/ofa.py and utils.py SepConv): a projector
//        head on each student stage.
//
// Made for a teacher and a student of different families (a ViT teacher, a CNN student). For
// each chosen student stage i (taps f1, f2, f3 by default) and the teacher's penultimate feature
// f_t (its `pooled` tap, (B, Ct): a ViT's normed class token, a CNN's pooled map):
//     f_s^i      = Flatten(AdaptiveAvgPool_1(P_i(F_s^i)))                         (B, D)
//                  P_i: OFA's projector: one SepConv (stride 2) per halving of the map down to
//                  the deepest stage's size, the last one to D channels; a 1x1 conv when the
//                  stage already has that size. D = max(channels of the deepest tap, Ct).
//     f_cat^i    = [f_s^i ; f_t]                                                   (B, D + Ct)
//     z^i        = CFM_i(f_cat^i)  the Complementary Feature Mapper: Linear - ReLU - Linear
//                  (cfm=mlp, hidden Ct) or one Linear (cfm=fc)                     (B, n K)
//     z_j^i      = columns [j K, (j+1) K) of z^i, j = 0..n-1: the n sub-logits     (B, n, K)
//     zhat_j^i   = z_j^i + lambda_t z_t    the sub-logit fused with the teacher logits
// Sub-logit Decoupled Distillation (SDD), per stage, averaged over the n sub-logits:
//     L_sce^i    = (1/n) sum_j CE(zhat_j^i, y)
//     L_skd^i    = (1/n) sum_j T^2 KL(softmax(zhat_j^i / T) || softmax(z_s / T))   (sub_kd=student)
//                  the student's logits z_s learn from every fused sub-logit; or
//                = (1/n) sum_j T^2 KL(softmax(z_t / T) || softmax(zhat_j^i / T))   (sub_kd=teacher)
//                  every fused sub-logit learns from the teacher, as OFA's branch heads do
// Orthogonality Loss (OL), per stage, on the sub-logits z_j^i (ol_on=sub) or zhat_j^i (fused):
//     u_j        = the sub-logit with its target-class entry removed, L2-normalised (K - 1 entries)
//     S[b, i, j] = <u_i, u_j>           the cosine matrix of the n sub-logits of sample b (B, n, n)
//     L_ol^i     = mean over b and i != j of relu(S[b, i, j] - theta)^2          (0 when n = 1)
// Total (stages summed, or averaged with stage_reduce=mean):
//     L = w_ce CE(z_s, y) + w_kd T^2 KL(p_t || p_s) + w_sce sum_i L_sce^i + w_skd sum_i L_skd^i
//         + w_ol sum_i L_ol^i         (w_ce CE(z_s, y), with label_smoothing, added by distill_loss)
//
// The masking order of OL. "Remove the target class, then normalise" (ol_mask=exclude, the
// default) is the same as zeroing the target entry before F.normalize: S is the true cosine of
// the non-target parts. The trap: filling the target entry with a large negative number
// (-1e6) before the normalisation makes every u_j equal to -e_y, so S = 1 everywhere, L_ol =
// (1 - theta)^2 for any input and its gradient is 0 (tests/test_hcd.cpp shows it). ol_mask=after
// normalises the whole K-vector first and then zeroes the target entry (METHODS.md's "mask after
// normalisation" read literally; S is then not exactly a cosine).
//
// Choices where the paper is silent or could not be checked (each a parameter; docs/methods/hcd.md
// gives the reasons): the KD direction of SDD (sub_kd), no stop-gradient on the fused sub-logits
// (detach_fused=false), the mean over the n sub-logits and the sum over stages (stage_reduce),
// OL on the unfused sub-logits (ol_on), the CFM's hidden width, D, the weights (all 1) and T = 1
// (OFA's defaults), label smoothing on the student's CE only.
//
// Parameters (--set): the option table HcdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method hcd`).
// Loss parts (after distill_loss's "ce"): "kd", "sub_ce", "sub_kd", "ol" (each weighted; they add
// up to the total).
// Helpers: per stage the projector "proj_<tap>" and the mapper "cfm_<tap>", trained and
// checkpointed with the student. Teacher inputs: logits and `pooled` (the teacher cache serves both).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "distill/feature/common.h"

namespace kd::distill {

struct HcdOptions {
  std::vector<std::string> layers = {"f1", "f2", "f3"};
  int64_t k = 4;
  double T = 1.0;
  double ce_weight = 1.0;
  double kd_weight = 1.0;
  double sub_ce_weight = 1.0;
  double sub_kd_weight = 1.0;
  double ol_weight = 1.0;
  double margin = 0.5;
  std::string ol_mask = "exclude";
  std::string ol_on = "sub";
  std::string sub_kd = "student";
  bool detach_fused = false;
  double fuse_weight = 1.0;
  std::string stage_reduce = "sum";
  std::string cfm = "mlp";
  int64_t cfm_hidden = 0;
  int64_t proj_dim = 0;
  double label_smoothing = 0.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("layers", o.layers, "the student stages with a branch");
    f("k", o.k, "n, the number of sub-logits per stage");
    f("T", o.T, "temperature of both KD terms");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("kd_weight", o.kd_weight, "w_kd: KD of the student's logits from the teacher's");
    f("sub_ce_weight", o.sub_ce_weight, "w_sce: CE of the fused sub-logits");
    f("sub_kd_weight", o.sub_kd_weight, "w_skd: KD between the student's logits and the fused sub-logits");
    f("ol_weight", o.ol_weight, "w_ol: the orthogonality loss");
    f("margin", o.margin, "theta, the cosine below which sub-logits are not penalised");
    f("ol_mask", o.ol_mask, "exclude: drop the target entry, then normalise; after: normalise, then zero it");
    f("ol_on", o.ol_on, "sub: OL on the sub-logits z_j; fused: on zhat_j");
    f("sub_kd", o.sub_kd, "student: z_s learns from each zhat_j; teacher: each zhat_j learns from z_t");
    f("detach_fused", o.detach_fused, "sub_kd=student: no KD gradient into zhat_j (and the branch)");
    f("fuse_weight", o.fuse_weight, "lambda_t in zhat_j = z_j + lambda_t z_t");
    f("stage_reduce", o.stage_reduce, "sum (OFA sums its stages) or mean over the stages");
    f("cfm", o.cfm, "mlp: Linear - ReLU - Linear; fc: one Linear");
    f("cfm_hidden", o.cfm_hidden, "the MLP's hidden width; 0: the teacher's feature width Ct");
    f("proj_dim", o.proj_dim, "D; 0: max(channels of the deepest student tap, Ct)");
    f("label_smoothing", o.label_smoothing, "of CE(zs, y) only (OFA's CIFAR config uses 0.1)");
  }
};

// Rejects values out of range and unknown mode names, naming the fix.
void check_hcd_options(const HcdOptions& o);

// z (B, n K) -> (B, n, K): sub-logit j is columns [j K, (j+1) K) of the shared logits.
Tensor split_sub_logits(const Tensor& shared, int64_t n);
// zhat_j = z_j + lambda_t z_t: z_sub (B, n, K), zt (B, K) -> (B, n, K).
Tensor fuse_sub_logits(const Tensor& z_sub, const Tensor& zt, double lambda_t);
// The cosine matrix S (B, n, n) of the n sub-logits of each sample, the target class of each
// sample excluded (mask "exclude") or zeroed after normalising the whole vector ("after").
Tensor sub_logit_cosines(const Tensor& z_sub, const Tensor& labels, const std::string& mask = "exclude");
// L_ol = mean over b and i != j of relu(S[b, i, j] - theta)^2; 0 (a constant) when n = 1.
Tensor orthogonality_loss(const Tensor& S, double theta);

// The loss given each stage's shared logits z^i (B, n K) (the CFM outputs), the student's logits
// zs (B, K), the teacher's zt (B, K) (detached here) and labels (B). `stages` names the stages in
// --explain ("f1", ...). Intermediates shown per stage: <s>.z_sub, <s>.z_hat, <s>.L_sub_ce,
// <s>.L_sub_kd, <s>.S, <s>.L_ol; then L_kd. The method's terms only (add_cross_entropy adds the
// CE of zs for the whole L).
LossBreakdown hcd_loss(const Tensor& zs, const Tensor& zt, const Tensor& labels, const std::vector<Tensor>& shared,
                       const std::vector<std::string>& stages, const HcdOptions& opt, const ExplainFn& explain = {});

// OFA's SepConv (distillers/utils.py): depthwise 3x3 (stride 2) - pointwise 1x1 - BN - ReLU -
// depthwise 3x3 - pointwise 1x1 (to `out`) - BN - ReLU, every conv without bias; children "op.0".."op.7".
class SepConv : public nn::Layer {
 public:
  SepConv(int64_t in, int64_t out, Generator& gen);
  Tensor forward(const Tensor& x) override { return op->forward(x); }  // (B, in, H, W) -> (B, out, ceil(H/2), ..)
  std::string type_name() const override { return "SepConv"; }
  std::shared_ptr<nn::Sequential> op;
};

// The projector P_i followed by the global pooling: (B, C, H, W) -> (B, D). Children "0".. as
// a torch Sequential: the SepConvs (or the 1x1 conv), then the pooling and the flattening.
// `halvings` stride-2 SepConvs (channels doubling, the last to D); a 1x1 conv with bias when 0.
std::shared_ptr<nn::Sequential> make_hcd_projector(int64_t in_channels, int64_t halvings, int64_t D, Generator& gen);
// How many stride-2 steps (ceil(H / 2) each) take a map of height H to at most `target`.
int64_t hcd_halvings(int64_t H, int64_t target);
// The CFM: (B, D + Ct) -> (B, n K). hidden = 0: one Linear; else Linear - ReLU - Linear.
std::shared_ptr<nn::Sequential> make_hcd_cfm(int64_t in_features, int64_t hidden, int64_t out_features, Generator& gen);

class HcdDistiller : public Distiller {
 public:
  // s_shapes: (B, C, H, W) of each student tap in opt.layers; teacher_dim: Ct (the width of the
  // teacher's pooled feature); K: the classes. Helper weights are drawn from `seed` (OFA's
  // init: conv kaiming-normal fan-out, BN 1 / 0, Linear trunc-normal std 0.02 with bias 0).
  HcdDistiller(const HcdOptions& opt, const std::vector<Shape>& s_shapes, int64_t teacher_dim, int64_t K,
               uint64_t seed);
  std::string name() const override { return "hcd"; }
  std::string type_name() const override { return "HCD"; }
  TeacherNeeds needs() const override { return {.pooled = true}; }  // logits + pooled: cacheable
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  double ce_label_smoothing() const override { return opt_.label_smoothing; }
  Params params() const override;
  const HcdOptions& options() const { return opt_; }
  int64_t proj_dim() const { return D_; }
  int64_t teacher_dim() const { return Ct_; }
  // What projector i is made of: "conv1x1" or "sepconv x<halvings>".
  const std::string& projector_kind(size_t i) const { return kinds_.at(i); }

 private:
  HcdOptions opt_;
  std::vector<Shape> s_shapes_;
  int64_t Ct_ = 0, K_ = 0, D_ = 0;
  std::vector<std::shared_ptr<nn::Sequential>> proj_, cfm_;
  std::vector<std::string> kinds_;
};

// Reads the parameters; sizes the helpers from ctx.student_sample (the taps in `layers`, 4-D)
// and ctx.teacher_sample (`pooled`, 2-D); K from ctx.num_classes or the sample logits.
std::shared_ptr<Distiller> make_hcd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
