// Every recipe under recipes/ parses, names models of the zoo, and builds its method on those
// models: the distiller is created from one forward pass of each network (as a run does, so a
// FitNet regressor or a WKD-F projector is sized from the real maps), then one loss and its
// backward run on a small batch and give a finite value with a gradient for the student.
// Random weights stand in for the teachers (the CIFAR-100 checkpoints are not needed).
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "distill/distill_run.h"
#include "train/recipe.h"
#include "engine/npy.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> recipe_files() {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(std::string(KDLAB_SOURCE_DIR) + "/recipes"))
    if (e.is_regular_file() && e.path().extension() == ".json" &&
        e.path().parent_path().filename() != "federated")  // kdlab federate's (test_federated.cpp)
      files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// A K x K cost matrix for WKD-L (0 on the diagonal, 1 elsewhere).
std::string cost_matrix(int64_t K) {
  const std::string path = kdtest::temp_path("cost_" + std::to_string(K) + ".npy");
  std::vector<float> c(K * K, 1.f);
  for (int64_t i = 0; i < K; ++i) c[i * K + i] = 0.f;
  save_npy(path, from_vector(c, {K, K}));
  return path;
}

int64_t classes_of(const train::TrainConfig& c) {
  if (c.num_classes > 0) return c.num_classes;
  return c.dataset == "cifar100" ? 100 : 10;
}

}  // namespace

TEST_CASE("recipes: every recipe parses and builds its method on its models") {
  const std::vector<std::string> files = recipe_files();
  REQUIRE(files.size() >= 100);  // recipes/cifar100 holds the benchmark, 10 pairs per method
  int64_t built = 0, with_loss = 0;
  std::map<std::string, int> per_method;
  std::map<std::string, std::shared_ptr<nn::Classifier>> teachers;
  Generator gen(3);
  const Tensor x = randn({4, 3, 32, 32}, gen);
  for (const std::string& path : files) {
    CAPTURE(path);
    train::TrainConfig c;
    REQUIRE_NOTHROW(train::load_recipe(path, c));
    const int64_t K = classes_of(c);
    auto student = nn::create_model(c.model, {K, 3, 32, 1});
    CHECK(student);
    if (c.method.empty() || c.method == "baseline" || c.method == "acd_u") continue;  // no distiller
    REQUIRE(!c.teacher.empty());
    // one teacher per (model, K): building and running the big ones is most of this test's time
    auto& teacher = teachers[c.teacher + "/" + std::to_string(K)];
    if (!teacher) {
      teacher = nn::create_model(c.teacher, {K, 3, 32, 2});
      teacher->eval();
    }
    distill::DistillerContext ctx;
    ctx.num_classes = K;
    ctx.seed = c.seed;
    ctx.student_model = student;
    ctx.teacher_model = teacher;
    {
      NoGradGuard ng;
      student->eval();
      ctx.student_sample = student->forward(x);
      student->train();
      ctx.teacher_sample = teacher->forward(x);
    }
    distill::Params params = distill::params_from_json(c.method_params);
    if (c.method == "wkd_l") params["cost_matrix"] = cost_matrix(K);  // built by kdlab wkd-cost in a real run
    std::shared_ptr<distill::Distiller> d;
    REQUIRE_NOTHROW(d = distill::create_distiller(c.method, params, ctx));
    ++built;
    per_method[c.method]++;
    // The recipe's parameters are the ones in effect (none silently dropped or renamed).
    const distill::Params in_effect = d->params();
    for (const auto& [key, value] : distill::params_from_json(c.method_params)) {
      if (key.find('.') != std::string::npos) continue;  // fusion parts ("dkd.beta") are checked by the parts
      CAPTURE(key);
      REQUIRE(in_effect.count(key));
    }
    // One loss on the batch, where the method needs nothing beyond the two networks' outputs
    // (DGKD reads its assistants' outputs, VRM virtual views, HCD is checked in test_hcd).
    const std::string m = c.method;
    if (m == "dgkd" || m == "vrm" || m.find("hcd") != std::string::npos) continue;
    nn::ModelOutput t;
    {
      NoGradGuard ng;
      t = teacher->forward(x);
    }
    nn::ModelOutput s = student->forward(x);
    distill::BatchInfo info;
    std::vector<int64_t> y;
    for (int64_t i = 0; i < 4; ++i) y.push_back(i % K);
    info.labels = from_vector(y, {4});
    info.epoch = 1;
    info.total_epochs = c.epochs;
    distill::LossBreakdown l = distill::distill_loss(*d, s, t, info);
    REQUIRE(l.total.defined());
    CHECK(std::isfinite(l.total.item()));
    l.total.backward();
    double gsum = 0;
    for (const Tensor& p : student->parameters())
      if (p.grad().defined()) gsum += sum(abs(p.grad())).item();
    CHECK(gsum > 0);
    ++with_loss;
  }
  MESSAGE(built << " recipes built their method, " << with_loss << " also ran a loss and backward");
  for (const char* m : {"kd", "dkd", "fitnet", "at", "sp", "pkt", "rkd", "cc", "catkd"}) {
    CAPTURE(m);
    CHECK(per_method[m] == 10);  // the ten pairs of the benchmark
  }
  CHECK(per_method["wkd_f"] == 2);  // the official WKD release gives these two pairs
}

// ---------------------------------------------------------------- the CIFAR-100 recipes, run

// With CIFAR-100 on disk (KDLAB_CIFAR100_DIR = the cifar-100-binary folder, its .tar.gz, or a
// packed .bin), every CIFAR-100 recipe runs end to end through `kdlab distill`'s entry
// (distill::run_method): its real student, teacher, assistants and method, its optimizer and
// schedule, the teacher cache where it asks for one, on the first 2 x batch_size training images
// for one epoch (2 steps) and 100 test images. Random weights stand in for the teachers (the
// point is that the recipe runs, not what it reaches). Skipped when the variable is unset: CI has
// no CIFAR-100.
//
// KDLAB_RECIPE_COST_OUT=FILE also writes one JSON line per recipe with its measured training
// images/s at KDLAB_RECIPE_COST_STEPS steps (default 2); scripts/cifar100_recipe_costs.sh turns
// them into recipes/cifar100/README.md's wall-time estimates.
TEST_CASE("recipes: with CIFAR-100 present, every CIFAR-100 recipe trains its steps end to end") {
  const char* data = std::getenv("KDLAB_CIFAR100_DIR");
  if (!data || !*data) {
    MESSAGE("KDLAB_CIFAR100_DIR is not set: the CIFAR-100 recipes are not run (set it to cifar-100-binary)");
    return;
  }
  const char* cost_out = std::getenv("KDLAB_RECIPE_COST_OUT");
  const char* steps_env = std::getenv("KDLAB_RECIPE_COST_STEPS");
  const int64_t steps = steps_env ? std::max<int64_t>(2, std::atoll(steps_env)) : 2;
  const char* only = std::getenv("KDLAB_RECIPE_FILTER");  // a substring of the recipe file names to run
  // Stand-in teachers: random weights whose BatchNorm running statistics are calibrated on real
  // images (30 training-mode passes without gradient), so that in evaluation mode their features
  // have a trained network's scale. (With the initial statistics, mean 0 and variance 1, a deep
  // random network's features grow with depth and a relation loss on them overflows: the recipe
  // would fail for a reason no real teacher has.)
  const data::Dataset calib = train::first_n(data::load_dataset("cifar100", data, "train"), 640);
  const data::TransformConfig tc = data::eval_transform(calib);
  const Tensor calib_images = data::normalize_images(calib.images, tc.mean, tc.std);  // (640, 3, 32, 32)
  std::map<std::string, std::string> random_weights;  // model -> a file of its stand-in weights
  auto weights_of = [&](const std::string& model) {
    std::string& path = random_weights[model];
    if (path.empty()) {
      path = kdtest::temp_path("random_" + model + ".safetensors");
      auto net = nn::create_model(model, {100, 3, 32, 7});
      net->train();
      NoGradGuard ng;
      for (int64_t i = 0; i < 30; ++i) net->forward(calib_images.slice(0, (i % 10) * 64, (i % 10 + 1) * 64));
      train::save_weights(path, *net, model, 100);
    }
    return path;
  };
  int64_t ran = 0;
  for (const std::string& path : recipe_files()) {
    train::TrainConfig c;
    train::load_recipe(path, c);
    if (c.dataset != "cifar100" || (only && path.find(only) == std::string::npos)) continue;
    CAPTURE(path);
    const int64_t recipe_epochs = c.epochs;
    c.data_dir = data;
    c.epochs = 1;
    c.milestones.clear();
    c.warmup_epochs = 0;
    c.train_limit = steps * c.batch_size;
    c.test_limit = 100;
    if (!c.teacher.empty()) c.teacher_weights = weights_of(c.teacher);
    for (std::string& t : c.teachers) t = t.substr(0, t.find(':')) + ":" + weights_of(t.substr(0, t.find(':')));
    for (std::string& a : c.assistants) a = a.substr(0, a.find(':')) + ":" + weights_of(a.substr(0, a.find(':')));
    if (c.method_params.is_object() && c.method_params.contains("cost_matrix"))
      c.method_params["cost_matrix"] = cost_matrix(100);  // kdlab wkd-cost builds it in a real run
    const std::string dir = kdtest::temp_path("recipe_run");
    c.teacher_cache_dir = dir + "/teacher_cache";
    train::RunSummary s;
    CHECK_NOTHROW(s = distill::run_method(c, dir, "test", false));  // every failing recipe is listed
    CHECK_FALSE(s.interrupted);
    std::ifstream f(dir + "/metrics.jsonl");
    std::string line;
    if (!std::getline(f, line)) {
      FAIL_CHECK("no metrics line");
      continue;
    }
    const nlohmann::json m = nlohmann::json::parse(line);
    CHECK(std::isfinite(m["train_loss"].get<double>()));
    CHECK(fs::exists(dir + "/model_last.safetensors"));
    if (cost_out) {
      std::ofstream out(cost_out, std::ios::app);
      out << nlohmann::json{{"recipe", fs::path(path).filename().string()}, {"steps", steps},
                            {"batch_size", c.batch_size}, {"images_per_s", m["images_per_s"]},
                            {"train_images", 50000}, {"epochs", recipe_epochs}}.dump()
          << "\n";
    }
    fs::remove_all(dir);
    ++ran;
  }
  MESSAGE(ran << " CIFAR-100 recipes ran " << steps << " steps each");
  CHECK(ran > 0);
}
