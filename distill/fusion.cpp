// fusion.cpp: fusion of distillers and the combination of several teachers. The equations and
// the rules for parameters and CE are in fusion.h.
#include "distill/fusion.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <numbers>

#include "distill/output/common.h"
#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

// ------------------------------------------------------------------ schedules

FusionSchedule parse_fusion_schedule(const std::string& text, const std::string& where) {
  FusionSchedule s;
  if (text == "constant" || text == "cosine") {
    s.kind = text;
    return s;
  }
  if (text.rfind("warmup:", 0) == 0) {
    const std::string e = text.substr(7);
    char* end = nullptr;
    long long v = std::strtoll(e.c_str(), &end, 10);
    KD_CHECK(!e.empty() && end == e.c_str() + e.size() && v >= 1,
             "{}={}: the warm-up length must be a whole number of epochs >= 1, like {}=warmup:5", where, text, where);
    s.kind = "warmup";
    s.epochs = (int64_t)v;
    return s;
  }
  KD_CHECK(false, "{}={} is not a schedule; use constant, warmup:E (a linear ramp over E epochs) or cosine (decay "
                  "over the run)", where, text);
  return s;
}

std::string to_string(const FusionSchedule& s) {
  return s.kind == "warmup" ? fmt::format("warmup:{}", s.epochs) : s.kind;
}

double fusion_schedule_factor(const FusionSchedule& s, int64_t epoch, int64_t total_epochs) {
  KD_CHECK(epoch >= 1, "fusion schedule: epoch {} given; epochs are counted from 1", epoch);
  if (s.kind == "constant") return 1.0;
  if (s.kind == "warmup") return std::min((double)epoch / (double)s.epochs, 1.0);  // min(epoch / E, 1)
  KD_CHECK(s.kind == "cosine", "fusion schedule: unknown kind '{}'", s.kind);
  KD_CHECK(total_epochs >= 1,
           "fusion schedule cosine decays over the run's epochs, but the number of epochs is not known (kdlab loss: "
           "give --total-epochs N)");
  // (1 + cos(pi (epoch - 1) / N)) / 2: 1 at epoch 1, towards 0 at epoch N
  return 0.5 * (1.0 + std::cos(std::numbers::pi * (double)(epoch - 1) / (double)total_epochs));
}

// ------------------------------------------------------------------ the fusion

FusionDistiller::FusionDistiller(std::vector<FusionComponent> components, double ce_weight)
    : components_(std::move(components)), ce_weight_(ce_weight) {
  KD_CHECK(!components_.empty(), "fusion: no components");
  // The helpers of each component (regressors, projectors) live under its method's name:
  // "fitnet.conv_reg.conv.weight" in checkpoints and in named_parameters().
  for (FusionComponent& c : components_) register_module(c.method, c.distiller);
}

std::string FusionDistiller::name() const {
  std::vector<std::string> names;
  for (const FusionComponent& c : components_) names.push_back(c.method);
  return fmt::format("{}", fmt::join(names, "+"));
}

TeacherNeeds FusionDistiller::needs() const {
  TeacherNeeds n;
  for (const FusionComponent& c : components_) {
    const TeacherNeeds m = c.distiller->needs();
    n.feats = n.feats || m.feats;
    n.pooled = n.pooled || m.pooled;
    n.virtual_views = n.virtual_views || m.virtual_views;
    n.assistants = n.assistants || m.assistants;
    n.class_cost = n.class_cost || m.class_cost;
  }
  return n;
}

data::TransformConfig FusionDistiller::virtual_transform(const data::Dataset& d) const {
  for (const FusionComponent& c : components_)
    if (c.distiller->needs().virtual_views) return c.distiller->virtual_transform(d);
  return Distiller::virtual_transform(d);  // none reads virtual views: the error
}

std::vector<Artifact> FusionDistiller::artifacts() const {
  std::vector<Artifact> all;
  for (const FusionComponent& c : components_)
    for (const Artifact& a : c.distiller->artifacts()) all.push_back(a);
  return all;
}

LossBreakdown FusionDistiller::loss(const nn::ModelOutput& student, const nn::ModelOutput& teacher,
                                    const BatchInfo& batch) {
  LossBreakdown out;
  Tensor total;  // sum_i w_i * s_i(epoch) * L_i (distill_loss adds w_ce * CE once)
  for (FusionComponent& c : components_) {
    const std::string prefix = c.method + ".";
    if (explain) {  // the component's steps, named "<method>.<step>"
      c.distiller->explain = [this, prefix](const std::string& n, const Tensor& v) { explain(prefix + n, v); };
    } else {
      c.distiller->explain = nullptr;
    }
    const double factor = c.weight * fusion_schedule_factor(c.schedule, batch.epoch, batch.total_epochs);
    if (explain) show(prefix + "factor", scalar_tensor(factor));  // w_i * s_i(epoch)
    LossBreakdown lb = c.distiller->loss(student, teacher, batch);

    // The contract this rests on: a method's parts add up to its total.
    double sum_parts = 0;
    for (const auto& [n, t] : lb.parts) sum_parts += t.item();
    const double tot = lb.total.item();
    KD_CHECK(std::abs(sum_parts - tot) <= 1e-4 * (1.0 + std::abs(tot)) || !std::isfinite(tot),
             "fusion: the parts of {} add up to {} but its total is {}; a method's named parts must add up to its "
             "loss to be fused",
             c.method, sum_parts, tot);

    for (const auto& [n, t] : lb.parts) {
      Tensor scaled = factor == 1.0 ? t : mul(t, factor);  // L_i part by part, times w_i s_i
      out.parts.push_back({prefix + n, scaled});
      total = total.defined() ? add(total, scaled) : scaled;
    }
  }
  out.total = total;
  return out;
}

Params FusionDistiller::params() const {
  Params p{{"ce_weight", format_number(ce_weight_)}};
  for (const FusionComponent& c : components_) {
    p[c.method + ".weight"] = format_number(c.weight);
    p[c.method + ".schedule"] = to_string(c.schedule);
    for (const auto& [k, v] : c.distiller->params()) {
      const bool shadowed = k == "weight" || k == "schedule";  // reached as <method>.param.<key>
      p[c.method + (shadowed ? ".param." : ".") + k] = v;
    }
  }
  return p;
}

namespace {

// A component's own keys, <method>.weight and <method>.schedule (the option table, options.h).
struct ComponentOptions {
  double weight = 1.0;
  std::string schedule = "constant";
  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {
    f("weight", o.weight, "w_i, the weight of the component's terms");
    f("schedule", o.schedule, "s_i(epoch): constant, warmup:E or cosine");
  }
};

}  // namespace

bool is_fusion_name(const std::string& name) { return name.find('+') != std::string::npos; }

std::vector<std::string> split_fusion_name(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t plus = name.find('+', start);
    parts.push_back(name.substr(start, plus == std::string::npos ? std::string::npos : plus - start));
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    KD_CHECK(!parts[i].empty(), "fusion '{}': an empty method name; join methods with '+', like dkd+at", name);
    for (size_t j = 0; j < i; ++j)
      KD_CHECK(parts[j] != parts[i], "fusion '{}': {} appears twice; name each method once and set its weight with "
                                     "--set {}.weight=W", name, parts[i], parts[i]);
  }
  return parts;
}

std::shared_ptr<Distiller> make_fusion_distiller(const std::string& name, const Params& params,
                                                 const DistillerContext& ctx) {
  const std::vector<std::string> methods = split_fusion_name(name);
  std::vector<Params> own(methods.size()), inner(methods.size());
  std::string ce_text;
  for (const auto& [key, value] : params) {
    if (key == "ce_weight") {
      ce_text = value;
      continue;
    }
    const size_t dot = key.find('.');
    const std::string prefix = dot == std::string::npos ? std::string() : key.substr(0, dot);
    auto it = std::find(methods.begin(), methods.end(), prefix);
    KD_CHECK(dot != std::string::npos && it != methods.end(),
             "fusion {}: parameter '{}' names no component; write <method>.{} with a method of the fusion ({}), or "
             "ce_weight for the one CE term",
             name, key, dot == std::string::npos ? key : key.substr(dot + 1), fmt::join(methods, ", "));
    const size_t i = (size_t)(it - methods.begin());
    const std::string rest = key.substr(dot + 1);
    if (rest == "weight" || rest == "schedule") own[i][rest] = value;
    else if (rest.rfind("param.", 0) == 0) inner[i][rest.substr(6)] = value;
    else inner[i][rest] = value;
  }

  std::vector<FusionComponent> components;
  for (size_t i = 0; i < methods.size(); ++i) {
    FusionComponent c;
    c.method = methods[i];
    c.distiller = create_distiller(methods[i], inner[i], ctx);
    KD_CHECK(c.distiller->regime_of_its_own().empty(),
             "fusion {}: {} is a training regime of its own and cannot be one part of a fusion; run it alone "
             "(kdlab distill --method {}), or fuse the method's single-stage form",
             name, c.distiller->regime_of_its_own(), methods[i]);
    const ComponentOptions o = parse_options<ComponentOptions>(methods[i] + " (in " + name + ")", own[i]);
    c.weight = o.weight;
    c.schedule = parse_fusion_schedule(o.schedule, methods[i] + ".schedule");
    KD_CHECK(c.weight >= 0 && std::isfinite(c.weight), "fusion {}: {}.weight={} must be a finite number >= 0", name,
             methods[i], c.weight);
    components.push_back(std::move(c));
  }
  // CE once: the first component's weight unless ce_weight is given
  double ce_weight = 1.0;
  const Params first = components[0].distiller->params();
  if (auto it = first.find("ce_weight"); it != first.end()) ce_weight = std::strtod(it->second.c_str(), nullptr);
  if (!ce_text.empty()) read_option(name, "ce_weight", ce_text, ce_weight);
  return std::make_shared<FusionDistiller>(std::move(components), ce_weight);
}

// ------------------------------------------------------------------ several teachers

void check_teacher_combine(const TeacherCombine& c, size_t M) {
  KD_CHECK(c.rule == "mean" || c.rule == "weighted" || c.rule == "confidence",
           "teacher_combine={} is not a rule; use mean, weighted (with teacher_weights_mix=0.7,0.3) or confidence "
           "(CA-MKD's per-sample weights)", c.rule);
  KD_CHECK(c.rule == "weighted" || c.mix.empty(),
           "teacher_weights_mix is read by teacher_combine=weighted only (the rule is {}); add "
           "--set teacher_combine=weighted or remove teacher_weights_mix", c.rule);
  if (c.rule == "weighted") {
    KD_CHECK(c.mix.size() == M, "teacher_combine=weighted: teacher_weights_mix has {} numbers for {} teachers; give one "
                                "per teacher, in the order of the teachers, like teacher_weights_mix=0.7,0.3",
             c.mix.size(), M);
    double s = 0;
    for (double w : c.mix) {
      KD_CHECK(w >= 0 && std::isfinite(w), "teacher_weights_mix: {} is not a weight >= 0", w);
      s += w;
    }
    KD_CHECK(s > 0, "teacher_weights_mix: the weights add up to 0; give at least one positive weight");
  }
}

Tensor teacher_mix_weights(const std::vector<Tensor>& logits, const Tensor& labels, const TeacherCombine& c) {
  const size_t M = logits.size();
  KD_CHECK(M >= 1, "combining teachers: no teacher logits");
  check_teacher_combine(c, M);
  const int64_t B = logits[0].size(0);
  NoGradGuard ng;  // the teachers are constants of the loss
  if (c.rule == "mean" || M == 1) return full({B, (int64_t)M}, 1.0 / (double)M);  // (B, M)
  if (c.rule == "weighted") {
    double s = 0;
    for (double w : c.mix) s += w;
    std::vector<float> row;
    for (int64_t b = 0; b < B; ++b)
      for (double w : c.mix) row.push_back((float)(w / s));
    return from_vector(row, {B, (int64_t)M});  // (B, M), every row c / sum(c)
  }
  // confidence (CA-MKD): l_bm = CE of teacher m on sample b; a_bm = (1 - softmax_m(l_b)) / (M - 1)
  CrossEntropyOptions per_sample;
  per_sample.reduction = Reduction::None;
  std::vector<Tensor> ce_m;
  for (const Tensor& z : logits) ce_m.push_back(cross_entropy(z, labels, per_sample));  // (B)
  Tensor l = stack(ce_m, 1);                                                  // (B, M)
  return div(rsub(1.0, softmax(l, 1)), (double)(M - 1));                      // (B, M)
}

Tensor combine_teacher_logits(const std::vector<Tensor>& logits, const Tensor& labels, const TeacherCombine& c) {
  KD_CHECK(!logits.empty(), "combining teachers: no teacher logits");
  for (const Tensor& z : logits)
    KD_CHECK(z.shape() == logits[0].shape(), "combining teachers: logits of shape {} and {}; every teacher must output "
                                             "(B, K) for the same classes", shape_str(logits[0].shape()),
             shape_str(z.shape()));
  if (logits.size() == 1) return logits[0].detach();
  NoGradGuard ng;
  Tensor a = teacher_mix_weights(logits, labels, c);  // (B, M)
  Tensor zt;
  for (size_t m = 0; m < logits.size(); ++m) {
    Tensor term = mul(logits[m].detach(), a.slice(1, (int64_t)m, (int64_t)m + 1));  // (B, K) * (B, 1)
    zt = m == 0 ? term : add(zt, term);
  }
  return zt;  // (B, K)
}

}  // namespace kd::distill
