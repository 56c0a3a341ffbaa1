// supervision_transfer.h: cross-modal supervision transfer.
//
// Paper: S. Gupta, J. Hoffman, J. Malik, "Cross Modal Distillation for Supervision Transfer",
//        CVPR 2016 (arXiv 1507.00448); ../shared/METHODS.md, "Cross-modal distillation".
//
// Paired images of one scene in two modalities, I_i (modality A, the teacher's: rgb) and D_i
// (modality B, the student's: gray, edges, ...), no labels. The frozen teacher f_A was trained on
// A; the student g_B learns to reproduce the teacher's mid-level representation at layer l from
// its own modality, through a learned transformation t (a 1x1 convolution, a connector):
//     L_st = w_feat * (1 / (B C H W)) sum_i || t(f_A^(l)(I_i)) - g_B^(l)(D_i) ||^2
// (the paper's sum of squared L2 distances, divided by the number of entries so that w_feat does
// not depend on the batch or the map size). The student is then fine-tuned on the few labelled
// images: `kdlab train --init-weights RUN/model_last.safetensors --set train_subset=N`, the
// second step of the recipe (docs/methods/cross_modal.md).
//
// The connector (option connector):
//   teacher   t on the teacher's side, Ct -> Cs channels, as METHODS.md writes the equation.
//             Both t and the student train, so L has a degenerate minimum t = 0, g_B^(l) = 0;
//             fine-tuning starts from whatever the student reached.
//   student   a 1x1 connector r on the student's side instead, || f_A - r(g_B) ||^2 (FitNets'
//             direction; the target is fixed, so there is no such minimum).
//   identity  no connector: the paper's own setting (the same architecture for both modalities),
//             needs maps of the same shape.
//   auto      identity when the two maps have the same shape, else teacher (the default).
// The two maps must have the same spatial size (choose layers that do).
// ce_weight = 0 (the default): no cross-entropy at all, the stage reads no labels; > 0 adds
// w_ce * CE(zs, y) (a labelled variant).
// Loss part (after distill_loss's "ce"): "st" = w_feat * L. Helper: "connector" (teacher/student).
#pragma once
#include "distill/distiller.h"
#include "distill/feature/common.h"
#include "nn/layers.h"

namespace kd::distill {

struct SupervisionTransferOptions {
  std::string layer = "f2";
  std::string teacher_layer = "f2";
  std::string connector = "auto";
  double feat_weight = 1.0;
  double ce_weight = 0.0;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("layer", o.layer, "l, the student's mid-level layer (a tap: f0..fN, pre1..preN)");
    f("teacher_layer", o.teacher_layer, "the teacher's layer; when not given: layer");
    f("connector", o.connector, "t: teacher (1x1 conv on the teacher's map), student, identity, or auto");
    f("feat_weight", o.feat_weight, "w_feat, the weight of L_st");
    f("ce_weight", o.ce_weight, "w_ce of CE(zs, y); 0: no CE, no labels read (the paper's unlabelled stage)");
  }
};

// fs (B, Cs, H, W) the student's map, ft (B, Ct, H, W) the teacher's (detached here); connector
// null for identity; on_teacher: connector applies to ft (else to fs). Intermediates shown:
// teacher_side, student_side, L_st.
LossBreakdown supervision_transfer_loss(const Tensor& fs, const Tensor& ft, nn::Layer* connector, bool on_teacher,
                                        const SupervisionTransferOptions& opt, const ExplainFn& explain = {});

class SupervisionTransferDistiller : public Distiller {
 public:
  // s_shape, t_shape: (B, C, H, W) of the two maps; the connector's weights are drawn from `seed`.
  SupervisionTransferDistiller(const SupervisionTransferOptions& opt, const Shape& s_shape, const Shape& t_shape,
                               uint64_t seed);
  std::string name() const override { return "supervision_transfer"; }
  std::string type_name() const override { return "SupervisionTransfer"; }
  TeacherNeeds needs() const override { return {.feats = true}; }
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override {
    if (opt_.ce_weight == 0) return std::nullopt;  // the unlabelled stage: no CE term at all
    return opt_.ce_weight;
  }
  Params params() const override;
  // "identity", "teacher" or "student": the connector rule taken (auto resolved).
  const std::string& connector_side() const { return side_; }
  nn::Conv2d* connector() { return conv_.get(); }

 private:
  SupervisionTransferOptions opt_;
  std::string side_;
  std::shared_ptr<nn::Conv2d> conv_;  // registered as "connector"; null for identity
};

std::shared_ptr<Distiller> make_supervision_transfer_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
