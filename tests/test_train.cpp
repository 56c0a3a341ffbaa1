// The training loop: run records, resume (after an epoch and mid-epoch) equals an uninterrupted
// run bit for bit, recipe errors, and a non-finite loss stopping the run with a clear message.
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "train/recipe.h"
#include "train/train.h"
#include "nn/safetensors.h"
#include "distill_run_test_util.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

static train::TrainConfig tiny_config() {
  train::TrainConfig c = kdtest::tiny_config();  // smaller still: 96 images, 2 epochs
  c.train_limit = 96;
  c.test_limit = 32;
  c.epochs = 2;
  return c;
}

// A tiny synthetic run: 1 x 12 x 12 images so the test stays fast.
static train::Run tiny_run(const train::TrainConfig& c, const std::string& dir) {
  train::Run run;
  run.config = c;
  run.out_dir = dir;
  data::SyntheticOptions so;
  so.size = c.train_limit;
  so.num_classes = c.num_classes;
  so.channels = 1;
  so.height = so.width = 12;
  so.seed = 5;
  run.train_set = data::make_synthetic(so, "train");
  so.size = c.test_limit;
  run.test_set = data::make_synthetic(so, "test");
  run.model = nn::create_model(c.model, {c.num_classes, 1, 12, c.seed});
  return run;
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

static int count_lines(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) n += !line.empty();
  return n;
}

TEST_CASE("training writes its run record, metrics and weights") {
  std::string dir = kdtest::temp_path("run_record");
  train::Run run = tiny_run(tiny_config(), dir);
  train::RunSummary s = train::run_training(run, false);
  CHECK(s.best_epoch >= 1);
  CHECK(fs::exists(dir + "/config.json"));
  CHECK(fs::exists(dir + "/checkpoint.safetensors"));
  CHECK(fs::exists(dir + "/model_last.safetensors"));
  CHECK(fs::exists(dir + "/model_best.safetensors"));
  CHECK(count_lines(dir + "/metrics.jsonl") == 2);
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  std::getline(f, line);
  auto j = nlohmann::json::parse(line);
  for (const char* key : {"epoch", "train_loss", "train_acc", "test_acc", "lr", "time_s", "images_per_s", "loss_ce"})
    CHECK_MESSAGE(j.contains(key), key);
  std::ifstream cf(dir + "/config.json");
  auto cfg = nlohmann::json::parse(cf);
  CHECK(cfg.contains("git_revision"));
  CHECK(cfg["config"]["seed"] == 3);
}

TEST_CASE("resume after an epoch and mid-epoch equals the uninterrupted run") {
  train::TrainConfig c = tiny_config();
  c.epochs = 3;
  std::string full = kdtest::temp_path("full");
  {
    train::Run run = tiny_run(c, full);
    train::run_training(run, false);
  }
  SUBCASE("stopped after epoch 1") {
    std::string dir = kdtest::temp_path("resume_epoch");
    train::TrainConfig c1 = c;
    c1.epochs = 1;  // the same schedule needs the same total: run 1 epoch of a 3-epoch config
    {
      train::Run run = tiny_run(c, dir);
      // interrupt at the first step of epoch 2 (after its step completes)
      int steps = 0;
      run.loss = train::function_loss([&](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
        if (++steps == 4) std::raise(SIGINT);  // 3 steps per epoch: step 4 is epoch 2's first
        return train::cross_entropy_loss(o, b, e);
      });
      train::RunSummary s = train::run_training(run, false);
      CHECK(s.interrupted);
    }
    {
      train::Run run = tiny_run(c, dir);
      train::run_training(run, true);
    }
    CHECK(weights_of(dir + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
    CHECK(count_lines(dir + "/metrics.jsonl") == 3);
  }
  SUBCASE("stopped in the middle of an epoch") {
    std::string dir = kdtest::temp_path("resume_mid");
    {
      train::Run run = tiny_run(c, dir);
      int steps = 0;
      run.loss = train::function_loss([&](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
        if (++steps == 5) std::raise(SIGINT);  // epoch 2, second step
        return train::cross_entropy_loss(o, b, e);
      });
      CHECK(train::run_training(run, false).interrupted);
    }
    {
      train::Run run = tiny_run(c, dir);
      train::run_training(run, true);
    }
    CHECK(weights_of(dir + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
    // metrics of the resumed epoch equal the uninterrupted ones (sums were checkpointed)
    std::ifstream a(dir + "/metrics.jsonl"), b(full + "/metrics.jsonl");
    std::string la, lb;
    for (int i = 0; i < 2; ++i) std::getline(a, la), std::getline(b, lb);
    auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    CHECK(ja["train_loss"].get<double>() == doctest::Approx(jb["train_loss"].get<double>()).epsilon(1e-12));
    CHECK(ja["test_acc"] == jb["test_acc"]);
  }
}

TEST_CASE("a non-finite loss stops the run naming the step, the parts and the checkpoint") {
  std::string dir = kdtest::temp_path("nan");
  train::Run run = tiny_run(tiny_config(), dir);
  int steps = 0;
  run.loss = train::function_loss([&](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
    train::Loss l = train::cross_entropy_loss(o, b, e);
    if (++steps == 2) {
      Tensor bad = l.total * std::numeric_limits<double>::quiet_NaN();
      return train::Loss{bad, {{"ce", l.total}, {"kd", bad}}};
    }
    return l;
  });
  CHECK_THROWS_WITH_SUBSTR(train::run_training(run, false), "epoch 1 step 2 (non-finite parts: kd)");
}

TEST_CASE("skip_nonfinite: up to N steps per epoch with a NaN/Inf loss are skipped and counted, one more stops") {
  // Steps 2 and 5 (epoch 1: steps 1-3, epoch 2: steps 4-6) have a NaN loss.
  auto nan_at = [](int* steps, std::vector<int> bad_steps) {
    return [steps, bad_steps](const nn::ModelOutput& o, const data::Batch& b, int64_t e) {
      train::Loss l = train::cross_entropy_loss(o, b, e);
      if (std::find(bad_steps.begin(), bad_steps.end(), ++*steps) != bad_steps.end()) {
        Tensor bad = l.total * std::numeric_limits<double>::infinity();
        return train::Loss{bad, {{"ce", l.total}, {"kd", bad}}};
      }
      return l;
    };
  };
  train::TrainConfig c = tiny_config();
  c.skip_nonfinite = 1;
  {
    const std::string dir = kdtest::temp_path("skip_nonfinite");
    train::Run run = tiny_run(c, dir);
    int steps = 0;
    run.loss = train::function_loss(nan_at(&steps, {2, 5}));
    train::run_training(run, false);
    std::vector<nlohmann::json> m = kdtest::read_metrics(dir);
    REQUIRE(m.size() == 2);
    CHECK(m[0]["skipped_steps"] == 1);
    CHECK(m[1]["skipped_steps"] == 1);
    CHECK(std::isfinite(m[1]["train_loss"].get<double>()));  // the skipped steps are not in the averages
    for (const auto& [name, t] : nn::load_safetensors(dir + "/model_last.safetensors").tensors)
      if (t.dtype() == DType::f32) CHECK(std::isfinite(sum(t).item()));
  }
  {  // two in one epoch with one allowed: the second stops the run, and says so
    train::Run run = tiny_run(c, kdtest::temp_path("skip_nonfinite_2"));
    int steps = 0;
    run.loss = train::function_loss(nan_at(&steps, {1, 3}));
    CHECK_THROWS_WITH_SUBSTR(train::run_training(run, false),
                             "epoch 1 step 3 (non-finite parts: kd), after 1 skipped steps this epoch");
  }
  {  // the key is a recipe setting like any other
    train::TrainConfig r;
    train::apply_override_string("skip_nonfinite=4", r);
    CHECK(r.skip_nonfinite == 4);
  }
}

TEST_CASE("recipes: files, overrides and typos") {
  train::TrainConfig c;
  std::string path = kdtest::temp_path("r.json");
  std::ofstream(path) << R"({"epochs": 7, "lr": 0.2, "milestones": [3, 5], "description": "x"})";
  train::load_recipe(path, c);
  CHECK(c.epochs == 7);
  CHECK(c.lr == 0.2);
  CHECK(c.milestones == std::vector<int64_t>{3, 5});
  train::apply_override_string("batch_size=16", c);
  train::apply_override_string("model=resnet20", c);
  CHECK(c.batch_size == 16);
  CHECK(c.model == "resnet20");
  CHECK_THROWS_WITH_SUBSTR(train::apply_override_string("bach_size=16", c), "unknown setting 'bach_size'");
  CHECK_THROWS_WITH_SUBSTR(train::apply_override_string("epochs=many", c), "wrong type");
  std::ofstream(path) << "{not json";
  CHECK_THROWS_WITH_SUBSTR(train::load_recipe(path, c), "not valid JSON");
  CHECK_THROWS_WITH_SUBSTR(train::load_recipe("/nonexistent/recipe.json", c), "not found");
  // the shipped recipe parses
  train::TrainConfig laptop;
  train::load_recipe(std::string(KDLAB_SOURCE_DIR) + "/recipes/cifar10_laptop.json", laptop);
  CHECK(laptop.epochs == 15);
  CHECK(laptop.batch_size == 128);
}

TEST_CASE("--train-limit keeps the first N images and warns when they miss classes") {
  // A class-sorted data set, as an image folder is: 4 classes of 5 images each.
  data::Dataset d;
  d.name = "sorted";
  d.class_names = {"a", "b", "c", "d"};
  d.images = zeros({20, 1, 2, 2}, DType::u8);
  std::vector<int64_t> y;
  for (int64_t k = 0; k < 4; ++k)
    for (int i = 0; i < 5; ++i) y.push_back(k);
  d.labels = from_vector(y, {20});
  std::string warning;
  data::Dataset first = train::first_n(d, 7, &warning);
  CHECK(first.size() == 7);
  CHECK(to_int_vector(first.labels) == std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1});
  CHECK(warning == "the first 7 images hold only 2 of the 4 classes (this data set is stored sorted by class)");
  CHECK(train::first_n(d, 16, &warning).size() == 16);
  CHECK(warning.empty());  // all four classes present
  CHECK(train::first_n(d, 0, &warning).size() == 20);  // no limit
  CHECK(warning.empty());
  // A shuffled data set (CIFAR-100's binaries): 100 images cannot hold all 100 classes, but they
  // hold about as many as a random draw would, so no "sorted by class" warning.
  data::Dataset shuffled;
  shuffled.name = "shuffled";
  for (int k = 0; k < 100; ++k) shuffled.class_names.push_back(std::to_string(k));
  shuffled.images = zeros({500, 1, 2, 2}, DType::u8);
  std::vector<int64_t> ys;
  Generator g(4);
  for (int i = 0; i < 500; ++i) ys.push_back((int64_t)(g.next_u64() % 100));
  shuffled.labels = from_vector(ys, {500});
  CHECK(train::first_n(shuffled, 100, &warning).size() == 100);
  CHECK(warning.empty());
  // The random subset is the remedy the warning names: it reaches past the first two classes.
  std::vector<int64_t> r = to_int_vector(data::random_subset(d, 7, 0).labels);
  CHECK(r.size() == 7);
  CHECK(*std::max_element(r.begin(), r.end()) >= 2);
}

// ---------------------------------------------------------------- the regime interface

// The smallest regime: one parameter w, each epoch adds 1 to it (no optimizer), and reports a
// test accuracy from a fixed table; it raises SIGINT after the epoch named by interrupt_after.
// It proves what run_regime owns for every regime: resume from the regime's own state, the
// best accuracy and its weights, metrics.jsonl cut back on resume, Ctrl-C after an epoch.
namespace {
struct CountingModule : nn::Module {
  Tensor w = zeros({1});
  CountingModule() { register_parameter("w", w); }
  std::string type_name() const override { return "Counting"; }
};
struct CountingRegime : train::Regime {
  CountingModule m;
  std::vector<double> accuracies{0.2, 0.5, 0.4, 0.6};
  int64_t interrupt_after = -1, finished = 0, bests_saved = 0, nan_at = -1;
  double extra_state = 0;  // regime state beside the modules: must survive a resume
  nlohmann::json record() override { return {{"regime", "counting"}}; }
  nn::LabeledModules modules() override { return {{"counter", &m}}; }
  nn::LabeledOptimizers optimizers() override { return {}; }
  void save_state(nn::TrainingCheckpoint& info) override { info.scalars["extra"] = extra_state; }
  void restore_state(const nn::TrainingCheckpoint& ck) override { extra_state = ck.scalars.value("extra", -1.0); }
  train::EpochReport run_epoch(int64_t epoch) override {
    {
      NoGradGuard ng;
      m.w.add_(ones({1}));
    }
    extra_state += 10;
    if (epoch == interrupt_after) std::raise(SIGINT);
    train::EpochReport r;
    r.test_accuracy = accuracies[(size_t)epoch];
    r.line = {{"w", m.w.item()}, {"extra", extra_state},
              {"loss_x", epoch == nan_at ? std::numeric_limits<double>::quiet_NaN() : 1.0}};
    r.summary = fmt::format("w {}", m.w.item());
    return r;
  }
  void save_best(const train::RunRecorder&) override { ++bests_saved; }
  void finish(const train::RunRecorder&) override { ++finished; }
};
}  // namespace

TEST_CASE("run_regime: a regime of its own resumes after Ctrl-C with its state, the best and the metrics") {
  train::TrainConfig c = tiny_config();
  c.epochs = 4;
  const std::string dir = kdtest::temp_path("regime");
  {
    CountingRegime r;
    r.interrupt_after = 1;  // Ctrl-C during epoch 2: it completes, is recorded and checkpointed, then the run stops
    train::RunSummary s = train::run_regime(r, c, dir, "test", false);
    CHECK(s.interrupted);
    CHECK(r.finished == 0);
    CHECK(count_lines(dir + "/metrics.jsonl") == 2);
    CHECK(s.best_epoch == 2);
  }
  {
    CountingRegime r;
    train::RunSummary s = train::run_regime(r, c, dir, "test", true);
    CHECK_FALSE(s.interrupted);
    CHECK(r.finished == 1);
    CHECK(r.m.w.item() == 4.0);      // the module came back from the checkpoint (2) and ran 2 more epochs
    CHECK(r.extra_state == 40.0);    // and so did the regime's own state
    CHECK(s.best_accuracy == doctest::Approx(0.6));
    CHECK(s.best_epoch == 4);
    CHECK(r.bests_saved == 1);       // epoch 3 (0.4) is not better than epoch 2 (0.5); epoch 4 is
  }
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(f, line)) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 4);
  for (int e = 0; e < 4; ++e) {
    CHECK(lines[e]["epoch"] == e + 1);
    CHECK(lines[e]["w"].get<double>() == e + 1.0);
  }
  CHECK(lines[2]["best_acc"].get<double>() == doctest::Approx(0.5));
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  CHECK(config["regime"] == "counting");
}

TEST_CASE("run_regime: resuming a checkpoint of another regime is an error naming it") {
  train::TrainConfig c = tiny_config();
  const std::string dir = kdtest::temp_path("regime_other");
  {
    train::Run run = tiny_run(c, dir);
    train::run_training(run, false);
  }
  CountingRegime r;
  CHECK_THROWS_WITH_AS(train::run_regime(r, c, dir, "test", true), doctest::Contains("counter"), Error);
}

TEST_CASE("run_regime: a regime's non-finite epoch loss stops the run, naming it and the last good checkpoint") {
  train::TrainConfig c = tiny_config();
  c.epochs = 4;
  const std::string dir = kdtest::temp_path("regime_nan");
  CountingRegime r;
  r.nan_at = 1;  // epoch 2
  const std::string want = "non-finite in epoch 2 (loss_x); the last good checkpoint is " + dir +
                           "/checkpoint.safetensors";
  CHECK_THROWS_WITH_AS(train::run_regime(r, c, dir, "test", false), doctest::Contains(want.c_str()), Error);
  CHECK(count_lines(dir + "/metrics.jsonl") == 1);  // epoch 2 was not recorded
  CountingRegime again;  // and the run resumes from epoch 1's checkpoint
  again.nan_at = -1;
  train::run_regime(again, c, dir, "test", true);
  CHECK(again.m.w.item() == 4.0);
  CHECK(count_lines(dir + "/metrics.jsonl") == 4);
}

TEST_CASE("coarse_labels: CIFAR-100's 20 super-classes as the labels (recipe key), refused for other data sets") {
  train::TrainConfig c = kdtest::tiny_config();
  train::parse_recipe(R"({"coarse_labels": true})", c, "test");
  CHECK(c.coarse_labels);
  CHECK(c.to_json()["coarse_labels"] == true);
  CHECK_THROWS_WITH_SUBSTR(train::prepare_run(c, kdtest::temp_path("coarse_bad"), "test"),
                           "only cifar100 has super-classes");
  // with the real CIFAR-100 (KDLAB_CIFAR100_DIR): the model gets 20 outputs and the labels are coarse
  const char* dir = std::getenv("KDLAB_CIFAR100_DIR");
  if (!dir) return;
  c.dataset = "cifar100";
  c.data_dir = dir;
  c.train_limit = 64;
  c.test_limit = 32;
  c.num_classes = 0;  // from the data set
  train::Run run = train::prepare_run(c, kdtest::temp_path("coarse"), "test");
  CHECK(run.train_set.num_classes() == 20);
  CHECK(run.model->classifier_head().weight.size(0) == 20);
}

TEST_CASE("init_weights for another class count: every tensor but the classifier loads, the head is new") {
  auto base = nn::create_model("resnet8", {10, 3, 32, 5});
  const std::string w = kdtest::temp_path("base10") + ".safetensors";
  nn::save_safetensors(w, base->state_dict());
  train::TrainConfig c = kdtest::tiny_config();  // 4 classes
  c.model = "resnet8";
  c.init_weights = w;
  train::Run run = train::prepare_run(c, kdtest::temp_path("transfer"), "test");
  CHECK(run.extra_record["init_weights"]["new_head"] == nlohmann::json({"fc.weight", "fc.bias"}));
  std::map<std::string, Tensor> loaded;
  for (auto& [n, t] : run.model->state_dict()) loaded[n] = t;
  for (auto& [n, t] : base->state_dict()) {
    CAPTURE(n);
    if (n.rfind("fc.", 0) == 0) CHECK(loaded[n].size(0) == 4);  // the new head
    else CHECK(max(abs(sub(loaded[n].to(DType::f32), t.to(DType::f32)))).item() == 0.0);
  }
  // a mismatch outside the classifier is still an error
  auto wide = nn::create_model("resnet8x4", {10, 3, 32, 5});
  nn::save_safetensors(w, wide->state_dict());
  CHECK_THROWS_WITH_SUBSTR(train::prepare_run(c, kdtest::temp_path("transfer2"), "test"), "shape mismatch");
}
