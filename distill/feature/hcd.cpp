// hcd.cpp: HCD (Xu et al. AAAI 2026), Heterogeneous Complementary Distillation on OFA-KD's
// per-stage projectors. The equations and the choices are in hcd.h and docs/methods/hcd.md.
#include "distill/feature/hcd.h"

#include <algorithm>
#include <fmt/format.h>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/init.h"

namespace kd::distill {

namespace {

bool one_of(const std::string& v, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (v == n) return true;
  return false;
}

// mean over the rows of sum_k p (log p - log q) with p = exp(log_p): the batch-mean KL(p || q),
// over every leading index of (..., K). Written with primitive ops so that the gradient reaches
// both sides (the fused sub-logits are a target that may itself be trained, sub_kd=student).
Tensor kl_rows(const Tensor& log_p, const Tensor& log_q) {
  Tensor per_row = sum(mul(exp(log_p), sub(log_p, log_q)), {-1});  // (...) KL of each row
  return mean(per_row);                                              // ()
}

}  // namespace

void check_hcd_options(const HcdOptions& o) {
  KD_CHECK(!o.layers.empty(), "hcd: layers is empty; give the student stages with a branch, like layers=f1,f2,f3");
  check_taps(o.layers, "hcd");
  KD_CHECK(o.k >= 1, "hcd: the number of sub-logits k must be >= 1 (the paper uses 4), got k={}", o.k);
  KD_CHECK(o.T > 0, "hcd: the temperature T must be > 0, got T={}", o.T);
  KD_CHECK(one_of(o.ol_mask, {"exclude", "after"}),
           "hcd: ol_mask={} is not a masking order; use ol_mask=exclude (drop the target class, then normalise) or "
           "ol_mask=after (normalise, then zero the target class)",
           o.ol_mask);
  KD_CHECK(one_of(o.ol_on, {"sub", "fused"}),
           "hcd: ol_on={} is unknown; use ol_on=sub (the sub-logits z_j) or ol_on=fused (zhat_j = z_j + z_t)", o.ol_on);
  KD_CHECK(one_of(o.sub_kd, {"student", "teacher"}),
           "hcd: sub_kd={} is unknown; use sub_kd=student (the student's logits learn from each fused sub-logit) or "
           "sub_kd=teacher (each fused sub-logit learns from the teacher's logits)",
           o.sub_kd);
  KD_CHECK(one_of(o.stage_reduce, {"sum", "mean"}), "hcd: stage_reduce={} is unknown; use sum or mean",
           o.stage_reduce);
  KD_CHECK(one_of(o.cfm, {"mlp", "fc"}),
           "hcd: cfm={} is unknown; use cfm=mlp (Linear - ReLU - Linear) or cfm=fc (one Linear)", o.cfm);
  KD_CHECK(o.cfm_hidden >= 0, "hcd: cfm_hidden must be >= 0 (0: the teacher's feature width), got {}", o.cfm_hidden);
  KD_CHECK(o.proj_dim >= 0, "hcd: proj_dim must be >= 0 (0: chosen from the shapes), got {}", o.proj_dim);
  KD_CHECK(o.label_smoothing >= 0 && o.label_smoothing < 1, "hcd: label_smoothing must be in [0, 1), got {}",
           o.label_smoothing);
}

// ------------------------------------------------------------------------------- SDD and OL

Tensor split_sub_logits(const Tensor& shared, int64_t n) {
  KD_CHECK(shared.defined() && shared.dim() == 2 && n >= 1 && shared.size(1) % n == 0,
           "hcd: the shared logits must be (B, n K) to split into n = {} sub-logits, got {}", n,
           shared.defined() ? shape_str(shared.shape()) : std::string("an undefined tensor"));
  const int64_t B = shared.size(0), K = shared.size(1) / n;
  return shared.reshape({B, n, K});  // (B, n, K): z_j = shared[:, j K : (j+1) K]
}

Tensor fuse_sub_logits(const Tensor& z_sub, const Tensor& zt, double lambda_t) {
  KD_CHECK(z_sub.dim() == 3 && zt.dim() == 2 && z_sub.size(0) == zt.size(0) && z_sub.size(2) == zt.size(1),
           "hcd: sub-logits {} and teacher logits {} must be (B, n, K) and (B, K)", shape_str(z_sub.shape()),
           shape_str(zt.shape()));
  return add(z_sub, mul(zt.unsqueeze(1), lambda_t));  // (B, n, K): zhat_j = z_j + lambda_t z_t
}

Tensor sub_logit_cosines(const Tensor& z_sub, const Tensor& labels, const std::string& mask) {
  KD_CHECK(z_sub.dim() == 3, "hcd: sub-logits are (B, n, K), got {}", shape_str(z_sub.shape()));
  const int64_t K = z_sub.size(2);
  Tensor keep = other_mask(labels, K).to(DType::f32).unsqueeze(1);  // (B, 1, K): 0 at the target class
  Tensor u;                                                         // (B, n, K) unit rows
  if (mask == "exclude") {
    // Zeroing the target entry before normalising = dropping it: the norm and every dot product
    // below run over the K - 1 non-target classes only.
    u = normalize(mul(z_sub, keep), 2.0, 2);
  } else {
    KD_CHECK(mask == "after", "hcd: unknown ol_mask '{}' (exclude or after)", mask);
    u = mul(normalize(z_sub, 2.0, 2), keep);  // unit over all K classes, then the target entry zeroed
  }
  return bmm(u, u.transpose(1, 2).contiguous());  // (B, n, n): S[b, i, j] = <u_i, u_j>
}

Tensor orthogonality_loss(const Tensor& S, double theta) {
  KD_CHECK(S.dim() == 3 && S.size(1) == S.size(2), "hcd: the cosine matrix is (B, n, n), got {}",
           shape_str(S.shape()));
  const int64_t B = S.size(0), n = S.size(1);
  if (n == 1) return scalar_tensor(0.0);  // one sub-logit: no pair to decorrelate
  std::vector<float> off(n * n, 1.0f);
  for (int64_t i = 0; i < n; ++i) off[i * n + i] = 0.0f;
  Tensor off_diagonal = from_vector(off, {n, n});        // (n, n): 1 where i != j
  Tensor excess = relu(sub(S, theta));                    // (B, n, n) relu(S - theta)
  Tensor penalty = mul(pow(excess, 2.0), off_diagonal);   // (B, n, n), the diagonal dropped
  return div(sum(penalty), (double)(B * n * (n - 1)));   // () mean over b and i != j
}

LossBreakdown hcd_loss(const Tensor& zs, const Tensor& zt_in, const Tensor& labels, const std::vector<Tensor>& shared,
                       const std::vector<std::string>& stages, const HcdOptions& opt, const ExplainFn& explain) {
  check_hcd_options(opt);
  check_logits_labels("hcd", zs, zt_in, labels);
  KD_CHECK(!shared.empty() && shared.size() == stages.size(),
           "hcd: one shared-logit tensor per stage is needed ({} given for {} stages)", shared.size(), stages.size());
  const int64_t B = zs.size(0), K = zs.size(1), n = opt.k;
  const double T = opt.T;
  const Tensor zt = zt_in.detach();  // the teacher is a constant
  Tensor log_ps = log_softmax(div(zs, T), 1);  // (B, K) log softmax(z_s / T)
  Tensor log_pt = log_softmax(div(zt, T), 1);  // (B, K) log softmax(z_t / T)
  Tensor y_rows = labels.unsqueeze(1).expand({B, n}).reshape({B * n});  // (B n): the label of every sub-logit

  Tensor sum_sce = scalar_tensor(0.0), sum_skd = scalar_tensor(0.0), sum_ol = scalar_tensor(0.0);
  for (size_t i = 0; i < shared.size(); ++i) {
    const std::string& s = stages[i];
    KD_CHECK(shared[i].dim() == 2 && shared[i].size(0) == B && shared[i].size(1) == n * K,
             "hcd: stage {}: the shared logits are {} but must be (B, n K) = ({}, {}) for n = {} sub-logits of K = {} "
             "classes",
             s, shape_str(shared[i].shape()), B, n * K, n, K);
    Tensor z_sub = split_sub_logits(shared[i], n);  // (B, n, K) z_j
    show_step(explain, s + ".z_sub", z_sub);
    Tensor z_hat = fuse_sub_logits(z_sub, zt, opt.fuse_weight);  // (B, n, K) zhat_j = z_j + lambda_t z_t
    show_step(explain, s + ".z_hat", z_hat);

    // SDD: every fused sub-logit classifies the sample ...
    Tensor l_sce = cross_entropy(z_hat.reshape({B * n, K}), y_rows);  // () = (1/n) sum_j CE(zhat_j, y)
    show_step(explain, s + ".L_sub_ce", l_sce);
    // ... and is tied to the student's logits (or to the teacher's) by KD at temperature T
    Tensor l_skd;
    if (opt.sub_kd == "student") {
      Tensor target = opt.detach_fused ? z_hat.detach() : z_hat;
      Tensor log_phat = log_softmax(div(target, T), 2);                          // (B, n, K)
      l_skd = mul(kl_rows(log_phat, log_ps.unsqueeze(1).expand({B, n, K})), T * T);  // KL(phat_j || p_s)
    } else {
      Tensor log_phat = log_softmax(div(z_hat, T), 2);                           // (B, n, K)
      l_skd = mul(kl_rows(log_pt.unsqueeze(1).expand({B, n, K}), log_phat), T * T);  // KL(p_t || phat_j)
    }
    show_step(explain, s + ".L_sub_kd", l_skd);

    // OL: the n sub-logits of a sample should point in different directions
    Tensor S = sub_logit_cosines(opt.ol_on == "sub" ? z_sub : z_hat, labels, opt.ol_mask);  // (B, n, n)
    show_step(explain, s + ".S", S);
    Tensor l_ol = orthogonality_loss(S, opt.margin);  // ()
    show_step(explain, s + ".L_ol", l_ol);

    sum_sce = add(sum_sce, l_sce);
    sum_skd = add(sum_skd, l_skd);
    sum_ol = add(sum_ol, l_ol);
  }
  const double stage_factor = opt.stage_reduce == "mean" ? 1.0 / (double)shared.size() : 1.0;

  Tensor l_kd = mul(kl_rows(log_pt, log_ps), T * T);  // () T^2 KL(p_t || p_s)
  show_step(explain, "L_kd", l_kd);

  LossBreakdown out;
  Tensor kd_part = mul(l_kd, opt.kd_weight);
  Tensor sce_part = mul(sum_sce, opt.sub_ce_weight * stage_factor);
  Tensor skd_part = mul(sum_skd, opt.sub_kd_weight * stage_factor);
  Tensor ol_part = mul(sum_ol, opt.ol_weight * stage_factor);
  out.total = add(add(add(kd_part, sce_part), skd_part), ol_part);
  out.parts = {{"kd", kd_part}, {"sub_ce", sce_part}, {"sub_kd", skd_part}, {"ol", ol_part}};
  return out;  // distill_loss adds w_ce * CE(zs, y), with label_smoothing
}

// ------------------------------------------------------------------------------- helpers

namespace {

// OFA's init_weights (distillers/utils.py), applied to every helper here: Conv2d weights
// kaiming-normal (fan-out, ReLU), their biases left at PyTorch's default; BatchNorm 1 / 0 (the
// default); Linear weights trunc-normal std 0.02 with bias 0.
std::shared_ptr<nn::Conv2d> ofa_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, bool bias,
                                     Generator& gen) {
  auto c = std::make_shared<nn::Conv2d>(in, out, kernel, gen, stride, /*padding=*/kernel / 2, 1, groups, bias);
  nn::init::kaiming_normal_fan_out_(c->weight, gen);
  return c;
}

std::shared_ptr<nn::Linear> ofa_linear(int64_t in, int64_t out, Generator& gen) {
  auto l = std::make_shared<nn::Linear>(in, out, gen);
  nn::init::trunc_normal_(l->weight, 0.02, gen);
  nn::init::constant_(l->bias, 0.0);
  return l;
}

}  // namespace

SepConv::SepConv(int64_t in, int64_t out, Generator& gen) {
  op = register_module("op", std::make_shared<nn::Sequential>());
  op->push_back(ofa_conv(in, in, 3, /*stride=*/2, /*groups=*/in, false, gen));  // depthwise, halves the map
  op->push_back(ofa_conv(in, in, 1, 1, 1, false, gen));                        // pointwise
  op->push_back(nn::BatchNorm2d(in));
  op->push_back(std::make_shared<nn::ReLU>());
  op->push_back(ofa_conv(in, in, 3, 1, /*groups=*/in, false, gen));  // depthwise
  op->push_back(ofa_conv(in, out, 1, 1, 1, false, gen));             // pointwise, to `out` channels
  op->push_back(nn::BatchNorm2d(out));
  op->push_back(std::make_shared<nn::ReLU>());
}

int64_t hcd_halvings(int64_t H, int64_t target) {
  int64_t n = 0;
  while (H > target) {  // a 3x3 conv with stride 2 and padding 1 maps H to ceil(H / 2)
    H = (H + 1) / 2;
    ++n;
  }
  return n;
}

std::shared_ptr<nn::Sequential> make_hcd_projector(int64_t in_channels, int64_t halvings, int64_t D, Generator& gen) {
  auto p = std::make_shared<nn::Sequential>();
  if (halvings == 0) {
    p->push_back(ofa_conv(in_channels, D, 1, 1, 1, /*bias=*/true, gen));  // OFA's last-stage projector
  } else {
    int64_t in = in_channels;
    for (int64_t b = 0; b < halvings; ++b) {  // OFA: channels double at every block, the last to D
      const int64_t out = b == halvings - 1 ? D : in * 2;
      p->push_back(std::make_shared<SepConv>(in, out, gen));
      in *= 2;
    }
  }
  p->push_back(std::make_shared<nn::AdaptiveAvgPool2d>(Int2(1, 1)));  // (B, D, 1, 1)
  p->push_back(std::make_shared<nn::Flatten>());                      // (B, D)
  return p;
}

std::shared_ptr<nn::Sequential> make_hcd_cfm(int64_t in_features, int64_t hidden, int64_t out_features,
                                             Generator& gen) {
  auto m = std::make_shared<nn::Sequential>();
  if (hidden == 0) {
    m->push_back(ofa_linear(in_features, out_features, gen));
  } else {
    m->push_back(ofa_linear(in_features, hidden, gen));
    m->push_back(std::make_shared<nn::ReLU>());
    m->push_back(ofa_linear(hidden, out_features, gen));
  }
  return m;
}

HcdDistiller::HcdDistiller(const HcdOptions& opt, const std::vector<Shape>& s_shapes, int64_t teacher_dim, int64_t K,
                           uint64_t seed)
    : opt_(opt), s_shapes_(s_shapes), Ct_(teacher_dim), K_(K) {
  check_hcd_options(opt_);
  KD_CHECK(s_shapes_.size() == opt_.layers.size(), "hcd: {} student shapes for {} layers", s_shapes_.size(),
           opt_.layers.size());
  KD_CHECK(Ct_ >= 1 && K_ >= 1, "hcd: the teacher's feature width ({}) and the class count ({}) must be >= 1", Ct_, K_);
  // D and the smallest map: OFA projects every stage to the deepest stage's size and to
  // max(student width, teacher width) channels.
  int64_t H_min = s_shapes_[0][2];
  for (const Shape& s : s_shapes_) H_min = std::min(H_min, s[2]);
  size_t deepest = 0;  // the deepest tap: the one with the smallest map (the last listed among equals)
  for (size_t i = 0; i < s_shapes_.size(); ++i)
    if (s_shapes_[i][2] == H_min) deepest = i;
  D_ = opt_.proj_dim > 0 ? opt_.proj_dim : std::max(s_shapes_[deepest][1], Ct_);
  const int64_t hidden = opt_.cfm == "fc" ? 0 : (opt_.cfm_hidden > 0 ? opt_.cfm_hidden : Ct_);

  Generator gen(seed);
  for (size_t i = 0; i < s_shapes_.size(); ++i) {
    const std::string& tap = opt_.layers[i];
    const int64_t halvings = hcd_halvings(s_shapes_[i][2], H_min);
    proj_.push_back(register_module("proj_" + tap, make_hcd_projector(s_shapes_[i][1], halvings, D_, gen)));
    cfm_.push_back(register_module("cfm_" + tap, make_hcd_cfm(D_ + Ct_, hidden, opt_.k * K_, gen)));
    kinds_.push_back(halvings == 0 ? std::string("conv1x1") : fmt::format("sepconv x{}", halvings));
  }
}

LossBreakdown HcdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                 const BatchInfo& batch) {
  KD_CHECK(teacher.pooled.defined() && teacher.pooled.dim() == 2,
           "hcd: HCD concatenates the teacher's penultimate feature, its `pooled` tap (B, Ct), which this teacher "
           "output lacks; run the teacher's forward pass (or the teacher cache, which stores it), or give it to kdlab "
           "loss as --teacher-feat pooled=FILE.npy");
  const Tensor f_t = teacher.pooled.detach();  // (B, Ct) the teacher is a constant
  KD_CHECK(f_t.size(1) == Ct_,
           "hcd: the teacher's pooled feature is {} but the mappers were built for Ct = {}; build the distiller from "
           "a sample of the same teacher",
           shape_str(f_t.shape()), Ct_);
  show("f_t", f_t);
  std::vector<Tensor> shared;
  for (size_t i = 0; i < opt_.layers.size(); ++i) {
    const std::string& tap = opt_.layers[i];
    Tensor F_s = feature_tap(student, tap, "hcd", "student");  // (B, C, H, W)
    KD_CHECK(F_s.dim() == 4 && F_s.size(1) == s_shapes_[i][1] && F_s.size(0) == f_t.size(0),
             "hcd: the student tap {} is {} but its projector was built for (B, {}, H, W) with the teacher's B = {}; "
             "HCD's projectors take CNN feature maps (choose other taps with --set layers=...)",
             tap, shape_str(F_s.shape()), s_shapes_[i][1], f_t.size(0));
    Tensor f_s = proj_[i]->forward(F_s);  // (B, D) = Flatten(AvgPool(P_i(F_s)))
    show(tap + ".f_s", f_s);
    Tensor f_cat = cat({f_s, f_t}, 1);  // (B, D + Ct) = [f_s ; f_t]
    show(tap + ".f_cat", f_cat);
    Tensor z = cfm_[i]->forward(f_cat);  // (B, n K) the shared logits
    show(tap + ".z_shared", z);
    shared.push_back(z);
  }
  return hcd_loss(student.logits, teacher.logits, batch.labels, shared, opt_.layers, opt_, explain);
}

Params HcdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_hcd_distiller(const Params& params, const DistillerContext& ctx) {
  const HcdOptions o = parse_options<HcdOptions>("hcd", params);
  check_hcd_options(o);

  std::vector<Shape> s_shapes;
  for (const std::string& tap : o.layers) {
    const Shape s = sample_tap_shape(ctx.student_sample, tap, "hcd", "student");
    KD_CHECK(s.size() == 4,
             "hcd: the student tap {} is {}, not a (B, C, H, W) map; HCD's projectors (OFA's SepConv heads) take "
             "CNN stage outputs such as f1..f3 (a ViT student's token taps are not supported)",
             tap, shape_str(s));
    s_shapes.push_back(s);
  }
  KD_CHECK(ctx.teacher_sample.pooled.defined(),
           "hcd: the teacher's penultimate feature (its `pooled` tap, (B, Ct)) is needed to size the mappers: give it "
           "to kdlab loss as --teacher-feat pooled=FILE.npy (training runs take it from one forward pass)");
  const Shape t = ctx.teacher_sample.pooled.shape();
  KD_CHECK(t.size() == 2, "hcd: the teacher's pooled feature must be (B, Ct), got {}", shape_str(t));
  const int64_t K = ctx.num_classes > 0 ? ctx.num_classes
                                        : (ctx.student_sample.logits.defined() ? ctx.student_sample.logits.size(1) : 0);
  KD_CHECK(K > 0, "hcd: the number of classes is unknown (DistillerContext::num_classes, or sample logits)");
  return std::make_shared<HcdDistiller>(o, s_shapes, t[1], K, ctx.seed);
}

}  // namespace kd::distill
