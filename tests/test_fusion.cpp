// Fusion of distillers and several teachers (distill/fusion.h): a fusion of one method is that
// method (loss and gradient); a fusion of several is the weighted sum of their parts with CE
// counted once; schedules; needs() is the union; helpers are registered under their method and
// resume; --set routing; the combination rules of several teachers; end-to-end kdlab distill
// runs with a fusion and with two teachers.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "distill/distill_run.h"
#include "distill/fusion.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "distill/output/wkd_cost.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/safetensors.h"
#include "distill_run_test_util.h"
#include "distill_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::outputs_of;
using kdtest::params_from;
using kdtest::part;
namespace fs = std::filesystem;

namespace {

// Student and teacher outputs with logits (B, K) and stage maps f1 (B, 8, 8, 8), f2 (B, 16, 4, 4),
// f3 (B, 32, 2, 2) for the student; the teacher's are wider.
struct Pair {
  nn::ModelOutput student, teacher;
  Tensor labels;
};

Pair make_pair(uint64_t seed, int64_t B = 6, int64_t K = 5) {
  Generator gen(seed);
  Pair p;
  p.student.logits = mul(randn({B, K}, gen), 2.0);
  p.teacher.logits = mul(randn({B, K}, gen), 3.0);
  p.labels = randint(0, K, {B}, gen);
  p.student.feats = {Tensor(), randn({B, 8, 8, 8}, gen), randn({B, 16, 4, 4}, gen), randn({B, 32, 2, 2}, gen)};
  p.teacher.feats = {Tensor(), randn({B, 16, 8, 8}, gen), randn({B, 32, 4, 4}, gen), randn({B, 64, 2, 2}, gen)};
  return p;
}

DistillerContext context_of(const Pair& p, uint64_t seed = 11) {
  DistillerContext ctx;
  ctx.student_sample = p.student;
  ctx.teacher_sample = p.teacher;
  ctx.num_classes = p.student.logits.size(1);
  ctx.seed = seed;
  return ctx;
}

// Fresh leaves (requires_grad) for the student's logits and maps, so each loss gets its own gradients.
nn::ModelOutput leaves(const nn::ModelOutput& o) {
  nn::ModelOutput r;
  r.logits = o.logits.detach().clone().requires_grad_();
  for (const Tensor& f : o.feats) r.feats.push_back(f.defined() ? f.detach().clone().requires_grad_() : Tensor());
  return r;
}

double max_abs_diff(const Tensor& a, const Tensor& b) { return max(abs(sub(a, b))).item(); }

BatchInfo batch_of(const Pair& p, int64_t epoch = 30, int64_t total = 40) {
  BatchInfo b;
  b.labels = p.labels;
  b.epoch = epoch;
  b.total_epochs = total;
  return b;
}

}  // namespace

TEST_CASE("a fusion of one method with weight 1 is that method: the same loss and the same gradient") {
  const Pair p = make_pair(1);
  struct Case {
    std::string method;
    Params params;  // the method's own
  };
  const std::vector<Case> cases{
      {"kd", {{"T", "2"}}},                      // output family
      {"dkd", {{"beta", "2"}, {"warmup", "5"}}},  // output family, with the method's own warm-up
      {"at", {}},                                 // feature family, no helper
      {"fitnet", {}},                             // feature family with a helper (same seed: same regressor)
      {"wkd_f", {{"weight", "1"}}},               // a parameter named like the fusion's key: wkd_f.param.weight
  };
  for (const Case& k : cases) {
    CAPTURE(k.method);
    auto alone = create_distiller(k.method, k.params, context_of(p));
    Params prefixed{{k.method + ".weight", "1"}};
    for (const auto& [key, v] : k.params) prefixed[k.method + ".param." + key] = v;
    auto fused = make_fusion_distiller(k.method, prefixed, context_of(p));  // a fusion of one component
    CHECK(fused->needs().feats == alone->needs().feats);
    // the same helper weights (drawn from the same seed), under the method's name
    auto alone_state = alone->state_dict();
    auto fused_state = fused->state_dict();
    REQUIRE(alone_state.size() == fused_state.size());
    for (size_t i = 0; i < alone_state.size(); ++i) {
      CHECK(fused_state[i].first == k.method + "." + alone_state[i].first);
      CHECK(max_abs_diff(fused_state[i].second.to(DType::f32), alone_state[i].second.to(DType::f32)) == 0.0);
    }

    nn::ModelOutput s1 = leaves(p.student), s2 = leaves(p.student);
    LossBreakdown a = distill_loss(*alone, s1, p.teacher, batch_of(p));
    LossBreakdown f = distill_loss(*fused, s2, p.teacher, batch_of(p));
    CHECK(f.total.item() == a.total.item());  // exactly
    REQUIRE(f.parts.size() == a.parts.size());
    CHECK(f.parts[0].first == "ce");
    for (size_t i = 0; i < a.parts.size(); ++i) {
      CHECK(f.parts[i].first == (a.parts[i].first == "ce" ? "ce" : k.method + "." + a.parts[i].first));
      CHECK(f.parts[i].second.item() == a.parts[i].second.item());
    }
    a.total.backward();
    f.total.backward();
    CHECK(max_abs_diff(s1.logits.grad(), s2.logits.grad()) <= 1e-7);
    for (size_t i = 1; i < s1.feats.size(); ++i) {
      CAPTURE(i);
      REQUIRE(s1.feats[i].grad().defined() == s2.feats[i].grad().defined());
      if (s1.feats[i].grad().defined()) CHECK(max_abs_diff(s1.feats[i].grad(), s2.feats[i].grad()) <= 1e-7);
    }
    // the helpers' gradients too
    auto pa = alone->named_parameters(), pf = fused->named_parameters();
    REQUIRE(pa.size() == pf.size());
    for (size_t i = 0; i < pa.size(); ++i) CHECK(max_abs_diff(pa[i].second.grad(), pf[i].second.grad()) <= 1e-7);
  }
}

TEST_CASE("a fusion of two methods is the weighted sum of their parts with CE counted once") {
  const Pair p = make_pair(2);
  const DistillerContext ctx = context_of(p);
  auto kd = create_distiller("kd", {{"T", "3"}}, ctx);
  auto dkd = create_distiller("dkd", {{"beta", "6"}, {"warmup", "0"}}, ctx);
  auto fused = create_distiller("kd+dkd",
                                {{"kd.T", "3"}, {"dkd.beta", "6"}, {"dkd.warmup", "0"}, {"kd.weight", "0.5"},
                                 {"dkd.weight", "2"}, {"ce_weight", "0.3"}},
                                ctx);
  CHECK(fused->name() == "kd+dkd");
  nn::ModelOutput s1 = leaves(p.student), s2 = leaves(p.student);
  LossBreakdown a = kd->loss(s1, p.teacher, batch_of(p));  // the methods' own terms, no CE
  LossBreakdown b = dkd->loss(s1, p.teacher, batch_of(p));
  LossBreakdown f = distill_loss(*fused, s2, p.teacher, batch_of(p));
  // L = 0.3 CE + 0.5 L_kd + 2 L_dkd
  const double ce = cross_entropy(p.student.logits, p.labels).item();
  Tensor expected = add(add(mul(cross_entropy(s1.logits, p.labels), 0.3), mul(a.total, 0.5)), mul(b.total, 2.0));
  CHECK(f.total.item() == doctest::Approx(expected.item()).epsilon(1e-6));
  CHECK(part(f, "ce") == doctest::Approx(0.3 * ce).epsilon(1e-6));
  CHECK(part(f, "kd.kd") == doctest::Approx(0.5 * part(a, "kd")).epsilon(1e-6));
  CHECK(part(f, "dkd.tckd") == doctest::Approx(2.0 * part(b, "tckd")).epsilon(1e-6));
  CHECK(part(f, "dkd.nckd") == doctest::Approx(2.0 * part(b, "nckd")).epsilon(1e-6));
  CHECK(f.parts.size() == 4);  // ce, kd.kd, dkd.tckd, dkd.nckd: CE once
  double sum_parts = 0;
  for (const auto& [n, t] : f.parts) sum_parts += t.item();
  CHECK(sum_parts == doctest::Approx(f.total.item()).epsilon(1e-6));
  expected.backward();
  f.total.backward();
  CHECK(max_abs_diff(s1.logits.grad(), s2.logits.grad()) < 1e-6);

  // ce_weight defaults to the first component's: kd's 0.1, dkd's 1
  CHECK(create_distiller("kd+dkd", {}, ctx)->ce_weight({}).value() == doctest::Approx(0.1));
  CHECK(create_distiller("dkd+kd", {}, ctx)->ce_weight({}).value() == doctest::Approx(1.0));
  CHECK(create_distiller("dkd+kd", {{"kd.ce_weight", "7"}}, ctx)->ce_weight({}).value() ==
        doctest::Approx(1.0));  // a component's ce_weight only chooses the default when it is the first
}

TEST_CASE("fusion schedules: constant, linear warm-up, cosine decay; the loss uses them") {
  CHECK(fusion_schedule_factor(parse_fusion_schedule("constant", "x"), 7, 10) == 1.0);
  const FusionSchedule w = parse_fusion_schedule("warmup:4", "x");
  CHECK(to_string(w) == "warmup:4");
  CHECK(fusion_schedule_factor(w, 1, 10) == doctest::Approx(0.25));
  CHECK(fusion_schedule_factor(w, 2, 10) == doctest::Approx(0.5));
  CHECK(fusion_schedule_factor(w, 4, 10) == 1.0);
  CHECK(fusion_schedule_factor(w, 9, 10) == 1.0);
  const FusionSchedule c = parse_fusion_schedule("cosine", "x");
  CHECK(fusion_schedule_factor(c, 1, 10) == doctest::Approx(1.0));
  CHECK(fusion_schedule_factor(c, 6, 10) == doctest::Approx(0.5));                  // (1 + cos(pi/2)) / 2
  CHECK(fusion_schedule_factor(c, 3, 10) == doctest::Approx(0.5 * (1 + std::cos(0.2 * 3.14159265358979))));
  CHECK(fusion_schedule_factor(c, 10, 10) == doctest::Approx(0.5 * (1 + std::cos(0.9 * 3.14159265358979))));
  CHECK_THROWS_WITH_SUBSTR(parse_fusion_schedule("warmup", "kd.schedule"), "constant, warmup:E");
  CHECK_THROWS_WITH_SUBSTR(parse_fusion_schedule("warmup:0", "kd.schedule"), ">= 1");
  CHECK_THROWS_WITH_SUBSTR(parse_fusion_schedule("linear", "kd.schedule"), "kd.schedule=linear");
  CHECK_THROWS_WITH_SUBSTR(fusion_schedule_factor(c, 1, 0), "--total-epochs");

  // in the loss: at epoch 2 of warmup:4 the kd terms are halved, dkd's (cosine over 10) scaled by s(2)
  const Pair p = make_pair(3);
  auto kd = create_distiller("kd", {}, context_of(p));
  auto dkd = create_distiller("dkd", {{"warmup", "0"}}, context_of(p));
  auto fused = create_distiller(
      "kd+dkd", {{"kd.schedule", "warmup:4"}, {"dkd.schedule", "cosine"}, {"dkd.weight", "3"}, {"dkd.warmup", "0"}},
      context_of(p));
  for (int64_t epoch : {1, 2, 5, 10}) {
    CAPTURE(epoch);
    LossBreakdown f = distill_loss(*fused, p.student, p.teacher, batch_of(p, epoch, 10));
    const double s_kd = std::min(epoch / 4.0, 1.0), s_dkd = 3.0 * fusion_schedule_factor(c, epoch, 10);
    CHECK(part(f, "kd.kd") == doctest::Approx(s_kd * part(kd->loss(p.student, p.teacher, batch_of(p, epoch, 10)), "kd")));
    CHECK(part(f, "dkd.nckd") ==
          doctest::Approx(s_dkd * part(dkd->loss(p.student, p.teacher, batch_of(p, epoch, 10)), "nckd")));
    CHECK(part(f, "ce") == doctest::Approx(0.1 * cross_entropy(p.student.logits, p.labels).item()));  // never scheduled
  }
  Params params = fused->params();
  CHECK(params.at("kd.schedule") == "warmup:4");
  CHECK(params.at("dkd.schedule") == "cosine");
  CHECK(params.at("dkd.weight") == "3");
  CHECK(params.at("dkd.beta") == "8");
  CHECK(params.at("ce_weight") == "0.1");
}

TEST_CASE("fusion: needs() is the union, and a feature component keeps the teacher cache off") {
  const Pair p = make_pair(4);
  CHECK(create_distiller("kd+dkd", {}, context_of(p))->needs().logits_only());
  CHECK(create_distiller("kd+at", {}, context_of(p))->needs().feats);
  CHECK(create_distiller("at+kd", {}, context_of(p))->needs().feats);
}

TEST_CASE("fusion: every component's helpers are registered under its name, trained and loadable") {
  const Pair p = make_pair(5);
  auto fused = create_distiller("fitnet+wkd_f+at", {{"wkd_f.param.weight", "2"}}, context_of(p));
  auto fitnet = create_distiller("fitnet", {}, context_of(p));
  auto wkd_f = create_distiller("wkd_f", {{"weight", "2"}}, context_of(p));
  CHECK(fused->params().at("wkd_f.param.weight") == "2");
  const size_t expected = fitnet->named_parameters().size() + wkd_f->named_parameters().size();
  REQUIRE(fused->named_parameters().size() == expected);
  int fit = 0, wkd = 0;
  for (const auto& [n, t] : fused->state_dict()) {
    fit += n.rfind("fitnet.conv_reg.", 0) == 0;
    wkd += n.rfind("wkd_f.", 0) == 0;
  }
  CHECK(fit == (int)fitnet->state_dict().size());
  CHECK(wkd == (int)wkd_f->state_dict().size());
  // the helpers get gradients from the fused loss
  LossBreakdown f = fused->loss(leaves(p.student), p.teacher, batch_of(p));
  f.total.backward();
  for (const auto& [n, t] : fused->named_parameters()) {
    CAPTURE(n);
    CHECK(t.grad().defined());
  }
  // a state dict saved from the fusion loads into a fresh one (what resume does)
  auto again = create_distiller("fitnet+wkd_f+at", {{"wkd_f.param.weight", "2"}}, context_of(p, 99));
  nn::NamedTensors state = fused->state_dict();
  for (auto& [n, t] : state) t = add(t.to(DType::f32), 0.5).to(t.dtype());
  CHECK(again->load_state_dict(state, /*strict=*/true).ok());
  CHECK(max_abs_diff(again->state_dict()[0].second, state[0].second) == 0.0);
}

TEST_CASE("fusion parameters: routing, and errors that name the fix") {
  const Pair p = make_pair(6);
  const DistillerContext ctx = context_of(p);
  auto f = create_distiller("dkd+at", {{"dkd.beta", "2"}, {"at.feat_weight", "500"}, {"at.weight", "0.5"}}, ctx);
  const auto& comps = dynamic_cast<FusionDistiller&>(*f).components();
  REQUIRE(comps.size() == 2);
  CHECK(comps[0].distiller->params().at("beta") == "2");
  CHECK(comps[1].distiller->params().at("feat_weight") == "500");
  CHECK(comps[1].weight == 0.5);
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd+at", {{"beta", "2"}}, ctx), "write <method>.beta");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd+at", {{"kd.T", "2"}}, ctx), "names no component");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd+at", {{"dkd.betta", "2"}}, ctx), "betta");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd+at", {{"dkd.weight", "-1"}}, ctx), ">= 0");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("dkd+at", {{"dkd.schedule", "sometimes"}}, ctx), "dkd.schedule");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd+kd", {}, ctx), "twice");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd+", {}, ctx), "empty method name");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd+nope", {}, ctx), "unknown distillation method 'nope'");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("kd+acd_u", {}, ctx), "cannot be fused");

  // kdlab distill's --set for a fusion: <method>.<key> kept whole, method.<key> for the fusion itself
  train::TrainConfig c;
  c.method = "dkd+at";
  train::apply_distill_override("dkd.beta=2", c);
  train::apply_distill_override("at.weight=0.5", c);
  train::apply_distill_override("at.schedule=warmup:3", c);
  train::apply_distill_override("method.ce_weight=0.5", c);
  train::apply_distill_override("epochs=4", c);
  CHECK(c.method_params["dkd.beta"] == 2);
  CHECK(c.method_params["at.weight"] == 0.5);
  CHECK(c.method_params["at.schedule"] == "warmup:3");
  CHECK(c.method_params["ce_weight"] == 0.5);
  CHECK(c.epochs == 4);
  CHECK_THROWS_WITH_SUBSTR(train::apply_distill_override("rkd.weight=1", c), "not a method of this run's fusion");
  auto from_cfg = create_distiller(c.method, params_from_json(c.method_params), ctx);
  CHECK(from_cfg->params().at("at.schedule") == "warmup:3");
  CHECK(from_cfg->params().at("ce_weight") == "0.5");
  // the same from a recipe
  train::TrainConfig r;
  train::parse_recipe(R"({"method": "dkd+at", "method_params": {"dkd.beta": 2, "at.weight": 0.25}})", r, "test");
  auto from_recipe = create_distiller(r.method, params_from_json(r.method_params), ctx);
  CHECK(from_recipe->params().at("dkd.beta") == "2");
  CHECK(from_recipe->params().at("at.weight") == "0.25");
}

TEST_CASE("several teachers: mean, weighted and CA-MKD confidence weights") {
  // 3 samples, 3 classes, 2 teachers; teacher 1 is right on sample 0, teacher 2 on sample 1
  Tensor z1 = from_vector(std::vector<float>{4, 0, 0, 4, 0, 0, 1, 1, 1}, {3, 3});
  Tensor z2 = from_vector(std::vector<float>{0, 4, 0, 0, 4, 0, 2, 0, 0}, {3, 3});
  Tensor y = from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  TeacherCombine mean;
  CHECK(max_abs_diff(combine_teacher_logits({z1, z2}, y, mean), div(add(z1, z2), 2.0)) < 1e-7);
  TeacherCombine weighted{"weighted", {7, 3}};  // normalised: 0.7, 0.3
  CHECK(max_abs_diff(combine_teacher_logits({z1, z2}, y, weighted), add(mul(z1, 0.7), mul(z2, 0.3))) < 1e-6);
  TeacherCombine conf{"confidence", {}};
  Tensor a = teacher_mix_weights({z1, z2}, y, conf);  // (3, 2)
  REQUIRE(a.shape() == Shape({3, 2}));
  // by hand: l_bm = CE, a_bm = 1 - softmax_m(l_b) (M - 1 = 1)
  CrossEntropyOptions per_sample;
  per_sample.reduction = Reduction::None;
  Tensor l1 = cross_entropy(z1, y, per_sample), l2 = cross_entropy(z2, y, per_sample);
  for (int64_t b = 0; b < 3; ++b) {
    const double e1 = std::exp(l1.at({b})), e2 = std::exp(l2.at({b}));
    CHECK(a.at({b, 0}) == doctest::Approx(1.0 - e1 / (e1 + e2)));
    CHECK(a.at({b, 0}) + a.at({b, 1}) == doctest::Approx(1.0));
  }
  CHECK(a.at({0, 0}) > 0.9);  // teacher 1 is right about sample 0
  CHECK(a.at({1, 1}) > 0.9);  // teacher 2 about sample 1
  Tensor zt = combine_teacher_logits({z1, z2}, y, conf);
  for (int64_t k = 0; k < 3; ++k)
    CHECK(zt.at({1, k}) == doctest::Approx(a.at({1, 0}) * z1.at({1, k}) + a.at({1, 1}) * z2.at({1, k})));
  // three teachers: rows still sum to 1 (the 1 / (M - 1))
  Tensor a3 = teacher_mix_weights({z1, z2, z1}, y, conf);
  for (int64_t b = 0; b < 3; ++b) CHECK(a3.at({b, 0}) + a3.at({b, 1}) + a3.at({b, 2}) == doctest::Approx(1.0));
  // one teacher: unchanged
  CHECK(max_abs_diff(combine_teacher_logits({z1}, y, conf), z1) == 0.0);
  // errors
  CHECK_THROWS_WITH_SUBSTR(check_teacher_combine({"vote", {}}, 2), "mean, weighted");
  CHECK_THROWS_WITH_SUBSTR(check_teacher_combine({"weighted", {}}, 2), "0 numbers for 2 teachers");
  CHECK_THROWS_WITH_SUBSTR(check_teacher_combine({"mean", {0.5, 0.5}}, 2), "teacher_combine=weighted only");
  CHECK_THROWS_WITH_SUBSTR(check_teacher_combine({"weighted", {0, 0}}, 2), "add up to 0");
  // list settings from one --set string
  train::TrainConfig c;
  train::apply_distill_override("teacher_weights_mix=0.7,0.3", c);
  train::apply_distill_override("teacher_combine=weighted", c);
  train::apply_distill_override("milestones=30,60", c);
  CHECK(c.teacher_weights_mix == std::vector<double>{0.7, 0.3});
  CHECK(c.teacher_combine == "weighted");
  CHECK(c.milestones == std::vector<int64_t>{30, 60});
  train::apply_override_string("teachers=resnet8:a.safetensors,resnet14:b.safetensors", c);
  CHECK(c.teachers == std::vector<std::string>{"resnet8:a.safetensors", "resnet14:b.safetensors"});
  CHECK(c.method_params.empty());
}

// ------------------------------------------------------------------ runs

using kdtest::read_metrics;
using kdtest::tiny_config;

namespace {

int run_cli(const std::string& args) {
  return std::system((std::string(KDLAB_BIN) + " " + args + " > /dev/null 2>&1").c_str());
}

std::vector<float> weights_of(const std::string& path) {
  std::vector<float> all;
  for (auto& [n, t] : nn::load_safetensors(path).tensors)
    if (t.dtype() == DType::f32) {
      auto v = to_float_vector(t);
      all.insert(all.end(), v.begin(), v.end());
    }
  return all;
}

const std::string kTiny =
    "--dataset synthetic --set num_classes=4 --train-limit 128 --test-limit 64 --epochs 3 --batch-size 32 --lr 0.05 "
    "--threads 1 --seed 3";

}  // namespace

TEST_CASE("kdlab distill with a fusion: every part logged as <method>.<part>, the loss goes down") {
  const std::string dir = kdtest::temp_path("fusion_e2e");
  REQUIRE(run_cli("distill --student resnet8 --teacher resnet14 --teacher-weights " + kdtest::tiny_teacher("resnet14") +
                  " --method kd+at+fitnet --set kd.T=2 --set at.weight=0.5 --set kd.schedule=warmup:2 " + kTiny +
                  " --out " + dir) == 0);
  std::vector<nlohmann::json> m = read_metrics(dir);
  REQUIRE(m.size() == 3);
  for (const char* p : {"loss_ce", "loss_kd.kd", "loss_at.at_f1", "loss_at.at_f3", "loss_fitnet.hint"}) {
    CAPTURE(p);
    CHECK(m[0].contains(p));
  }
  CHECK_FALSE(m[0].contains("loss_kd.ce"));
  CHECK(m[2]["train_loss"].get<double>() < m[0]["train_loss"].get<double>());
  CHECK(m[2]["loss_fitnet.hint"].get<double>() < m[0]["loss_fitnet.hint"].get<double>());  // the regressor learns
  auto record = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  CHECK(record["distillation"]["method"] == "kd+at+fitnet");
  CHECK(record["distillation"]["params"]["kd.T"] == "2");
  CHECK(record["distillation"]["params"]["kd.schedule"] == "warmup:2");
  CHECK(record["distillation"]["params"]["at.weight"] == "0.5");
  // the fitnet regressor is in the checkpoint under its method's name
  std::map<std::string, Tensor> ckpt = nn::to_map(nn::load_safetensors(dir + "/checkpoint.safetensors").tensors);
  CHECK(ckpt.count("distiller.fitnet.conv_reg.conv.weight") == 1);
  // a feature component rules out the teacher cache
  CHECK(run_cli("distill --student resnet8 --teacher resnet14 --teacher-weights " + kdtest::tiny_teacher("resnet14") +
                " --method kd+at --teacher-cache " + kTiny + " --out " + dir + "_cache") != 0);
  train::TrainConfig c = tiny_config();
  c.method = "kd+at";
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  c.teacher_cache = true;
  DistillSetup setup;
  CHECK_THROWS_WITH_SUBSTR(prepare_distill_run(c, dir + "_cache2", "test", setup), "teacher cache does not store");
}

TEST_CASE("a fusion run resumed mid-epoch ends with the uninterrupted run's weights (helpers included)") {
  train::TrainConfig c = tiny_config();
  c.method = "dkd+fitnet";
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  c.method_params = {{"dkd.warmup", 2}, {"fitnet.weight", 0.5}, {"dkd.schedule", "cosine"}};
  const std::string full = kdtest::temp_path("fusion_full"), part = kdtest::temp_path("fusion_part");
  {
    DistillSetup setup;
    train::Run run = prepare_distill_run(c, full, "test", setup);
    train::run_training(run, false);
  }
  {
    DistillSetup setup;
    train::Run run = prepare_distill_run(c, part, "test", setup);
    int steps = 0;
    auto inner = run.loss;
    run.loss = train::function_loss([&](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
      if (++steps == 6) std::raise(SIGINT);  // 4 steps per epoch: epoch 2, second step
      return inner->compute(o, b, e);
    });
    CHECK(train::run_training(run, false).interrupted);
  }
  {
    DistillSetup setup;
    train::Run run = prepare_distill_run(c, part, "test", setup);
    train::run_training(run, true);
  }
  CHECK(weights_of(part + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
  std::map<std::string, Tensor> a = nn::to_map(nn::load_safetensors(full + "/checkpoint.safetensors").tensors);
  std::map<std::string, Tensor> b = nn::to_map(nn::load_safetensors(part + "/checkpoint.safetensors").tensors);
  REQUIRE(a.count("distiller.fitnet.conv_reg.conv.weight") == 1);
  CHECK(max_abs_diff(a.at("distiller.fitnet.conv_reg.conv.weight"), b.at("distiller.fitnet.conv_reg.conv.weight")) ==
        0.0);
}

TEST_CASE("two teachers: the method sees their combined logits, cached or not") {
  train::TrainConfig c = tiny_config();
  c.method = "kd";
  c.teachers = {"resnet14:" + kdtest::tiny_teacher("resnet14"), "resnet8:" + kdtest::tiny_teacher("resnet8")};
  c.teacher_combine = "confidence";
  c.augment = false;  // the cached and the uncached runs see the same pixels
  DistillSetup setup;
  train::Run run = prepare_distill_run(c, kdtest::temp_path("two_teachers"), "test", setup);
  REQUIRE(setup.num_teachers == 2);
  REQUIRE(setup.guides.size() == 2);
  // one batch by hand: kd_loss on the CA-MKD combination of the two teachers' logits
  data::Batch batch;
  batch.images = data::normalize_images(run.train_set.images.slice(0, 0, 8), data::eval_transform(run.train_set).mean,
                                        data::eval_transform(run.train_set).std);
  batch.labels = run.train_set.labels.slice(0, 0, 8).contiguous();
  Tensor z1, z2;
  {
    NoGradGuard ng;
    z1 = setup.guides[0].net->forward(batch.images).logits;
    z2 = setup.guides[1].net->forward(batch.images).logits;
  }
  nn::ModelOutput student;
  {
    NoGradGuard ng;
    student = run.model->forward(batch.images);
  }
  train::Loss got = run.loss->compute(student, batch, 0);
  Tensor zt = combine_teacher_logits({z1, z2}, batch.labels, {"confidence", {}});
  auto kd_with_ce = [&](const Tensor& teacher_logits) {  // w_ce * CE + KD's term, as the loop computes it
    return add_cross_entropy(kd_loss(student.logits, teacher_logits, batch.labels, KdOptions{}), student.logits,
                             batch.labels, KdOptions{}.ce_weight);
  };
  CHECK(got.total.item() == doctest::Approx(kd_with_ce(zt).total.item()).epsilon(1e-5));
  // and not the first teacher's alone
  CHECK(std::abs(kd_with_ce(z1).total.item() - got.total.item()) > 1e-4);

  // dgkd takes one teacher
  c.method = "dgkd";
  DistillSetup s2;
  CHECK_THROWS_WITH_SUBSTR(prepare_distill_run(c, kdtest::temp_path("two_dgkd"), "test", s2), "--assistant");
  c.method = "kd";
  c.teacher_combine = "weighted";
  CHECK_THROWS_WITH_SUBSTR(prepare_distill_run(c, kdtest::temp_path("two_w"), "test", s2), "teacher_weights_mix");
}

TEST_CASE("kdlab distill with two teachers (--teacher MODEL:WEIGHTS twice), through the teacher cache") {
  const std::string dir = kdtest::temp_path("two_teachers_e2e");
  REQUIRE(run_cli("distill --student resnet8 --teacher resnet14:" + kdtest::tiny_teacher("resnet14") + " --teacher resnet8:" +
                  kdtest::tiny_teacher("resnet8") + " --set teacher_combine=weighted --set teacher_weights_mix=0.7,0.3" +
                  " --method dkd --set warmup=1 --teacher-cache --cache-views 2 " + kTiny + " --out " + dir) == 0);
  std::vector<nlohmann::json> m = read_metrics(dir);
  REQUIRE(m.size() == 3);
  CHECK(m[0].contains("loss_nckd"));
  CHECK(m[2]["train_loss"].get<double>() < m[0]["train_loss"].get<double>());
  auto record = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  CHECK(record["distillation"]["guides"].size() == 2);
  CHECK(record["distillation"]["teachers"]["count"] == 2);
  CHECK(record["distillation"]["teachers"]["combine"] == "weighted");
  CHECK(record["distillation"]["teachers"]["test_accuracies"].size() == 2);
  int files = 0;  // one cache file per teacher
  for (const auto& e : fs::directory_iterator(dir + "/teacher_cache")) files += e.path().extension() == ".safetensors";
  CHECK(files == 2);
  // a bare model name pairs with --teacher-weights; only one may be bare
  CHECK(run_cli("distill --student resnet8 --teacher resnet14 --teacher resnet8 --teacher-weights " +
                kdtest::tiny_teacher("resnet14") + " --method kd " + kTiny + " --out " + dir + "_bad") != 0);
}

TEST_CASE("declared needs: assistants, a class cost matrix and virtual views reach a method, also inside a fusion") {
  // each method says what it reads beyond the two networks' outputs
  CHECK(create_distiller("dgkd", {}, {})->needs().assistants);
  CHECK_FALSE(create_distiller("kd", {}, {})->needs().assistants);
  CHECK(create_distiller("wkd_l", {}, {})->needs().class_cost);
  CHECK(create_distiller("vrm", {}, {})->needs().virtual_views);
  // a fusion's needs are the union of its components'
  const TeacherNeeds f = create_distiller("kd+dgkd", {}, {})->needs();
  CHECK(f.assistants);
  CHECK_FALSE(f.class_cost);
  // virtual views: a method that reads none refuses to give a transform; a fusion forwards VRM's
  data::Dataset d = data::make_synthetic({}, "train");
  CHECK_THROWS_WITH_AS(create_distiller("kd", {}, {})->virtual_transform(d), doctest::Contains("reads no virtual views"),
                       Error);
  const data::TransformConfig v = create_distiller("vrm", {}, {})->virtual_transform(d);
  const data::TransformConfig fv = create_distiller("kd+vrm", {}, {})->virtual_transform(d);
  CHECK(fv.strong_ops == v.strong_ops);
  CHECK(fv.strong_ops > 0);
  // WKD-L without a cost matrix builds 1 - cos of the teacher's classifier rows and hands it back
  // for the run folder; given one (ctx.class_cost), it uses it and builds nothing
  DistillerContext ctx;
  ctx.num_classes = 10;
  ctx.teacher_model = nn::create_model("resnet8", {10, 3, 32, 1});
  const std::vector<Artifact> built = create_distiller("kd+wkd_l", {}, ctx)->artifacts();
  REQUIRE(built.size() == 1);
  CHECK(built[0].name == "cost_matrix");
  CHECK(max_abs_diff(built[0].value, cost_matrix_cosine(classifier_weight(*ctx.teacher_model, 10))) == 0.0);
  ctx.class_cost = zeros({10, 10});
  CHECK(create_distiller("wkd_l", {}, ctx)->artifacts().empty());
}
