// distiller.cpp: the one place cross-entropy is added to a method's terms (distill_loss), and the
// one explicit table of distillation methods.
//
// Adding a method = writing its file under distill/<family>/ and adding one row to
// distiller_registry() below: name, family, description, factory and option table. Nothing
// registers itself from a static initialiser.
#include "distill/distiller.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/feature/at.h"
#include "distill/feature/catkd.h"
#include "distill/cross_modal/supervision_transfer.h"
#include "distill/feature/fitnet.h"
#include "distill/feature/fitnet_run.h"
#include "distill/feature/hcd.h"
#include "distill/feature/wkd_f.h"
#include "distill/distill_run.h"
#include "distill/fusion.h"
#include "distill/output/acd_u.h"
#include "distill/output/dgkd.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "distill/output/common.h"
#include "distill/output/wkd_l.h"
#include "distill/relation/cc.h"
#include "distill/relation/pkt.h"
#include "distill/relation/relation.h"
#include "distill/relation/rkd.h"
#include "distill/relation/sp.h"
#include "distill/relation/london.h"
#include "distill/relation/vrm.h"
#include "engine/ops.h"

namespace kd::distill {

// ------------------------------------------------------------------------------- CE, once

LossBreakdown add_cross_entropy(const LossBreakdown& own, const Tensor& zs, const Tensor& labels, double ce_weight,
                                const ExplainFn& explain, double label_smoothing) {
  CrossEntropyOptions ce_opt;
  ce_opt.label_smoothing = label_smoothing;
  Tensor ce = cross_entropy(zs, labels, ce_opt);  // () CE(zs, y)
  show_step(explain, "ce", ce);
  Tensor ce_part = mul(ce, ce_weight);  // () w_ce * CE
  LossBreakdown out;
  out.total = add(ce_part, own.total);  // L = w_ce * CE + the method's terms
  out.parts.push_back({"ce", ce_part});
  out.parts.insert(out.parts.end(), own.parts.begin(), own.parts.end());
  show_step(explain, "loss", out.total);
  return out;
}

LossBreakdown distill_loss(Distiller& d, const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                           const BatchInfo& batch) {
  LossBreakdown own = d.loss(student, teacher, batch);  // the method's terms (its steps shown as it goes)
  const std::optional<double> w_ce = d.ce_weight(batch);
  if (!w_ce) {  // no CE this batch (FitNet's hint stage): the method's terms alone
    own.parts.insert(own.parts.begin(), {"ce", scalar_tensor(0.0)});
    if (d.explain) d.explain("loss", own.total);
    return own;
  }
  return add_cross_entropy(own, student.logits, batch.labels, *w_ce, d.explain, d.ce_label_smoothing());
}

// ------------------------------------------------------------------------------- the registry

const std::vector<DistillerEntry>& distiller_registry() {
  static const std::vector<DistillerEntry> table = {
      {"kd", "output", "Hinton, Vinyals, Dean 2015: match the teacher's softened class probabilities (KL at temperature T)",
       make_kd_distiller, option_infos<KdOptions>},
      {"dkd", "output", "Zhao et al. CVPR 2022: KD decoupled into target-class (TCKD) and non-target-class (NCKD) terms",
       make_dkd_distiller, option_infos<DkdOptions>},
      {"dgkd", "output", "Son et al. ICCV 2021: KD from the teacher and every teacher assistant, guides dropped at random",
       make_dgkd_distiller, option_infos<DgkdOptions>},
      {"wkd_l", "output", "Lv, Yang, Li NeurIPS 2024: Wasserstein distance between non-target distributions (Sinkhorn)",
       make_wkd_l_distiller, option_infos<WkdLOptions>},
      {"fitnet", "feature", "Romero et al. ICLR 2015: a regressor maps the student's guided layer onto the teacher's hint (MSE)",
       make_fitnet_distiller, option_infos<FitNetOptions>, run_fitnet_method},
      {"at", "feature", "Zagoruyko & Komodakis ICLR 2017: match normalised spatial attention maps at several stages",
       make_at_distiller, option_infos<AtOptions>},
      {"wkd_f", "feature", "Lv, Yang, Li NeurIPS 2024: Wasserstein distance between per-channel Gaussians of features",
       make_wkd_f_distiller, option_infos<WkdFOptions>},
      {"catkd", "feature", "Guo et al. CVPR 2023: match the teacher's class activation maps, pooled to r x r (MSE)",
       make_catkd_distiller, option_infos<CatKdOptions>},
      {"hcd", "feature", "Xu et al. AAAI 2026: student stage + teacher feature -> shared logits, n sub-logits fused with the "
       "teacher's (CE, KD), kept diverse (orthogonality)",
       make_hcd_distiller, option_infos<HcdOptions>},
      {"rkd", "relation", "Park et al. CVPR 2019: match the normalised pairwise distances and triplet angles of pooled features",
       make_rkd_distiller, option_infos<RkdOptions>},
      {"sp", "relation", "Tung & Mori ICCV 2019: match the row-normalised Gram matrices (sample similarities) of a stage",
       make_sp_distiller, option_infos<SpOptions>},
      {"pkt", "relation", "Passalis & Tefas ECCV 2018: KL between cosine-kernel neighbour distributions of pooled features",
       make_pkt_distiller, option_infos<PktOptions>},
      {"cc", "relation", "Peng et al. ICCV 2019: correlation congruence (RepDistiller's code: embeddings, neighbour products)",
       make_cc_distiller, option_infos<CcOptions>},
      {"relation", "relation", "Yang et al. 2023 survey form: sum_ij d(psi_s, psi_t), psi and d chosen by name (--set psi= d=)",
       make_relation_distiller, option_infos<RelationMethodOptions>},
      {"london", "relation", "Shang et al. ICCV 2021: match the spectral norms of consecutive stages' transmitting matrices",
       make_london_distiller, option_infos<LondonOptions>},
      {"vrm", "relation", "Zhang et al. ICCV 2025: match pruned inter-sample/inter-class logit edges of real and virtual views",
       make_vrm_distiller, option_infos<VrmOptions>},
      {"supervision_transfer", "cross-modal", "Gupta, Hoffman, Malik CVPR 2016: the student regresses the frozen teacher's "
       "mid-level map of the paired image in another modality through a 1x1 connector (L2), no labels",
       make_supervision_transfer_distiller, option_infos<SupervisionTransferOptions>},
      // methods with a training regime of their own (no Distiller)
      {"baseline", "-", "no teacher: plain cross-entropy training, the control every distillation table compares with",
       nullptr, [] { return std::vector<OptionInfo>{}; }, run_baseline},
      {"acd_u", "output", "Fukunaga 2026 (ACD-U): noisy labels; two networks co-teach, GMM split, selective unlearning",
       nullptr, option_infos<AcdUOptions>, run_acd_u_method},
  };
  return table;
}

data::TransformConfig Distiller::virtual_transform(const data::Dataset&) const {
  throw Error(fmt::format("{} reads no virtual views (its needs() does not ask for them)", name()));
}

const DistillerEntry& registry_entry(const std::string& name) {
  std::vector<std::string> names;
  for (const DistillerEntry& e : distiller_registry()) {
    if (e.name == name) return e;
    names.push_back(e.name);
  }
  throw Error(fmt::format("unknown distillation method '{}'; the known methods are: {} (or several joined by '+', "
                          "like dkd+at)", name, fmt::join(names, ", ")));
}

bool trains_with_distiller(const std::string& name) {
  return is_fusion_name(name) || registry_entry(name).create != nullptr;
}

std::shared_ptr<Distiller> create_distiller(const std::string& name, const Params& params, const DistillerContext& ctx) {
  if (is_fusion_name(name)) return make_fusion_distiller(name, params, ctx);  // "dkd+at" (distill/fusion.h)
  const DistillerEntry& e = registry_entry(name);
  KD_CHECK(e.create, "{} trains with a regime of its own ({}), not with a distillation loss: it cannot be fused or "
           "inspected with kdlab loss; run it with kdlab distill --method {}", name, e.description, name);
  return e.create(params, ctx);
}

}  // namespace kd::distill
