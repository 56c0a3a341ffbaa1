// kdlab report's tables from hand-written metrics files, and kdlab sweep's skip / resume.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "analysis/report.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

// A finished run directory with the given per-epoch test accuracies.
static void fake_run(const std::string& dir, const std::vector<double>& test_acc, double seconds,
                     const std::vector<double>& val_acc = {}) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << nlohmann::json{{"config", {{"epochs", (int64_t)test_acc.size()}}}}.dump();
  std::ofstream m(dir + "/metrics.jsonl");
  double best = 0, best_val = -1, val_sel = 0;
  for (size_t e = 0; e < test_acc.size(); ++e) {
    best = std::max(best, test_acc[e]);
    nlohmann::json line = {{"epoch", e + 1},  {"train_loss", 1.0},      {"train_acc", 0.5}, {"test_loss", 1.0},
                           {"test_acc", test_acc[e]}, {"best_acc", best}, {"time_s", seconds}};
    if (!val_acc.empty()) {
      if (val_acc[e] > best_val) best_val = val_acc[e], val_sel = test_acc[e];
      line["val_acc"] = val_acc[e];
      line["val_selected_test_acc"] = val_sel;
    }
    m << line.dump() << "\n";
  }
}

TEST_CASE("kdlab report: mean ± std per method, gain over the baseline, validation-selected accuracy") {
  const std::string dir = kdtest::temp_path("sweep_report");
  fake_run(dir + "/baseline_seed0", {0.50, 0.70, 0.60}, 10, {0.4, 0.6, 0.5});
  fake_run(dir + "/baseline_seed1", {0.50, 0.66, 0.64}, 12, {0.4, 0.5, 0.6});
  fake_run(dir + "/kd_seed0", {0.60, 0.72, 0.70}, 20, {0.5, 0.7, 0.6});
  fake_run(dir + "/kd_seed1", {0.60, 0.74, 0.74}, 22, {0.5, 0.6, 0.7});
  fake_run(dir + "/unfinished_seed0", {0.5}, 1);
  std::ofstream(dir + "/unfinished_seed0/config.json") << R"({"config": {"epochs": 3}})";
  fs::create_directories(dir + "/just_started_seed0");  // a run in progress, no epoch finished yet
  std::ofstream(dir + "/just_started_seed0/metrics.jsonl");
  fs::create_directories(dir + "/not_a_run");
  const std::string md = distill::write_sweep_report(dir, "", "baseline");
  // baseline last: 60, 64 -> 62.00 ± 2.83; best: 70, 66 -> 68.00 ± 2.83; val-selected: 70 (epoch 2), 64 (epoch 3)
  CHECK(md.find("| baseline | 0,1 | 62.00 ± 2.83 | 68.00 ± 2.83 | 67.00 ± 4.24 | 12.0 |  |") != std::string::npos);
  // kd last: 70, 74 -> 72.00 ± 2.83; gain 10.00 ± 4.00
  CHECK(md.find("| kd | 0,1 | 72.00 ± 2.83 | 73.00 ± 1.41 | 73.00 ± 1.41 | 22.0 | +10.00 ± 4.00 |") != std::string::npos);
  CHECK(md.find("unfinished") == std::string::npos);
  CHECK(md.find("just_started") == std::string::npos);
  CHECK(fs::exists(dir + "/report.md"));
  CHECK(fs::exists(dir + "/accuracy.png"));
  CHECK(fs::exists(dir + "/curves.png"));
  CHECK_THROWS_WITH_SUBSTR(distill::write_sweep_report(dir, "zzz_", "baseline"), "no finished runs");
}

TEST_CASE("kdlab sweep skips finished runs and resumes the others") {
  const std::string dir = kdtest::temp_path("sweep");
  const std::string cmd = std::string(KDLAB_BIN) + " sweep " + KDLAB_SOURCE_DIR +
                          "/recipes/cifar10_laptop.json --dataset synthetic --methods baseline --seeds 0,1 "
                          "--epochs 1 --train-limit 64 --test-limit 32 --val-split 16 --threads 1 --out " + dir;
  auto run = [&] {
    std::string out;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    CHECK(pclose(p) == 0);
    return out;
  };
  run();
  REQUIRE(fs::exists(dir + "/baseline_seed1/model_last.safetensors"));
  fs::remove(dir + "/baseline_seed1/model_last.safetensors");  // as if stopped before its end
  const std::string again = run();
  CHECK(again.find("baseline seed 0: finished already") != std::string::npos);
  CHECK(again.find("baseline seed 1 (resuming)") != std::string::npos);
  CHECK(fs::exists(dir + "/baseline_seed1/model_last.safetensors"));
  CHECK(fs::exists(dir + "/report.md"));
  auto cfg = nlohmann::json::parse(std::ifstream(dir + "/baseline_seed0/config.json"));
  CHECK(cfg["val_set"].get<std::string>().find("16") != std::string::npos);
}
