// cc.h: CC, correlation congruence for knowledge distillation.
//
// Paper: B. Peng, X. Jin, J. Liu, S. Zhou, Y. Wu, Y. Liu, D. Li, Z. Zhang, "Correlation Congruence
//        for Knowledge Distillation", ICCV 2019 (arXiv 1904.01802). Reference code: RepDistiller
//        (HobbitLong/RepDistiller), distiller_zoo/CC.py (Correlation, "code emailed to me by the
//        original author"), models/util.py (LinearEmbed), train_student.py (--distill correlation).
//        mdistiller has no CC.
//
// The paper: besides matching each sample, match the *correlation* between samples. With a kernel
// k, the correlation matrix of a batch is C_ij = k(f_i, f_j) (B, B), here the Gaussian RBF kernel
// of L2-normalised features by its order-P Taylor expansion:
//     k(x_i, x_j) = exp(-gamma ||x_i - x_j||^2) ~ sum_{p=0..P} e^{-2 gamma} (2 gamma)^p / p! (x_i . x_j)^p
//     L_CC = ||C_t - C_s||_F^2 / B^2
// (form=paper: the relation mechanism's psi=corr with d=mse, on the taps directly).
//
// The official code (the CIFAR-100 numbers: RepDistiller's README) computes something else. Both
// networks' pooled features go through a trainable linear embedding to 128 dimensions (one for
// the student, one for the teacher: both trained), and with delta = |embed_s(f_s) - embed_t(f_t)|
// (B, 128), consecutive samples of the batch are paired:
//     L_CC(code) = (1 / (B-1)) sum_{b=0..B-2} sum_d delta_{b,d} * delta_{b+1,d}
//     L          = w_ce * CE(zs, y) + w_cc * L_CC                       (w_ce = 1, w_cc = 0.02)
//                  (w_ce * CE added by distill_loss, distiller.h)
// That is a product of the instance-level errors of neighbouring samples, not a kernel matrix,
// so it is not of the form sum_ij d(psi_s, psi_t): form=code is implemented on its own here.
//
// Official-code semantics reproduced (form=code, the default):
//   - feat[-1] of both networks, which in RepDistiller is the pooled feature (the tap `pooled`),
//     viewed as (B, -1); the teacher's features are computed under torch.no_grad;
//   - embed_s = LinearEmbed(C_s, feat_dim), embed_t = LinearEmbed(C_t, feat_dim): nn.Linear with
//     a bias and PyTorch's default initialisation, feat_dim = 128; both in trainable_list, so the
//     teacher's embedding is trained by this loss too (its input is a constant);
//   - delta = torch.abs(f_s - f_t); torch.mean((delta[:-1] * delta[1:]).sum(1));
//   - -r 1 -a 0 -b 0.02 (scripts/run_cifar_distill.sh): CE weight 1, no KD term, CC weight 0.02.
// form=paper takes gamma (0.4) and order (2): the paper's P = 2; gamma is our reading of the paper
// (not checked against a released configuration). It has no helper modules.
//
// Parameters (--set): the option table CcOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method cc`).
// Loss parts (after distill_loss's "ce"): "cc" = w_cc * L_CC. Helpers (form=code): "embed_s", "embed_t" (nn::Linear),
// trained and checkpointed with the student.
#pragma once
#include "distill/distiller.h"
#include "distill/relation/relation.h"
#include "nn/layers.h"

namespace kd::distill {

struct CcOptions {
  std::string tap = "pooled";
  std::string teacher_tap = "pooled";
  double ce_weight = 1.0;
  double feat_weight = 0.02;
  std::string form = "code";
  int64_t feat_dim = 128;
  double gamma = 0.4;
  int64_t order = 2;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("tap", o.tap, "the student's tap (pooled, f0..fN, pre1..preN)");
    f("teacher_tap", o.teacher_tap, "the teacher's tap; when not given: tap");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y)");
    f("feat_weight", o.feat_weight, "the weight of L_cc");
    f("form", o.form, "code: RepDistiller's loss on embeddings; paper: the kernel matrices");
    f("feat_dim", o.feat_dim, "form=code: the width of the embeddings", o.form == "code");
    f("gamma", o.gamma, "form=paper: the RBF kernel's gamma", o.form != "code");
    f("order", o.order, "form=paper: the order of the kernel's Taylor expansion", o.form != "code");
  }
};

RelationOptions cc_paper_relation(const CcOptions& opt);  // psi=corr, d=mse, reduction mean

// The official code's term: es (B, d), et (B, d) the two embeddings -> ()
//   mean over b = 0..B-2 of sum_d |es - et|_{b,d} |es - et|_{b+1,d}
Tensor cc_code_term(const Tensor& es, const Tensor& et, const ExplainFn& explain = {});

// zs (B, K), labels (B), fs / ft (B, ...) the taps (ft detached); embed_s / embed_t the
// embeddings (form=code; ignored, may be null, for form=paper). Intermediates shown: form=code
// e_s, e_t, delta, L_CC; form=paper cc.{cos_t, psi_t, cos_s, psi_s, L}. The method's terms only (add_cross_entropy adds the CE).
LossBreakdown cc_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs, const Tensor& ft, nn::Linear* embed_s,
                      nn::Linear* embed_t, const CcOptions& opt, const ExplainFn& explain = {});

class CcDistiller : public Distiller {
 public:
  // s_dim, t_dim: the flattened widths of the student's and the teacher's taps (form=code);
  // the embeddings' weights are drawn from `seed`, embed_s first.
  CcDistiller(const CcOptions& opt, int64_t s_dim, int64_t t_dim, uint64_t seed);
  std::string name() const override { return "cc"; }
  std::string type_name() const override { return "CC"; }
  // the teacher's pooled feature only (the teacher cache can store it), or its feature maps
  TeacherNeeds needs() const override {
    return {.feats = opt_.teacher_tap != "pooled", .pooled = opt_.teacher_tap == "pooled"};
  }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const CcOptions& options() const { return opt_; }

 private:
  CcOptions opt_;
  std::shared_ptr<nn::Linear> embed_s_, embed_t_;  // form=code only
};

// Reads the parameters; form=code sizes the embeddings from ctx.student_sample / teacher_sample.
std::shared_ptr<Distiller> make_cc_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
