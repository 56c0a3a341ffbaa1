// dgkd.h: DGKD, densely guided knowledge distillation with teacher assistants.
//
// Paper: W. Son, J. Na, J. Choi, W. Hwang, "Densely Guided Knowledge Distillation using Multiple
//        Teacher Assistants", ICCV 2021 (arXiv 2009.08825). Official code: wonchulSon/DGKD,
//        train.py (TrainManager.train).
//
// Equation (guides g = teacher, A1, ..., An of decreasing size; temperature T; B samples):
//     ps = softmax(zs / T),  p_g = softmax(z_g / T)                   (B, K)
//     l_g = (1/B) * sum_b KL(p_g,b || ps_b)                             one KD term per guide
//     stochastic DGKD: per mini-batch drop `drop_num` guides uniformly at random (any of them,
//                      the teacher included); S = the kept guides
//     L = w_ce * CE(zs, y) + lambda * T^2 * sum_{g in S} l_g            (an unnormalised sum)
//         (w_ce * CE added by distill_loss, distiller.h)
// Assistants are trained in sequence, largest first, each distilled from all larger guides; the
// student is distilled from all of them. Every guide is frozen (eval mode, no gradient).
//
// Official-code semantics reproduced (train.py):
//   - loss = (1 - lambda) * CE + lambda * T * T * sum(loss_KD_list), default T = 5, lambda = 1
//     (so the released default switches CE off): here w_ce is an explicit parameter whose
//     default is 1 - lambda, the official value;
//   - dropping: `drop_num` times, remove random.choice(list) from the list of guide losses, i.e.
//     a uniformly random subset of drop_num guides is dropped, drawn anew every mini-batch (here
//     from a Generator the distiller owns, seeded from DistillerContext::seed);
// Where we differ: each l_g is the true batch-mean KL. The released code uses nn.KLDivLoss()
// with its default 'mean' reduction, which also divides by K (a known bug that shrinks the KD
// terms K-fold). drop_num must leave at least one guide (the official code would raise on an
// empty list or silently train with CE alone).
//
// How the guides reach the loss: the teacher's logits are teacher.logits; the assistants' logits
// are BatchInfo::assistant_logits (one (B, K) tensor per assistant, largest assistant first),
// which the run fills because needs() declares `assistants`.
//
// Parameters (--set): the option table DgkdOptions::for_each_option below, with the defaults and
// what each means (`kdlab distill --list --method dgkd`).
// Loss parts (after distill_loss's "ce"): "kd_teacher", "kd_assistant1", ... = lambda * T^2 * l_g
// for a kept guide and 0 for a dropped one (so every batch logs the same names).
#pragma once
#include <vector>

#include "distill/distiller.h"
#include "distill/output/common.h"
#include "engine/generator.h"

namespace kd::distill {

struct DgkdOptions {
  double T = 5.0;
  double lambda = 1.0;
  double ce_weight = 0.0;  // 1 - lambda unless given (make_dgkd_distiller)
  int64_t drop_num = 1;
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {  // the option table (distill/options.h)
    f("T", o.T, "temperature of the student's and every guide's softmax");
    f("lambda", o.lambda, "weight of the KD sum, lambda * T^2 * sum of the kept guides' l_g");
    f("ce_weight", o.ce_weight, "w_ce, the weight of CE(zs, y); when not given: 1 - lambda (the official weight)");
    f("drop_num", o.drop_num, "guides dropped at random per mini-batch (the teacher may be one)");
  }
};

// guide_logits: teacher first, then the assistants, each (B, K) like zs. kept[g]: whether guide
// g is in this batch's sum (same length as guide_logits). Intermediates shown: log_ps, then per
// guide p_<name>, kl_b_<name>, l_<name>, and kept. The method's terms only (add_cross_entropy
// adds the CE for the whole L).
LossBreakdown dgkd_loss(const Tensor& zs, const std::vector<Tensor>& guide_logits, const Tensor& labels,
                        const std::vector<bool>& kept, const DgkdOptions& opt, const ExplainFn& explain = {});

// "teacher", "assistant1", "assistant2", ... for guide index 0, 1, 2, ...
std::string dgkd_guide_name(size_t g);

// Which of n guides are kept: drop_num of them, chosen uniformly without replacement, are not.
std::vector<bool> dgkd_draw_kept(size_t n_guides, int64_t drop_num, Generator& gen);

class DgkdDistiller : public Distiller {
 public:
  DgkdDistiller(const DgkdOptions& opt, uint64_t seed) : opt_(opt), seed_(seed), gen_(seed) {}
  std::string name() const override { return "dgkd"; }
  std::string type_name() const override { return "DGKD"; }
  TeacherNeeds needs() const override { return {.assistants = true}; }
  // Draws the kept guides, then computes dgkd_loss with teacher.logits followed by
  // batch.assistant_logits. In a training run (batch.batch_index >= 0) the draw comes from a generator
  // seeded by (seed, epoch, batch index), so a resumed run drops the same guides as an
  // uninterrupted one; otherwise (the loss inspector) from the distiller's running generator.
  LossBreakdown loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) override;
  std::optional<double> ce_weight(const BatchInfo&) const override { return opt_.ce_weight; }
  Params params() const override;
  const DgkdOptions& options() const { return opt_; }

  // The guides kept in the last call to loss() (teacher first).
  const std::vector<bool>& last_kept() const { return last_kept_; }
  Generator& generator() { return gen_; }  // for checkpointing its state

 private:
  DgkdOptions opt_;
  uint64_t seed_;
  Generator gen_;
  std::vector<bool> last_kept_;
};

std::shared_ptr<Distiller> make_dgkd_distiller(const Params& params, const DistillerContext& ctx);

}  // namespace kd::distill
