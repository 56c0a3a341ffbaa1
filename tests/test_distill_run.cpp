// Distillation runs (distill/distill_run.h) and the teacher cache (distill/teacher_cache.h):
// the cache's logits are the teacher's on exactly the view the student sees; the cache file is
// reused only when its fingerprint matches; every output-family method trains end to end on the
// synthetic set and lowers its loss, logging each part; --set routing; errors.
#include <filesystem>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>

#include "distill/distill_run.h"
#include "datasets/label_noise.h"
#include "distill/output/acd_u.h"
#include "distill/output/dgkd.h"
#include "engine/npy.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/safetensors.h"
#include "distill_run_test_util.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

using kdtest::read_metrics;
using kdtest::tiny_config;

static double max_abs_diff(const Tensor& a, const Tensor& b) { return max(abs(sub(a, b))).item(); }


TEST_CASE("teacher cache: the stored logits are the teacher's on exactly the student's view") {
  train::TrainConfig c = tiny_config();
  train::Run run = train::prepare_run(c, kdtest::temp_path("cache_run"), "test");
  std::vector<distill::Guide> guides{distill::load_guide("resnet14", kdtest::tiny_teacher("resnet14"), 4, run.train_set)};
  const data::TransformConfig tc = data::train_transform(run.train_set);
  const std::string path = kdtest::temp_path("cache_dir");
  auto cache = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, path);
  CHECK(cache.built_now());
  CHECK(cache.num_views() == 3);

  data::LoaderOptions lo;
  lo.batch_size = 32;
  lo.seed = 7;
  lo.transform = tc;
  lo.choose_aug = [&](int64_t i, Generator& g) { return cache.choose(i, g); };
  data::DataLoader loader(run.train_set, lo);
  std::set<int> views_seen;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    data::Batch b;
    while (loader.next(b)) {
      Tensor from_cache = cache.logits(0, b);  // (B, K)
      Tensor direct;
      {
        NoGradGuard ng;
        direct = guides[0].net->forward(b.images).logits;  // (B, K) the teacher on the student's pixels
      }
      CHECK(max_abs_diff(from_cache, direct) < 1e-4);
      for (const auto& a : b.aug) {
        views_seen.insert(a.view);
        CHECK(a.pad == 4);
      }
    }
  }
  CHECK(views_seen == std::set<int>{0, 1, 2});

  SUBCASE("with_pooled: the teacher's pooled feature on exactly the student's view, in a file of its own") {
    auto pooled = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, path, 256, /*with_pooled=*/true);
    CHECK(pooled.built_now());  // not the logits-only file
    REQUIRE(pooled.has_pooled());
    CHECK_FALSE(cache.has_pooled());
    loader.start_epoch(1);
    data::Batch b;
    REQUIRE(loader.next(b));
    nn::ModelOutput direct;
    {
      NoGradGuard ng;
      direct = guides[0].net->forward(b.images);
    }
    CHECK(max_abs_diff(pooled.pooled(b), direct.pooled) < 1e-4);  // (B, D)
    CHECK(max_abs_diff(pooled.logits(0, b), direct.logits) < 1e-4);
    CHECK_THROWS_WITH_SUBSTR(cache.pooled(b), "without the teacher's pooled features");
    auto again = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, path, 256, true);
    CHECK_FALSE(again.built_now());
    CHECK(max_abs_diff(again.pooled(b), pooled.pooled(b)) == 0.0);
  }

  SUBCASE("a logits-only run reads the logits of a file with pooled features (built first, by RKD or HCD)") {
    const std::string dir2 = kdtest::temp_path("cache_dir_pooled_first");
    auto pooled = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, dir2, 256, /*with_pooled=*/true);
    CHECK(pooled.built_now());
    auto logits_only = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, dir2);
    CHECK_FALSE(logits_only.built_now());  // the teacher did not run again
    CHECK_FALSE(logits_only.has_pooled());
    int files = 0;
    for (const auto& e : fs::directory_iterator(dir2)) files += e.path().extension() == ".safetensors";
    CHECK(files == 1);
    data::Batch b;
    loader.start_epoch(0);
    REQUIRE(loader.next(b));
    CHECK(max_abs_diff(logits_only.logits(0, b), pooled.logits(0, b)) == 0.0);
    CHECK(max_abs_diff(logits_only.logits(0, b), cache.logits(0, b)) < 1e-5);  // the same teacher on the same views
    auto other_views = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 2, 0, dir2);
    CHECK(other_views.built_now());  // other settings are not taken from it
  }

  SUBCASE("a batch drawn without the cache is refused") {
    data::LoaderOptions plain = lo;
    plain.choose_aug = nullptr;
    data::DataLoader l2(run.train_set, plain);
    l2.start_epoch(0);
    data::Batch b;
    REQUIRE(l2.next(b));
    CHECK_THROWS_WITH_SUBSTR(cache.logits(0, b), "not augmented from the cache");
  }
  SUBCASE("a file is reused when everything matches; other settings get their own file, none overwritten") {
    auto again = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, path);
    CHECK_FALSE(again.built_now());
    data::Batch b;
    loader.start_epoch(0);
    REQUIRE(loader.next(b));
    CHECK(max_abs_diff(again.logits(0, b), cache.logits(0, b)) == 0.0);
    auto more_views = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 2, 0, path);
    CHECK(more_views.built_now());
    CHECK(more_views.num_views() == 2);
    data::Dataset other = run.train_set;
    other.labels = run.train_set.labels.clone();
    other.labels.data<int64_t>()[0] = (other.labels.data<int64_t>()[0] + 1) % 4;
    auto relabelled = distill::TeacherCache::build_or_load(guides, other, tc, 2, 0, path);
    CHECK(relabelled.built_now());
    int files = 0;
    for (const auto& e : fs::directory_iterator(path)) files += e.path().extension() == ".safetensors";
    CHECK(files == 3);
    auto first_again = distill::TeacherCache::build_or_load(guides, run.train_set, tc, 3, 0, path);
    CHECK_FALSE(first_again.built_now());  // the first one is still there
  }
}

// Trains c.epochs with the method; returns the per-epoch metrics.
static std::vector<nlohmann::json> distil(train::TrainConfig c, const std::string& name) {
  std::string dir = kdtest::temp_path(name);
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  distill::DistillSetup setup;
  train::Run run = distill::prepare_distill_run(c, dir, "test", setup);
  CHECK(setup.teacher_test_accuracy > 0.3);  // the teacher learned something (4 classes)
  train::RunSummary s = train::run_training(run, false);
  CHECK_FALSE(s.interrupted);
  CHECK(fs::exists(dir + "/model_last.safetensors"));
  auto record = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  CHECK(record["distillation"]["method"] == c.method);
  return read_metrics(dir);
}

TEST_CASE("every output-family method trains a student end to end and lowers its loss") {
  struct Case {
    std::string method;
    std::vector<std::string> sets;
    std::vector<std::string> parts;
    bool cache;
  };
  const std::vector<Case> cases{
      {"kd", {}, {"ce", "kd"}, false},
      {"kd", {"T=2", "kd_weight=0.5"}, {"ce", "kd"}, true},
      {"dkd", {"warmup=2"}, {"ce", "tckd", "nckd"}, false},
      {"dgkd", {"drop_num=1"}, {"ce", "kd_teacher", "kd_assistant1"}, true},
      {"wkd_l", {"gamma=20", "decay_epoch=2"}, {"ce", "target", "wd"}, false},
      // VRM through prepare_distill_run: the virtual views are attached to the run
      {"vrm", {}, {"ce", "inter_sample", "inter_class"}, false},
      {"kd+vrm", {}, {"ce", "kd.kd", "vrm.inter_sample", "vrm.inter_class"}, false},
  };
  for (const Case& k : cases) {
    CAPTURE(k.method);
    CAPTURE(k.cache);
    train::TrainConfig c = tiny_config();
    c.method = k.method;
    c.teacher_cache = k.cache;
    c.teacher_cache_views = 2;
    for (const auto& s : k.sets) train::apply_distill_override(s, c);
    if (k.method == "dgkd") c.assistants = {"resnet14:" + kdtest::tiny_teacher("resnet14")};  // any frozen guide will do here
    auto m = distil(c, "m_" + k.method + (k.cache ? "_cache" : ""));
    REQUIRE(m.size() == 3);
    for (const auto& p : k.parts) CHECK(m[0].contains("loss_" + p));
    CHECK(m[2]["train_loss"].get<double>() < m[0]["train_loss"].get<double>());
  }
}

TEST_CASE("a cached run and an uncached run see the same teacher: same loss on the same views") {
  // With one view per image and no augmentation both runs draw identical batches, so the whole
  // training trajectory must agree: the cache changes where the logits come from, nothing else.
  train::TrainConfig c = tiny_config();
  c.method = "kd";
  c.augment = false;
  c.epochs = 2;
  auto plain = distil(c, "same_plain");
  c.teacher_cache = true;
  auto cached = distil(c, "same_cached");
  REQUIRE(plain.size() == cached.size());
  for (size_t e = 0; e < plain.size(); ++e) {
    CHECK(plain[e]["loss_kd"].get<double>() == doctest::Approx(cached[e]["loss_kd"].get<double>()).epsilon(1e-4));
    CHECK(plain[e]["test_acc"].get<double>() == doctest::Approx(cached[e]["test_acc"].get<double>()).epsilon(1e-6));
  }
  // RKD reads the teacher's pooled feature: the cache stores it beside the logits
  c.method = "rkd";
  c.teacher_cache = false;
  auto rkd_plain = distil(c, "same_rkd_plain");
  c.teacher_cache = true;
  auto rkd_cached = distil(c, "same_rkd_cached");
  REQUIRE(rkd_plain.size() == rkd_cached.size());
  for (size_t e = 0; e < rkd_plain.size(); ++e)
    for (const char* part : {"loss_distance", "loss_angle"})
      CHECK(rkd_plain[e][part].get<double>() == doctest::Approx(rkd_cached[e][part].get<double>()).epsilon(1e-4));
}

TEST_CASE("kdlab distill's --set: recipe keys go to the recipe, the rest to the method") {
  train::TrainConfig c;
  train::apply_distill_override("epochs=7", c);
  train::apply_distill_override("T=4", c);
  train::apply_distill_override("warmup=20", c);
  CHECK(c.epochs == 7);
  CHECK(c.method_params["T"] == 4);
  distill::Params p = distill::params_from_json(c.method_params);
  CHECK(p.at("T") == "4");
  CHECK(p.at("warmup") == "20");
  CHECK_FALSE(c.method_params.contains("epochs"));
  // a method's own name space: "kd.T" or "method.T"; a hyper-parameter named like no setting
  c.method = "wkd_l";
  train::apply_distill_override("gamma=5", c);  // WKD-L's gamma, not the LR decay (lr_gamma)
  CHECK(c.method_params["gamma"] == 5);
  train::apply_distill_override("wkd_l.tau=2", c);
  train::apply_distill_override("method.kappa=3", c);
  CHECK(c.method_params["tau"] == 2);
  CHECK(c.method_params["kappa"] == 3);
  train::apply_distill_override("lr_gamma=0.2", c);
  CHECK(c.lr_gamma == doctest::Approx(0.2));
  CHECK_THROWS_WITH_SUBSTR(train::apply_distill_override("dkd.beta=2", c), "not this run's method");
}

TEST_CASE("distillation errors name the problem and the fix") {
  train::TrainConfig c = tiny_config();
  c.method = "kd";
  distill::DistillSetup setup;
  c.teacher = "resnet14";
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e1"), "", setup), "--teacher-weights");
  c.teacher_weights = kdtest::temp_path("missing.safetensors");
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e2"), "", setup), "not found");
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  c.teacher = "resnet20";  // the file holds a resnet14
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e3"), "", setup), "--teacher resnet14");
  c.teacher = "resnet14";
  c.assistants = {"resnet14:" + kdtest::tiny_teacher("resnet14")};
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e4"), "", setup), "dgkd only");
  c.assistants.clear();
  c.assistants = {"resnet14"};
  c.method = "dgkd";
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e5"), "", setup), "MODEL:WEIGHTS");
  c.assistants.clear();
  c.method = "kd";
  train::apply_distill_override("Temperature=4", c);
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e6"), "", setup), "Temperature");
  c.method_params = nlohmann::json::object();
  c.method = "kd2";
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e7"), "", setup), "dkd");
  c.method = "vrm";
  c.teacher_cache = true;
  CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("e8"), "", setup),
                           "virtual view of every image, which the teacher cache cannot serve");
}

TEST_CASE("label noise: only the training labels change, seeded, saved with the run") {
  train::TrainConfig c = tiny_config();
  c.label_noise = "sym:0.5";
  std::string dir = kdtest::temp_path("noisy");
  train::Run run = train::prepare_run(c, dir, "test");
  REQUIRE(run.clean_train_labels.defined());
  const double changed = data::label_noise_rate(run.clean_train_labels, run.train_set.labels);
  CHECK(changed > 0.25);  // sym:0.5 over 4 classes changes about 0.5 * 3/4 of the labels
  CHECK(changed < 0.5);
  Tensor saved = load_npy(dir + "/noisy_labels.npy");
  CHECK(max_abs_diff(saved.to(DType::f32), run.train_set.labels.to(DType::f32)) == 0.0);
  train::Run again = train::prepare_run(c, kdtest::temp_path("noisy2"), "test");
  CHECK(max_abs_diff(again.train_set.labels.to(DType::f32), run.train_set.labels.to(DType::f32)) == 0.0);
  train::TrainConfig clean = tiny_config();
  train::Run plain = train::prepare_run(clean, kdtest::temp_path("clean"), "test");
  CHECK(max_abs_diff(plain.test_set.labels.to(DType::f32), run.test_set.labels.to(DType::f32)) == 0.0);
  CHECK_FALSE(plain.clean_train_labels.defined());
}

static int run_cli(const std::string& args) {
  return std::system((std::string(KDLAB_BIN) + " " + args + " > /dev/null 2>&1").c_str());
}

TEST_CASE("kdlab wkd-cost and kdlab dgkd-chain") {
  const std::string dir = kdtest::temp_path("cli");
  const std::string common = "--dataset synthetic --threads 1";
  // a teacher for the synthetic set's default 10 classes
  const std::string tdir = dir + "_teacher";
  REQUIRE(run_cli("train --model resnet8 " + common + " --epochs 1 --train-limit 64 --test-limit 32 --out " + tdir) == 0);
  const std::string tw = tdir + "/model_last.safetensors";
  SUBCASE("wkd-cost: a symmetric K x K matrix with a zero diagonal, from features or the classifier") {
    for (std::string source : {"features", "classifier"}) {
      CAPTURE(source);
      const std::string out = dir + "_" + source + ".npy";
      REQUIRE(run_cli("wkd-cost --teacher resnet8 --teacher-weights " + tw + " " + common +
                      " --per-class 4 --source " + source + " --out " + out) == 0);
      Tensor D = load_npy(out);  // (K, K)
      REQUIRE(D.shape() == Shape({10, 10}));
      CHECK(max_abs_diff(D, D.t()) < 1e-5);
      for (int64_t i = 0; i < D.size(0); ++i) CHECK(std::abs(D.at({i, i})) < 1e-5);
    }
  }
  SUBCASE("dgkd-chain trains the assistants in order, each guided by all larger guides") {
    REQUIRE(run_cli("dgkd-chain --teacher resnet8 --teacher-weights " + tw +
                    " --assistants resnet14,resnet8 --student resnet8 " + common +
                    " --epochs 1 --train-limit 64 --test-limit 32 --teacher-cache --out " + dir + "_chain") == 0);
    auto guides_of = [&](const std::string& link) {
      auto j = nlohmann::json::parse(std::ifstream(dir + "_chain/" + link + "/config.json"));
      return j["distillation"]["guides"].size();
    };
    CHECK(guides_of("1_resnet14") == 1);
    CHECK(guides_of("2_resnet8") == 2);
    CHECK(guides_of("student_resnet8") == 3);
  }
}

TEST_CASE("every shipped recipe parses and its method accepts its hyper-parameters") {
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(std::string(KDLAB_SOURCE_DIR) + "/recipes")) {
    if (entry.path().extension() != ".json") continue;
    if (entry.path().parent_path().filename() == "federated") continue;  // kdlab federate's (test_federated.cpp)
    CAPTURE(entry.path().string());
    train::TrainConfig c;
    REQUIRE_NOTHROW(train::load_recipe(entry.path().string(), c));
    CHECK(c.epochs > 0);
    if (c.method.empty()) continue;
    distill::Params p = distill::params_from_json(c.method_params);
    if (c.method == "acd_u") {
      CHECK_NOTHROW(distill::validate_acd_u_options(distill::acd_u_options(p), c.epochs));
    } else {
      p.erase("cost_matrix");  // built by kdlab wkd-cost on the user's data
      distill::DistillerContext ctx;
      ctx.num_classes = 100;
      if (!c.teacher.empty()) {  // as prepare_distill_run: the networks and one forward pass of each
        static std::map<std::string, std::pair<std::shared_ptr<nn::Classifier>, nn::ModelOutput>> nets;  // by name
        for (const std::string& name : {c.model, c.teacher})
          if (!nets.count(name)) {
            NoGradGuard ng;
            Generator g(1);
            auto m = nn::create_model(name, {.num_classes = 100});
            m->eval();
            nets[name] = {m, m->forward(randn({2, 3, 32, 32}, g))};
          }
        std::tie(ctx.student_model, ctx.student_sample) = nets[c.model];
        std::tie(ctx.teacher_model, ctx.teacher_sample) = nets[c.teacher];
      }
      CHECK_NOTHROW(distill::create_distiller(c.method, p, ctx));
      for (const std::string& a : c.assistants) CHECK(a.find(':') != std::string::npos);
    }
    ++checked;
  }
  CHECK(checked >= 20);
}

static std::vector<float> weights_of(const std::string& path) {
  std::vector<float> all;
  for (auto& [n, t] : nn::load_safetensors(path).tensors)
    if (t.dtype() == DType::f32) {
      auto v = to_float_vector(t);
      all.insert(all.end(), v.begin(), v.end());
    }
  return all;
}

TEST_CASE("a distillation run resumed mid-epoch ends with the uninterrupted run's weights") {
  // DGKD with the teacher cache: the guide drops and the cached views must replay exactly.
  train::TrainConfig c = tiny_config();
  c.method = "dgkd";
  c.teacher = "resnet14";
  c.teacher_weights = kdtest::tiny_teacher("resnet14");
  c.assistants = {"resnet14:" + kdtest::tiny_teacher("resnet14")};
  c.teacher_cache = true;
  c.teacher_cache_views = 3;
  c.method_params = {{"drop_num", 1}, {"T", 4}, {"lambda", 0.9}};
  const std::string full = kdtest::temp_path("dgkd_full"), part = kdtest::temp_path("dgkd_part");
  {
    distill::DistillSetup setup;
    train::Run run = distill::prepare_distill_run(c, full, "test", setup);
    train::run_training(run, false);
  }
  {
    distill::DistillSetup setup;
    train::Run run = distill::prepare_distill_run(c, part, "test", setup);
    int steps = 0;
    auto inner = run.loss;
    run.loss = train::function_loss([&](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
      if (++steps == 6) std::raise(SIGINT);  // 4 steps per epoch: epoch 2, second step
      return inner->compute(o, b, e);
    });
    CHECK(train::run_training(run, false).interrupted);
  }
  {
    distill::DistillSetup setup;
    train::Run run = distill::prepare_distill_run(c, part, "test", setup);
    CHECK_FALSE(setup.cache->built_now());  // the run directory's cache is reused
    train::run_training(run, true);
  }
  CHECK(weights_of(part + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
}

TEST_CASE("kdlab loss with feature taps: named inputs, helper weights, gradients of every student input") {
  const std::string dir = kdtest::temp_path("loss_feat");
  fs::create_directories(dir);
  Generator g(11);
  const int64_t B = 3, K = 5;
  Tensor zs = randn({B, K}, g), zt = randn({B, K}, g), y = from_vector(std::vector<int64_t>{0, 3, 4}, {B});
  Tensor fs2 = randn({B, 8, 4, 4}, g), ft2 = randn({B, 16, 4, 4}, g);
  save_npy(dir + "/zs.npy", zs);
  save_npy(dir + "/zt.npy", zt);
  save_npy(dir + "/y.npy", y);
  save_npy(dir + "/fs2.npy", fs2);
  save_npy(dir + "/ft2.npy", ft2);
  // the same FitNet distiller in C++: helpers from seed 0, then with changed helper weights
  nn::ModelOutput s, t;
  s.logits = zs;
  t.logits = zt;
  s.feats = {Tensor(), Tensor(), fs2};
  t.feats = {Tensor(), Tensor(), ft2};
  distill::DistillerContext ctx;
  ctx.num_classes = K;
  ctx.student_sample = s;
  ctx.teacher_sample = t;
  auto d = distill::create_distiller("fitnet", {}, ctx);
  auto state = d->state_dict();
  REQUIRE_FALSE(state.empty());
  {
    NoGradGuard ng;
    for (auto& [name, w] : state)
      if (w.dtype() == DType::f32) w.copy_(mul(w, 0.5));  // different helper weights
  }
  nn::save_safetensors(dir + "/helpers.safetensors", state);
  distill::BatchInfo info;
  info.labels = y;
  const double expected = distill::distill_loss(*d, s, t, info).total.item();  // what kdlab loss prints

  const std::string base = std::string(KDLAB_BIN) + " loss fitnet --student-logits " + dir + "/zs.npy --teacher-logits " +
                           dir + "/zt.npy --labels " + dir + "/y.npy --student-feat f2=" + dir +
                           "/fs2.npy --teacher-feat f2=" + dir + "/ft2.npy --json";
  auto json_of = [](const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    REQUIRE(pclose(p) == 0);
    return nlohmann::json::parse(out);
  };
  auto with_helpers = json_of(base + " --helper-weights " + dir + "/helpers.safetensors --grad-out " + dir + "/g.safetensors");
  CHECK(with_helpers["loss"].get<double>() == doctest::Approx(expected).epsilon(1e-5));
  CHECK(with_helpers["parts"].contains("hint"));
  auto seeded = json_of(base);
  CHECK(seeded["loss"].get<double>() != doctest::Approx(expected).epsilon(1e-5));
  auto grads = nn::to_map(nn::load_safetensors(dir + "/g.safetensors").tensors);
  REQUIRE(grads.count("logits"));
  REQUIRE(grads.count("f2"));
  CHECK(grads.at("f2").shape() == fs2.shape());
  CHECK(max(abs(grads.at("f2"))).item() > 0);  // the hint loss reaches the student's feature
}
