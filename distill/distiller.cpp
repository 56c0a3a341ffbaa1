// distiller.cpp: ParamReader, and the one explicit table of distillation methods.
//
// Adding a method = writing its file under distill/<family>/ and adding one row to
// distiller_registry() below. Nothing registers itself from a static initialiser.
#include "distill/distiller.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/feature/at.h"
#include "distill/feature/catkd.h"
#include "distill/feature/fitnet.h"
#include "distill/feature/hcd.h"
#include "distill/feature/wkd_f.h"
#include "distill/distill_run.h"
#include "distill/fusion.h"
#include "distill/output/acd_u.h"
#include "distill/output/dgkd.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "distill/output/wkd_l.h"
#include "distill/relation/cc.h"
#include "distill/relation/pkt.h"
#include "distill/relation/relation.h"
#include "distill/relation/rkd.h"
#include "distill/relation/sp.h"
#include "distill/relation/london.h"
#include "distill/relation/vrm.h"

namespace kd::distill {

// ------------------------------------------------------------------------------- ParamReader

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

}  // namespace

double ParamReader::number(const std::string& key, double def) {
  known_.push_back(key);
  auto it = p_.find(key);
  if (it == p_.end()) return def;
  const std::string& text = it->second;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  KD_CHECK(!text.empty() && end == text.c_str() + text.size() && errno != ERANGE,
           "{}: parameter {}={} is not a number; write it like {}={}", method_, key, text, key, def);
  return v;
}

int64_t ParamReader::integer(const std::string& key, int64_t def) {
  known_.push_back(key);
  auto it = p_.find(key);
  if (it == p_.end()) return def;
  const std::string& text = it->second;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  KD_CHECK(!text.empty() && end == text.c_str() + text.size() && errno != ERANGE,
           "{}: parameter {}={} is not an integer; write it like {}={}", method_, key, text, key, def);
  return (int64_t)v;
}

bool ParamReader::flag(const std::string& key, bool def) {
  known_.push_back(key);
  auto it = p_.find(key);
  if (it == p_.end()) return def;
  const std::string v = lower(it->second);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  KD_CHECK(false, "{}: parameter {}={} is not a boolean; use {}=true or {}=false", method_, key, it->second, key, key);
  return def;
}

std::string ParamReader::text(const std::string& key, const std::string& def) {
  known_.push_back(key);
  auto it = p_.find(key);
  return it == p_.end() ? def : it->second;
}

void ParamReader::finish() const {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : p_)
    if (std::find(known_.begin(), known_.end(), key) == known_.end()) unknown.push_back(key);
  if (unknown.empty()) return;
  std::vector<std::string> known = known_;
  std::sort(known.begin(), known.end());
  known.erase(std::unique(known.begin(), known.end()), known.end());
  KD_CHECK(false, "{}: unknown parameter{} {}; the parameters of {} are: {}", method_, unknown.size() > 1 ? "s" : "",
           fmt::join(unknown, ", "), method_, fmt::join(known, ", "));
}

// ------------------------------------------------------------------------------- the registry

const std::vector<DistillerEntry>& distiller_registry() {
  static const std::vector<DistillerEntry> table = {
      {"kd", "output", "Hinton, Vinyals, Dean 2015: match the teacher's softened class probabilities (KL at temperature T)",
       make_kd_distiller},
      {"dkd", "output", "Zhao et al. CVPR 2022: KD decoupled into target-class (TCKD) and non-target-class (NCKD) terms",
       make_dkd_distiller},
      {"dgkd", "output", "Son et al. ICCV 2021: KD from the teacher and every teacher assistant, guides dropped at random",
       make_dgkd_distiller},
      {"wkd_l", "output", "Lv, Yang, Li NeurIPS 2024: Wasserstein distance between non-target distributions (Sinkhorn)",
       make_wkd_l_distiller},
      {"fitnet", "feature", "Romero et al. ICLR 2015: a regressor maps the student's guided layer onto the teacher's hint (MSE)",
       make_fitnet_distiller},
      {"at", "feature", "Zagoruyko & Komodakis ICLR 2017: match normalised spatial attention maps at several stages",
       make_at_distiller},
      {"wkd_f", "feature", "Lv, Yang, Li NeurIPS 2024: Wasserstein distance between per-channel Gaussians of features",
       make_wkd_f_distiller},
      {"catkd", "feature", "Guo et al. CVPR 2023: match the teacher's class activation maps, pooled to r x r (MSE)",
       make_catkd_distiller},
      {"hcd", "feature", "Xu et al. AAAI 2026: student stage + teacher feature -> shared logits, n sub-logits fused with the "
       "teacher's (CE, KD), kept diverse (orthogonality)",
       make_hcd_distiller},
      {"rkd", "relation", "Park et al. CVPR 2019: match the normalised pairwise distances and triplet angles of pooled features",
       make_rkd_distiller},
      {"sp", "relation", "Tung & Mori ICCV 2019: match the row-normalised Gram matrices (sample similarities) of a stage",
       make_sp_distiller},
      {"pkt", "relation", "Passalis & Tefas ECCV 2018: KL between cosine-kernel neighbour distributions of pooled features",
       make_pkt_distiller},
      {"cc", "relation", "Peng et al. ICCV 2019: correlation congruence (RepDistiller's code: embeddings, neighbour products)",
       make_cc_distiller},
      {"relation", "relation", "Yang et al. 2023 survey form: sum_ij d(psi_s, psi_t), psi and d chosen by name (--set psi= d=)",
       make_relation_distiller},
      {"london", "relation", "Shang et al. ICCV 2021: match the spectral norms of consecutive stages' transmitting matrices",
       make_london_distiller},
      {"vrm", "relation", "Zhang et al. ICCV 2025: match pruned inter-sample/inter-class logit edges of real and virtual views",
       make_vrm_distiller},
      // methods with a training regime of their own (no Distiller)
      {"baseline", "-", "no teacher: plain cross-entropy training, the control every distillation table compares with",
       nullptr, run_baseline},
      {"acd_u", "output", "Fukunaga 2026 (ACD-U): noisy labels; two networks co-teach, GMM split, selective unlearning",
       nullptr, run_acd_u_method},
  };
  return table;
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
