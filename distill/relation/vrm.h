// vrm.h: VRM, knowledge distillation via virtual relation matching.
//
// Paper: W. Zhang, F. Xie, W. Cai, C. Ma, "VRM: Knowledge Distillation via Virtual Relation
//        Matching", ICCV 2025 (arXiv 2502.20760). Official code: not released when this was
//        written ("code and models will be released"); this file follows the paper's description
//        as summarised in ../shared/METHODS.md, and every weight and threshold is a parameter.
//
// Relation matching transfers how the teacher's predictions relate to each other rather than
// the predictions themselves. VRM enriches the relations with "virtual views" (a strongly
// augmented copy of every image) and prunes the edges that would carry spurious gradients.
//   vertices   Z = [z_1..z_B ; z'_1..z'_B]   (2B, K): the logits of the real images, then of their
//              virtual views (the same images, strongly augmented), for each network
//   inter-sample edges, for vertex pairs i < j (the antisymmetric halves E_ji = -E_ij are
//              redundant and pruned):   E_ij = (Z_i - Z_j) / ||Z_i - Z_j||          (K)
//              real-real (i, j < B), virtual-virtual (i, j >= B), real-virtual (i < B <= j)
//   inter-class edges, for class pairs k < l:  C_kl = (Z_:k - Z_:l) / ||Z_:k - Z_:l||   (2B)
//   unreliable edges: H_i = entropy of the student's softmax(Z_i); the joint entropy of an
//              edge's two ends is H_i + H_j (independent ends); the fraction `unreliable_ratio`
//              of inter-sample edges with the highest joint entropy is unreliable: its student
//              edge is detached (prune=detach: in the value, no gradient) or left out (prune=drop)
//   matching   huber_delta(x) = x^2 / 2 for |x| <= delta, delta (|x| - delta / 2) beyond
//              L_is = (1 / |E|) sum_{(i,j) in E} sum_c huber(E^s_ij,c - E^t_ij,c)
//              L_ic = (1 / |C|) sum_{k<l} sum_n huber(C^s_kl,n - C^t_kl,n)
//   total      L = w_ce CE(z, y) + w_vce CE(z', y) + w_is L_is + w_ic L_ic
//              (w_ce CE(z, y) of the real view added by distill_loss, distiller.h; the virtual
//              view's CE is VRM's own term)
// Norms are floored at 1e-8 (two identical vertices give a zero edge, not NaN). Ties in the
// joint-entropy ranking go to the earlier edge (edges ordered by i, then j).
//
// Unverified choices (no official code): the joint entropy as H_i + H_j of the student's
// softmax at T = 1; the unreliable set as a per-batch fraction (not an absolute threshold); the
// inter-class edges are not entropy-pruned; per-edge Huber sums over components, averaged over
// edges. Default weights are untuned starting points: tune them on a validation split
// (recipe key val_split) before comparing with the paper.
//
// Parameters (--set): the option table VrmOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method vrm`).
// Loss parts (after distill_loss's "ce"): "virtual_ce", "inter_sample", "inter_class".
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/transforms.h"
#include "distill/distiller.h"
#include "distill/output/common.h"
#include "train/train.h"

namespace kd::distill {

struct VrmOptions {
  double ce_weight = 1.0;
  double virtual_ce_weight = 0.0;
  double is_weight = 1.0;
  double ic_weight = 1.0;
  double delta = 1.0;
  double unreliable_ratio = 0.2;
  std::string prune = "detach";
  bool real_real = true, virtual_virtual = true, real_virtual = true;
  int64_t strong_ops = 2;
  bool cutout = true;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y) on the real view");
    f("virtual_ce_weight", o.virtual_ce_weight, "w_vce, the weight of CE on the virtual view");
    f("is_weight", o.is_weight, "w_is, the weight of the inter-sample relations");
    f("ic_weight", o.ic_weight, "w_ic, the weight of the inter-class relations");
    f("delta", o.delta, "the Huber threshold");
    f("unreliable_ratio", o.unreliable_ratio, "the fraction of inter-sample edges of highest joint entropy pruned");
    f("prune", o.prune, "detach: unreliable edges kept in the value without gradient; drop: left out");
    f("real_real", o.real_real, "build the edges between real views");
    f("virtual_virtual", o.virtual_virtual, "build the edges between virtual views");
    f("real_virtual", o.real_virtual, "build the edges between a real and a virtual view");
    f("strong_ops", o.strong_ops, "RandAugment-style ops per virtual view");
    f("cutout", o.cutout, "cutout of half the image side in the virtual view");
  }
};

// The inter-sample vertex pairs (i < j) of 2B vertices that the options keep, in order of i, j.
std::vector<std::pair<int64_t, int64_t>> vrm_sample_pairs(int64_t B, const VrmOptions& opt);

// Unit difference vectors of rows: Z (N, D), pairs -> (P, D), (Z_i - Z_j) / max(||Z_i - Z_j||, 1e-8).
Tensor vrm_edges(const Tensor& Z, const std::vector<std::pair<int64_t, int64_t>>& pairs);

// Which of the pairs are unreliable (1) under the student's vertices Zs (N, K): the
// floor(ratio * P) pairs of highest H_i + H_j. Returns a (P) float 0/1 tensor, no gradient.
Tensor vrm_unreliable(const Tensor& Zs, const std::vector<std::pair<int64_t, int64_t>>& pairs, double ratio);

// zs, zt (B, K) real-view logits; vs, vt (B, K) virtual-view logits; labels (B). Intermediates
// shown: Z_s, Z_t, joint_entropy, unreliable, E_s, E_t, L_is, C_s, C_t, L_ic, virtual_ce. The
// method's terms only (add_cross_entropy adds the CE of zs).
LossBreakdown vrm_loss(const Tensor& zs, const Tensor& zt, const Tensor& vs, const Tensor& vt, const Tensor& labels,
                       const VrmOptions& opt, const ExplainFn& explain = {});

class VrmDistiller : public Distiller {
 public:
  explicit VrmDistiller(const VrmOptions& opt);
  std::string name() const override { return "vrm"; }
  std::string type_name() const override { return "VRM"; }
  TeacherNeeds needs() const override { return {.virtual_views = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const VrmOptions& options() const { return opt_; }
  // The virtual views' transform for a data set: its train transform + strong_ops strong ops
  // (+ cutout of half the side when `cutout`).
  data::TransformConfig virtual_transform(const data::Dataset& d) const override;

 private:
  VrmOptions opt_;
};

std::shared_ptr<Distiller> make_vrm_distiller(const Params& params, const DistillerContext& ctx);

// Wires a training run for a distiller whose needs().virtual_views: every batch also gets its
// virtual views (`transform`), the student runs on both (train.cpp), the teacher too (here, without
// gradient), and the distiller receives both outputs through BatchInfo. One teacher, no teacher
// cache (it stores the real views' logits only). `dist` must outlive the run.
void attach_virtual_views(train::Run& run, std::shared_ptr<nn::Classifier> teacher, std::shared_ptr<Distiller> dist,
                          const data::TransformConfig& transform, int64_t total_epochs);

}  // namespace kd::distill
