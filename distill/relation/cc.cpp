// cc.cpp: CC (Peng et al. 2019): RepDistiller's code (form=code) and the paper's kernel form
// (form=paper, an instance of the relation mechanism). The equations are in cc.h.
#include "distill/relation/cc.h"

#include "distill/feature/common.h"
#include "engine/ops.h"

namespace kd::distill {

namespace {

void check_options(const CcOptions& o) {
  KD_CHECK(o.form == "code" || o.form == "paper",
           "cc: form={} is not a CC form; form=code is RepDistiller's loss on trained embeddings (the published "
           "numbers), form=paper the paper's Taylor-expanded RBF correlation matrices",
           o.form);
  KD_CHECK(o.feat_dim >= 1, "cc: feat_dim must be >= 1 (the embeddings' width; RepDistiller uses 128), got {}",
           o.feat_dim);
}

int64_t flat_width(const Shape& s) {
  int64_t n = 1;
  for (size_t i = 1; i < s.size(); ++i) n *= s[i];
  return n;
}

}  // namespace

RelationOptions cc_paper_relation(const CcOptions& opt) {
  RelationOptions r;
  r.psi = "corr";
  r.d = "mse";
  r.reduction = "mean";  // ||C_t - C_s||_F^2 / B^2
  r.gamma = opt.gamma;
  r.order = opt.order;
  return r;
}

Tensor cc_code_term(const Tensor& es, const Tensor& et, const ExplainFn& explain) {
  KD_CHECK(es.dim() == 2 && es.shape() == et.shape() && es.size(0) >= 2,
           "cc: the student's embedding {} and the teacher's {} must both be (B, d) with B >= 2",
           shape_str(es.shape()), shape_str(et.shape()));
  const int64_t B = es.size(0);
  Tensor delta = abs(sub(es, et));  // (B, d)
  show_step(explain, "delta", delta);
  Tensor neighbours = mul(delta.slice(0, 0, B - 1), delta.slice(0, 1, B));  // (B-1, d)  delta_b * delta_{b+1}
  return mean(sum(neighbours, {1}));  // ()
}

LossBreakdown cc_loss(const Tensor& zs, const Tensor& labels, const Tensor& fs_in, const Tensor& ft_in,
                      nn::Linear* embed_s, nn::Linear* embed_t, const CcOptions& opt, const ExplainFn& explain) {
  check_logits_labels("cc", zs, Tensor(), labels);
  check_options(opt);
  const int64_t B = zs.size(0);
  Tensor fs = relation_features(fs_in, B, "cc", "student");           // (B, Ds)
  Tensor ft = relation_features(ft_in, B, "cc", "teacher").detach();  // (B, Dt)
  Tensor l_cc;
  if (opt.form == "paper") {
    l_cc = relation_loss(fs, ft, cc_paper_relation(opt), explain, "cc.");
  } else {
    KD_CHECK(embed_s && embed_t, "cc: form=code embeds both networks' features; the embeddings were not built");
    KD_CHECK(fs.size(1) == embed_s->weight.size(1) && ft.size(1) == embed_t->weight.size(1),
             "cc: the embeddings were sized for features of width {} (student) and {} (teacher) but the taps are {} "
             "and {}; build the distiller from a sample batch of the same networks",
             embed_s->weight.size(1), embed_t->weight.size(1), shape_str(fs_in.shape()), shape_str(ft_in.shape()));
    Tensor es = embed_s->forward(fs);  // (B, feat_dim)
    Tensor et = embed_t->forward(ft);  // (B, feat_dim): a constant input, a trained embedding
    show_step(explain, "e_s", es);
    show_step(explain, "e_t", et);
    l_cc = cc_code_term(es, et, explain);
    show_step(explain, "L_CC", l_cc);
  }
  Tensor cc_part = mul(l_cc, opt.feat_weight);  // w_cc * L_CC
  LossBreakdown out;
  out.total = cc_part;
  out.parts = {{"cc", cc_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y)
}

CcDistiller::CcDistiller(const CcOptions& opt, int64_t s_dim, int64_t t_dim, uint64_t seed) : opt_(opt) {
  check_options(opt_);
  if (opt_.form != "code") return;
  KD_CHECK(s_dim >= 1 && t_dim >= 1, "cc: the embeddings need the features' widths, got {} and {}", s_dim, t_dim);
  Generator gen(seed);
  embed_s_ = register_module("embed_s", std::make_shared<nn::Linear>(s_dim, opt_.feat_dim, gen));
  embed_t_ = register_module("embed_t", std::make_shared<nn::Linear>(t_dim, opt_.feat_dim, gen));
}

LossBreakdown CcDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  Tensor fs = feature_tap(student, opt_.tap, "cc", "student");
  Tensor ft = feature_tap(teacher, opt_.teacher_tap, "cc", "teacher");
  return cc_loss(student.logits, batch.labels, fs, ft, embed_s_.get(), embed_t_.get(), opt_, explain);
}

Params CcDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_cc_distiller(const Params& params, const DistillerContext& ctx) {
  CcOptions o = parse_options<CcOptions>("cc", params);
  if (!params.count("teacher_tap")) o.teacher_tap = o.tap;
  check_tap_name(o.tap, "cc");
  check_tap_name(o.teacher_tap, "cc");
  check_options(o);
  KD_CHECK(o.form == "paper" || (!params.count("gamma") && !params.count("order")),
           "cc: gamma and order belong to the paper's kernel; add form=paper or remove them");
  KD_CHECK(o.form == "code" || !params.count("feat_dim"),
           "cc: feat_dim is the width of form=code's embeddings; form=paper has none, remove it");
  if (o.form == "paper") {
    RelationOptions rel = cc_paper_relation(o);
    check_relation_options(rel, "cc");
    return std::make_shared<CcDistiller>(o, 0, 0, ctx.seed);
  }
  const int64_t s_dim = flat_width(sample_tap_shape(ctx.student_sample, o.tap, "cc", "student"));
  const int64_t t_dim = flat_width(sample_tap_shape(ctx.teacher_sample, o.teacher_tap, "cc", "teacher"));
  return std::make_shared<CcDistiller>(o, s_dim, t_dim, ctx.seed);
}

}  // namespace kd::distill
