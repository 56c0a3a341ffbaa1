// dgkd.cpp: DGKD (Son et al. 2021), the official train.py loss with a true batch-mean KL. The
// equation is in dgkd.h.
#include "distill/output/dgkd.h"

#include "engine/ops.h"

namespace kd::distill {

std::string dgkd_guide_name(size_t g) { return g == 0 ? "teacher" : "assistant" + std::to_string(g); }

std::vector<bool> dgkd_draw_kept(size_t n_guides, int64_t drop_num, Generator& gen) {
  KD_CHECK(drop_num >= 0 && (size_t)drop_num < n_guides,
           "dgkd: drop_num={} with {} guide(s) (teacher + {} assistant(s)); drop_num must be in [0, {}] so that at least "
           "one guide is kept: give more assistants or --set drop_num=0",
           drop_num, n_guides, n_guides - 1, n_guides - 1);
  std::vector<bool> kept(n_guides, true);
  // As the official code: drop_num times, remove a guide chosen uniformly from those still kept.
  for (int64_t d = 0; d < drop_num; ++d) {
    std::vector<size_t> remaining;
    for (size_t g = 0; g < n_guides; ++g)
      if (kept[g]) remaining.push_back(g);
    kept[remaining[(size_t)gen.randint(0, (int64_t)remaining.size())]] = false;
  }
  return kept;
}

LossBreakdown dgkd_loss(const Tensor& zs, const std::vector<Tensor>& guide_logits, const Tensor& labels,
                        const std::vector<bool>& kept, const DgkdOptions& opt, const ExplainFn& explain) {
  KD_CHECK(!guide_logits.empty(), "dgkd: no guides; pass the teacher's logits (and the assistants')");
  KD_CHECK(kept.size() == guide_logits.size(), "dgkd: {} kept flags for {} guides; give one per guide", kept.size(),
           guide_logits.size());
  for (size_t g = 0; g < guide_logits.size(); ++g)
    check_logits_labels("dgkd (" + dgkd_guide_name(g) + ")", zs, guide_logits[g], labels);
  KD_CHECK(opt.T > 0, "dgkd: the temperature T must be > 0, got {}", opt.T);
  const double T = opt.T;

  Tensor log_ps = log_softmax(div(zs, T), 1);  // (B, K)
  show_step(explain, "log_ps", log_ps);

  LossBreakdown out;
  Tensor total;  // lambda * T^2 * sum over the kept guides of l_g
  Tensor kept_flags = empty({(int64_t)kept.size()});
  for (size_t g = 0; g < guide_logits.size(); ++g) {
    const std::string name = dgkd_guide_name(g);
    kept_flags.data<float>()[g] = kept[g] ? 1.f : 0.f;
    Tensor p_g = softmax(div(guide_logits[g].detach(), T), 1);        // (B, K), a frozen guide
    Tensor kl_b = sum(kl_div(log_ps, p_g, Reduction::None), {1});    // (B) KL(p_g,b || ps_b)
    Tensor l_g = mean(kl_b);                                         // () true batch mean
    show_step(explain, "p_" + name, p_g);
    show_step(explain, "kl_b_" + name, kl_b);
    show_step(explain, "l_" + name, l_g);
    if (kept[g]) {
      Tensor part = mul(l_g, opt.lambda * T * T);  // lambda * T^2 * l_g
      total = total.defined() ? add(total, part) : part;
      out.parts.push_back({"kd_" + name, part});
    } else {
      out.parts.push_back({"kd_" + name, scalar_tensor(0.0)});
    }
  }
  show_step(explain, "kept", kept_flags);
  out.total = total;
  return out;  // distill_loss adds w_ce * CE(zs, y), w_ce = 1 - lambda by default
}

LossBreakdown DgkdDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher, const BatchInfo& batch) {
  std::vector<Tensor> guides{teacher.logits};
  for (const Tensor& a : batch.assistant_logits) guides.push_back(a);
  if (batch.batch_index >= 0) {
    Generator step_gen(seed_ * 0x9E3779B97F4A7C15ull + (uint64_t)batch.epoch * 1000003ull + (uint64_t)batch.batch_index);
    last_kept_ = dgkd_draw_kept(guides.size(), opt_.drop_num, step_gen);
  } else {
    last_kept_ = dgkd_draw_kept(guides.size(), opt_.drop_num, gen_);
  }
  return dgkd_loss(student.logits, guides, batch.labels, last_kept_, opt_, explain);
}

Params DgkdDistiller::params() const { return option_params(opt_); }

std::shared_ptr<Distiller> make_dgkd_distiller(const Params& params, const DistillerContext& ctx) {
  DgkdOptions o = parse_options<DgkdOptions>("dgkd", params);
  if (!params.count("ce_weight")) o.ce_weight = 1.0 - o.lambda;  // the official (1 - lambda) * CE
  KD_CHECK(o.T > 0, "dgkd: the temperature T must be > 0, got T={}", o.T);
  KD_CHECK(o.drop_num >= 0, "dgkd: drop_num must be >= 0, got {}", o.drop_num);
  return std::make_shared<DgkdDistiller>(o, ctx.seed);
}

}  // namespace kd::distill
