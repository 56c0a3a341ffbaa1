// vrm.cpp: VRM (Zhang, Xie, Cai, Ma, ICCV 2025), after the paper (no official code). The
// equations and the unverified choices are in vrm.h.
#include "distill/relation/vrm.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

static void check_options(const VrmOptions& o) {
  KD_CHECK(o.prune == "detach" || o.prune == "drop",
           "vrm: prune={} is not a pruning mode; prune=detach keeps unreliable edges in the value without gradient, "
           "prune=drop leaves them out",
           o.prune);
  KD_CHECK(o.unreliable_ratio >= 0 && o.unreliable_ratio < 1,
           "vrm: unreliable_ratio={} must be in [0, 1) (the fraction of inter-sample edges treated as unreliable)",
           o.unreliable_ratio);
  KD_CHECK(o.delta > 0, "vrm: the Huber threshold delta={} must be > 0", o.delta);
  KD_CHECK(o.real_real || o.virtual_virtual || o.real_virtual,
           "vrm: real_real, virtual_virtual and real_virtual are all off: no inter-sample edge is left (set one true)");
  KD_CHECK(o.strong_ops >= 0, "vrm: strong_ops={} must be >= 0", o.strong_ops);
}

std::vector<std::pair<int64_t, int64_t>> vrm_sample_pairs(int64_t B, const VrmOptions& opt) {
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < 2 * B; ++i)
    for (int64_t j = i + 1; j < 2 * B; ++j) {  // i < j: the other half is -E_ij, redundant
      const bool ri = i < B, rj = j < B;
      if ((ri && rj && opt.real_real) || (!ri && !rj && opt.virtual_virtual) || (ri != rj && opt.real_virtual))
        pairs.push_back({i, j});
    }
  return pairs;
}

static Tensor index_tensor(const std::vector<std::pair<int64_t, int64_t>>& pairs, bool second) {
  std::vector<int64_t> idx;
  for (const auto& [i, j] : pairs) idx.push_back(second ? j : i);
  return from_vector(idx, {(int64_t)idx.size()});
}

Tensor vrm_edges(const Tensor& Z, const std::vector<std::pair<int64_t, int64_t>>& pairs) {
  KD_CHECK(Z.dim() == 2, "vrm: edges join the rows of a (N, D) matrix, got {}", shape_str(Z.shape()));
  KD_CHECK(!pairs.empty(), "vrm: no edges to build (a batch of one sample has no inter-sample pair)");
  Tensor diff = sub(index_select(Z, 0, index_tensor(pairs, false)), index_select(Z, 0, index_tensor(pairs, true)));
  return normalize(diff, 2.0, 1, 1e-8);  // (P, D) unit vectors
}

Tensor vrm_unreliable(const Tensor& Zs, const std::vector<std::pair<int64_t, int64_t>>& pairs, double ratio) {
  NoGradGuard ng;
  Tensor p = softmax(Zs.detach(), 1);                                 // (N, K)
  Tensor H = neg(sum(mul(p, log_softmax(Zs.detach(), 1)), {1}));      // (N) entropy of each vertex
  std::vector<float> h = to_float_vector(H);
  const int64_t P = (int64_t)pairs.size();
  std::vector<double> joint((size_t)P);
  for (int64_t e = 0; e < P; ++e) joint[e] = (double)h[pairs[e].first] + (double)h[pairs[e].second];
  std::vector<int64_t> order((size_t)P);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return joint[a] > joint[b]; });
  const int64_t count = (int64_t)std::floor(ratio * (double)P);
  std::vector<float> mask((size_t)P, 0.f);
  for (int64_t e = 0; e < count; ++e) mask[order[e]] = 1.f;
  return from_vector(mask, {P});
}

// mean over edges of sum over components of huber(Es - Et); `keep` (P) weights the edges (drop).
static Tensor edge_huber(const Tensor& Es, const Tensor& Et, const Tensor& keep, double delta) {
  Tensor per_edge = sum(huber_loss(Es, Et, Reduction::None, delta), {1});  // (P)
  if (!keep.defined()) return mean(per_edge);
  const double kept = sum(keep).item();
  if (kept == 0) return mul(sum(per_edge), 0.0);
  return div(sum(mul(per_edge, keep)), kept);
}

LossBreakdown vrm_loss(const Tensor& zs, const Tensor& zt, const Tensor& vs, const Tensor& vt, const Tensor& labels,
                       const VrmOptions& opt, const ExplainFn& explain) {
  check_options(opt);
  check_logits_labels("vrm", zs, zt, labels);
  KD_CHECK(vs.defined() && vt.defined(),
           "vrm: the virtual views' logits are missing; VRM needs the student and the teacher run on a strongly "
           "augmented copy of each image (BatchInfo::student_virtual / teacher_virtual, which the training loop fills "
           "when needs().virtual_views)");
  KD_CHECK(vs.shape() == zs.shape() && vt.shape() == zs.shape(),
           "vrm: the virtual views' logits {} (student) and {} (teacher) must have the real views' shape {}",
           shape_str(vs.shape()), shape_str(vt.shape()), shape_str(zs.shape()));
  const int64_t B = zs.size(0), K = zs.size(1);
  KD_CHECK(B >= 1 && K >= 2, "vrm: needs K >= 2 classes for inter-class edges, got K={}", K);
  Tensor Zs = cat({zs, vs}, 0);           // (2B, K) vertices: real, then virtual
  Tensor Zt = cat({zt, vt}, 0).detach();  // (2B, K) the teacher's are constants
  show_step(explain, "Z_s", Zs);
  show_step(explain, "Z_t", Zt);

  // inter-sample edges, redundant halves pruned (i < j), unreliable ones detached or dropped
  const std::vector<std::pair<int64_t, int64_t>> pairs = vrm_sample_pairs(B, opt);
  Tensor unreliable = vrm_unreliable(Zs, pairs, opt.unreliable_ratio);  // (P) 0/1
  show_step(explain, "unreliable", unreliable);
  Tensor Es = vrm_edges(Zs, pairs);  // (P, K)
  Tensor Et = vrm_edges(Zt, pairs);  // (P, K)
  Tensor keep;
  if (opt.prune == "detach") {  // the value keeps every edge; the unreliable ones carry no gradient
    Tensor u = unreliable.reshape({(int64_t)pairs.size(), 1});
    Es = add(mul(Es, rsub(1.0, u)), mul(Es.detach(), u));
  } else {
    keep = rsub(1.0, unreliable);  // (P)
  }
  show_step(explain, "E_s", Es);
  show_step(explain, "E_t", Et);
  Tensor l_is = edge_huber(Es, Et, keep, opt.delta);  // ()
  show_step(explain, "L_is", l_is);

  // inter-class edges: the class columns across the 2B vertices, class pairs k < l
  std::vector<std::pair<int64_t, int64_t>> class_pairs;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t l = k + 1; l < K; ++l) class_pairs.push_back({k, l});
  Tensor Cs = vrm_edges(Zs.transpose(0, 1).contiguous(), class_pairs);  // (K(K-1)/2, 2B)
  Tensor Ct = vrm_edges(Zt.transpose(0, 1).contiguous(), class_pairs);
  show_step(explain, "C_s", Cs);
  show_step(explain, "C_t", Ct);
  Tensor l_ic = edge_huber(Cs, Ct, Tensor(), opt.delta);  // ()
  show_step(explain, "L_ic", l_ic);

  Tensor vce = cross_entropy(vs, labels);  // the virtual view keeps its image's label
  show_step(explain, "virtual_ce", vce);
  LossBreakdown out;
  Tensor vce_part = mul(vce, opt.virtual_ce_weight);
  Tensor is_part = mul(l_is, opt.is_weight), ic_part = mul(l_ic, opt.ic_weight);
  out.total = add(vce_part, add(is_part, ic_part));
  out.parts = {{"virtual_ce", vce_part}, {"inter_sample", is_part}, {"inter_class", ic_part}};
  return out;  // distill_loss adds w_ce * CE(z, y) of the real view
}

VrmDistiller::VrmDistiller(const VrmOptions& opt) : opt_(opt) { check_options(opt_); }

LossBreakdown VrmDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  return vrm_loss(student.logits, teacher.logits, batch.student_virtual.logits, batch.teacher_virtual.logits,
                  batch.labels, opt_, explain);
}

data::TransformConfig VrmDistiller::virtual_transform(const data::Dataset& d) const {
  data::TransformConfig c = data::strong_transform(d);  // train transform + strong ops + cutout
  c.strong_ops = (int)opt_.strong_ops;
  if (!opt_.cutout) c.cutout_size = 0;
  return c;
}

Params VrmDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_vrm_distiller(const Params& params, const DistillerContext&) {
  const VrmOptions o = parse_options<VrmOptions>("vrm", params);
  return std::make_shared<VrmDistiller>(o);
}

void attach_virtual_views(train::Run& run, std::shared_ptr<nn::Classifier> teacher, std::shared_ptr<Distiller> dist,
                          const data::TransformConfig& transform, int64_t total_epochs) {
  KD_CHECK(teacher && dist, "virtual views: a teacher network and a distiller are needed");
  KD_CHECK(dist->needs().virtual_views, "virtual views: {} does not read virtual views", dist->name());
  run.virtual_transform = transform;
  run.virtual_loss = [teacher, dist, total_epochs](const nn::ModelOutput& student, const data::Batch& batch,
                                                   const nn::ModelOutput& student_virtual,
                                                   const data::Batch& virtual_batch, int64_t epoch) -> train::Loss {
    nn::ModelOutput t, tv;
    {
      NoGradGuard ng;  // the teacher is a constant of the loss
      t = teacher->forward(batch.images);
      tv = teacher->forward(virtual_batch.images);
    }
    BatchInfo info;
    info.labels = batch.labels;
    info.indices = batch.indices;
    info.epoch = epoch + 1;  // counted from 1, as elsewhere
    info.batch_index = batch.batch_index;
    info.total_epochs = total_epochs;
    info.student_virtual = student_virtual;
    info.teacher_virtual = tv;
    return distill_loss(*dist, student, t, info);  // w_ce * CE + the method's terms
  };
}

}  // namespace kd::distill
