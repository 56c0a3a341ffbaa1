// fusion.h: several distillation methods in one loss (fusion), and several teachers in one set
// of teacher logits (multi-teacher).
//
// ---- Fusion: "dkd+at", "kd+fitnet+wkd_f", ... (any registry methods joined by '+')
//
// A method's loss() is its own distillation terms; the plain CE(zs, y) is added once, by
// distill_loss (distiller.h), with the method's ce_weight. A fusion is one such method: it runs
// each component on the same student and teacher outputs (one teacher forward pass per batch,
// shared) and scales each component's terms by a weight and an epoch schedule; distill_loss then
// adds CE once, with the fusion's ce_weight:
//     L = w_ce * CE(zs, y) + sum_i  w_i * s_i(epoch) * L_i
// where L_i is component i's loss() total (no CE in it). Written over the named parts: every part
// of every component times w_i * s_i(epoch); logged as "<method>.<part>" ("dkd.tckd", "at.at_f1"),
// after distill_loss's "ce".
//   w_ce   fusion key ce_weight; default: the first component's ce_weight (its params()), or 1
//          when it has none. Component weights and schedules never scale CE; the components'
//          own ce_weight are not used (only the first one's, as this default).
//   w_i    <method>.weight (1)
//   s_i    <method>.schedule: constant (1), warmup:E = min(epoch / E, 1) (a linear ramp over E
//          epochs, epoch counted from 1 as DKD's warm-up), cosine = (1 + cos(pi (epoch-1) / N)) / 2
//          over the run's N epochs (1 at the first epoch, decaying towards 0).
// Parameters of the components: <method>.<key> (dkd.beta=2, at.feat_weight=500). A component's
// own parameter named weight or schedule (wkd_f has a "weight") is reached as
// <method>.param.<key> (wkd_f.param.weight=0.08); <method>.param.<key> works for any key.
// A fusion of one method with weight 1 and a constant schedule is that method: the same loss and
// the same gradient (tests/test_fusion.cpp), because the parts of every method add up to its total.
// needs() is the union of the components' (one feature method makes the teacher cache unusable).
// The components' helpers are registered under their method's name, so checkpoints hold
// "fitnet.conv_reg.conv.weight" and resume works as for a single method.
//
// ---- Several teachers: their logits combined per sample before any method reads them
//     zt_b = sum_m a_bm z_m,b       m = 1..M teachers, sum_m a_bm = 1         (B, K)
//   teacher_combine=mean        a_bm = 1/M (the logits averaged: softmax(zt/T) is then the
//                               normalised geometric mean of the teachers' softened distributions)
//   teacher_combine=weighted    a_bm = c_m / sum_j c_j, c = teacher_weights_mix (0.7,0.3)
//   teacher_combine=confidence  CA-MKD's weights (H. Zhang, D. Chen, C. Wang, "Confidence-Aware
//                               Multi-Teacher Knowledge Distillation", ICASSP 2022; official
//                               code Rorozhl/CA-MKD, helper/loops.py, ensemble_method CAMKD):
//                               l_bm = CE(z_m,b, y_b) per sample, a_bm = (1 - softmax_m(l_b)_m) / (M - 1),
//                               so the teacher that is more right about sample b weighs more.
//   CA-MKD weighs each teacher's KD loss with a_bm; here a_bm mixes the teachers' logits, so that
//   the combined logits can feed any output-family method. Feature methods read the first
//   teacher's features (logits only are combined).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"

namespace kd::distill {

// ------------------------------------------------------------------ fusion

struct FusionSchedule {
  std::string kind = "constant";  // constant | warmup | cosine
  int64_t epochs = 0;             // warmup: E
};
// "constant", "warmup:5", "cosine" -> a schedule; errors name the accepted forms. `where` names
// the key in errors ("dkd.schedule").
FusionSchedule parse_fusion_schedule(const std::string& text, const std::string& where);
std::string to_string(const FusionSchedule& s);
// s(epoch), epoch counted from 1; total_epochs is the run's length (cosine needs it).
double fusion_schedule_factor(const FusionSchedule& s, int64_t epoch, int64_t total_epochs);

struct FusionComponent {
  std::string method;                     // registry name, also the prefix of parts and checkpoints
  std::shared_ptr<Distiller> distiller;
  double weight = 1.0;
  FusionSchedule schedule;
};

class FusionDistiller : public Distiller {
 public:
  FusionDistiller(std::vector<FusionComponent> components, double ce_weight);
  std::string name() const override;  // "dkd+at"
  std::string type_name() const override { return "Fusion"; }
  TeacherNeeds needs() const override;  // the union of the components'
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  // w_ce: the fusion's ce_weight, whatever the epoch.
  std::optional<double> ce_weight(const BatchInfo&) const override { return ce_weight_; }
  // ce_weight, then per component <method>.weight, <method>.schedule and <method>.<key> for
  // every key of the component's params().
  Params params() const override;
  // The first component's that reads virtual views; the components' artifacts.
  data::TransformConfig virtual_transform(const data::Dataset& d) const override;
  std::vector<Artifact> artifacts() const override;

  const std::vector<FusionComponent>& components() const { return components_; }

 private:
  std::vector<FusionComponent> components_;
  double ce_weight_;
};

// Whether a method name is a fusion ("a+b").
bool is_fusion_name(const std::string& name);
// "dkd+at" -> {"dkd", "at"}; errors on an empty name ("dkd+") or a repeated one ("kd+kd").
std::vector<std::string> split_fusion_name(const std::string& name);
// Routes ce_weight, <method>.weight, <method>.schedule, <method>.param.<key> and <method>.<key>,
// creates every component with create_distiller. Unknown prefixes and bare keys are errors that
// list the components.
std::shared_ptr<Distiller> make_fusion_distiller(const std::string& name, const Params& params,
                                                 const DistillerContext& ctx);

// Calls f on `d`, or on each component when d is a fusion (to find a method's hooks: DGKD's
// assistant logits, WKD-L's cost matrix).


// ------------------------------------------------------------------ several teachers

struct TeacherCombine {
  std::string rule = "mean";   // mean | weighted | confidence
  std::vector<double> mix;     // weighted: one positive number per teacher
};
// Checks a rule against the number of teachers M; errors name the rule and the fix.
void check_teacher_combine(const TeacherCombine& c, size_t num_teachers);
// The mixing weights a (B, M) of M teachers' logits (each (B, K)) for labels (B); rows sum to 1.
Tensor teacher_mix_weights(const std::vector<Tensor>& logits, const Tensor& labels, const TeacherCombine& c);
// zt (B, K) = sum_m a[:, m] * logits[m], without gradient. One teacher: its logits unchanged.
Tensor combine_teacher_logits(const std::vector<Tensor>& logits, const Tensor& labels, const TeacherCombine& c);

}  // namespace kd::distill
