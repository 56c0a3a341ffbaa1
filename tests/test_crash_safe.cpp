// Crash safety of training (issue #11): a real `kdlab train` run killed with SIGKILL at random
// moments, then resumed each time, ends with exactly the weights of an uninterrupted run
// (single-threaded, fixed seed); every checkpoint left behind is complete and loadable; an
// unwritable run directory is a clear error. ACD-U's two-network regime resumes the same way,
// also from inside an unlearning phase (its snapshots in the checkpoint), and so do FitNets' two
// stages (across the stage boundary), a DGKD chain (link by link) and a federation (issue 28:
// every client's model and optimizers in the checkpoint).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "test_util.h"

extern char** environ;

using namespace kd;
namespace fs = std::filesystem;

static const std::vector<std::string> kTrainArgs{
    "train", "--model", "resnet8", "--dataset", "synthetic", "--train-limit", "192", "--test-limit", "64",
    "--epochs", "4", "--batch-size", "32", "--threads", "1", "--seed", "5", "--set", "log_every=1000"};

// Starts kdlab with args + --out dir [+ --resume]; returns the child's pid.
static pid_t start(const std::string& dir, bool resume, const std::vector<std::string>& kdlab_args = kTrainArgs) {
  std::vector<std::string> args{KDLAB_BIN};
  args.insert(args.end(), kdlab_args.begin(), kdlab_args.end());
  args.push_back("--out");
  args.push_back(dir);
  if (resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// Waits up to `ms` for the child; true (and its exit status) when it ended by itself.
static bool wait_for(pid_t pid, int ms, int& status) {
  for (int waited = 0; waited < ms; waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
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

TEST_CASE("SIGKILL at random moments, then --resume: the weights of an uninterrupted run") {
  const std::string full = kdtest::temp_path("full"), killed = kdtest::temp_path("killed");
  int status = 0;
  pid_t pid = start(full, false);
  REQUIRE(wait_for(pid, 600000, status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  // How long a whole run takes here, to spread the kills over it.
  std::mt19937 rng(12345);
  int kills = 0, finished = 0;
  auto t0 = std::chrono::steady_clock::now();
  pid = start(full + "_timing", false);
  REQUIRE(wait_for(pid, 600000, status));
  const int run_ms = (int)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  double scale = 1.0;  // shrinks when a run beat its kill (a busy machine made the timing run slow)
  for (int attempt = 0; attempt < 40 && !finished; ++attempt) {
    const bool resume = fs::exists(killed + "/checkpoint.safetensors");
    pid = start(killed, resume);
    const int delay = std::max(1, (int)(scale * std::uniform_int_distribution<int>(run_ms / 10, run_ms / 2)(rng)));
    if (kills < 6 && !wait_for(pid, delay, status)) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++kills;
      // whatever the moment, the checkpoint on disk is complete (written to .tmp, then renamed)
      if (fs::exists(killed + "/checkpoint.safetensors")) CHECK_NOTHROW(nn::load_safetensors(killed + "/checkpoint.safetensors"));
      continue;
    }
    if (kills >= 6) REQUIRE(wait_for(pid, 600000, status));
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    if (kills < 3) {  // it ran to the end before enough kills: start over with shorter delays
      fs::remove_all(killed);
      kills = 0;
      scale /= 2;
      continue;
    }
    finished = 1;
  }
  REQUIRE(finished);
  CHECK(kills >= 3);
  CHECK(weights_of(killed + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
  // metrics.jsonl ends with one line per epoch, as the uninterrupted run's
  auto count = [](const std::string& p) {
    std::ifstream f(p);
    std::string l;
    int n = 0;
    while (std::getline(f, l)) n += !l.empty();
    return n;
  };
  CHECK(count(killed + "/metrics.jsonl") == 4);
}

TEST_CASE("an unwritable run directory is a clear error, not a crash") {
  const std::string file = kdtest::temp_path("a_file");
  std::ofstream(file) << "not a directory";
  const std::string cmd = std::string(KDLAB_BIN) +
                          " train --model resnet8 --dataset synthetic --train-limit 32 --test-limit 16 --epochs 1 --out " +
                          file + "/run 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  CHECK(rc != 0);
  CHECK(out.find("cannot create the run directory") != std::string::npos);
}

// ACD-U: 7 epochs with a warm-up epoch, selections at epochs 5 and 7 (0-based 4 and 6, the last
// skipped) and two unlearning epochs after each, so a checkpoint after epoch 5 holds the
// unlearning snapshots, the loss histories and the forget sets.
static const std::vector<std::string> kAcdUArgs{
    "distill", "--method", "acd_u", "--student", "resnet8", "--teacher", "resnet8", "--dataset", "synthetic",
    "--train-limit", "256", "--test-limit", "64", "--epochs", "7", "--batch-size", "32", "--threads", "1",
    "--seed", "3", "--label-noise", "sym:0.4", "--set", "warmup=1", "--set", "select_start=2", "--set",
    "select_every=2", "--set", "forget_epochs=2", "--set", "rampup=1", "--set", "log_every=1000"};

// The epoch a checkpoint file holds (0 while there is none); the file is replaced atomically, so
// reading it while the run writes the next one is safe.
static int64_t checkpoint_epoch(const std::string& dir) {
  const std::string path = dir + "/checkpoint.safetensors";
  if (!fs::exists(path)) return 0;
  return std::stoll(nn::load_safetensors(path).metadata.at("epoch"));
}

// Starts a run (args + --out dir) and kills it with SIGKILL as soon as the checkpoint in
// ckpt_dir (default: dir) holds `epochs` epochs.
static void run_until_checkpoint(const std::string& dir, bool resume, int64_t epochs,
                                 const std::vector<std::string>& args = kAcdUArgs, std::string ckpt_dir = "") {
  if (ckpt_dir.empty()) ckpt_dir = dir;
  pid_t pid = start(dir, resume, args);
  int status = 0;
  for (int waited = 0; waited < 600000 && checkpoint_epoch(ckpt_dir) < epochs; waited += 5) {
    REQUIRE_MESSAGE(waitpid(pid, &status, WNOHANG) == 0, "the run ended before its checkpoint reached epoch ", epochs);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

// Runs kdlab to its end (up to 10 minutes) and requires a clean exit.
static void run_to_end(const std::string& dir, bool resume, const std::vector<std::string>& args) {
  int status = 0;
  const pid_t pid = start(dir, resume, args);
  REQUIRE(wait_for(pid, 600000, status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

static std::vector<nlohmann::json> metric_lines(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) out.push_back(nlohmann::json::parse(l));
  return out;
}

// Every epoch's record of two runs equal, times aside; `epochs` lines in each.
static void check_same_metrics(const std::string& a_dir, const std::string& b_dir, size_t epochs) {
  const auto a = metric_lines(a_dir), b = metric_lines(b_dir);
  REQUIRE(a.size() == epochs);
  REQUIRE(b.size() == epochs);
  for (size_t e = 0; e < a.size(); ++e)
    for (auto& [key, value] : a[e].items()) {
      if (key == "time_s" || key == "images_per_s") continue;
      INFO("epoch ", e + 1, " ", key);
      CHECK(b[e].contains(key));
      if (b[e].contains(key)) CHECK(b[e][key] == value);
    }
}

TEST_CASE("ACD-U killed with SIGKILL and resumed, twice (once inside an unlearning phase): the run of one go") {
  const std::string full = kdtest::temp_path("acd_u_full"), killed = kdtest::temp_path("acd_u_killed");
  run_to_end(full, false, kAcdUArgs);

  run_until_checkpoint(killed, false, 3);  // the loss history of epoch 3 is needed by the selection of 5
  run_until_checkpoint(killed, true, 5);   // after the first selection: an unlearning phase is on
  const auto ckpt = nn::load_safetensors(killed + "/checkpoint.safetensors");
  REQUIRE(ckpt.metadata.at("epoch") == "5");
  CHECK(ckpt.metadata.at("modules").find("snapshot1") != std::string::npos);  // resumed inside the phase
  CHECK(ckpt.metadata.count("optim_2"));                                     // network 2's optimizer
  run_to_end(killed, true, kAcdUArgs);

  CHECK(weights_of(killed + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
  CHECK(weights_of(killed + "/second_last.safetensors") == weights_of(full + "/second_last.safetensors"));
  CHECK(metric_lines(full).at(4).value("selected1", -1) >= 0);  // the selection really happened at epoch 5
  check_same_metrics(full, killed, 7);
}

// A teacher for the regimes below (resnet8, 2 epochs on the synthetic set's 10 classes).
static std::string crash_teacher() {
  static const std::string dir = kdtest::temp_path("crash_teacher");
  if (!fs::exists(dir + "/model_last.safetensors"))
    run_to_end(dir, false, {"train", "--model", "resnet8", "--dataset", "synthetic", "--train-limit", "128",
                            "--test-limit", "32", "--epochs", "2", "--threads", "1", "--seed", "1"});
  return dir + "/model_last.safetensors";
}

TEST_CASE("FitNets' two stages killed with SIGKILL at the end of the hint stage and resumed: the run of one go") {
  const std::vector<std::string> args{
      "distill", "--method", "fitnet", "--set", "stages=2", "--set", "hint_epochs=2", "--student", "resnet8",
      "--teacher", "resnet8", "--teacher-weights", crash_teacher(), "--dataset", "synthetic", "--train-limit", "192",
      "--test-limit", "64", "--epochs", "4", "--batch-size", "32", "--threads", "1", "--seed", "4", "--set",
      "log_every=1000"};
  const std::string full = kdtest::temp_path("fitnet2_full"), killed = kdtest::temp_path("fitnet2_killed");
  run_to_end(full, false, args);
  run_until_checkpoint(killed, false, 1, args);  // inside the hint stage
  run_until_checkpoint(killed, true, 2, args);   // at its end: the next epoch is KD's
  REQUIRE(checkpoint_epoch(killed) == 2);
  run_to_end(killed, true, args);
  CHECK(weights_of(killed + "/model_last.safetensors") == weights_of(full + "/model_last.safetensors"));
  check_same_metrics(full, killed, 4);
  const auto m = metric_lines(killed);
  CHECK(m[1]["stage"] == 1);
  CHECK(m[2]["stage"] == 2);
}

TEST_CASE("a DGKD chain killed with SIGKILL inside its second link, run again: the chain of one go") {
  const std::vector<std::string> args{
      "dgkd-chain", "--teacher", "resnet8", "--teacher-weights", crash_teacher(), "--assistants", "resnet8",
      "--student", "resnet8", "--dataset", "synthetic", "--train-limit", "128", "--test-limit", "32", "--epochs",
      "3", "--threads", "1", "--seed", "2", "--set", "log_every=1000"};
  const std::string full = kdtest::temp_path("chain_full"), killed = kdtest::temp_path("chain_killed");
  run_to_end(full, false, args);
  run_until_checkpoint(killed, false, 1, args, killed + "/student_resnet8");  // the assistant done, the student at 1 of 3
  REQUIRE(fs::exists(killed + "/1_resnet8/model_last.safetensors"));
  REQUIRE_FALSE(fs::exists(killed + "/student_resnet8/model_last.safetensors"));
  run_to_end(killed, false, args);  // the same command again: skips the assistant, resumes the student
  for (const std::string link : {"1_resnet8", "student_resnet8"}) {
    CAPTURE(link);
    CHECK(weights_of(killed + "/" + link + "/model_last.safetensors") ==
          weights_of(full + "/" + link + "/model_last.safetensors"));
    check_same_metrics(full + "/" + link, killed + "/" + link, 3);
  }
}

// A federation of two architectures (FedMD: SGD with momentum locally, Adam in the digest, so every
// client has optimizer state to carry), 4 rounds of 3 of 4 clients.
static const std::vector<std::string> kFederateArgs{
    "federate", "--algorithm", "fedmd", "--model", "resnet8", "--model", "resnet14", "--clients", "4",
    "--participation", "0.75", "--rounds", "4", "--partition", "dirichlet:0.5", "--dataset", "synthetic",
    "--train-limit", "320", "--test-limit", "64", "--public-dataset", "synthetic", "--set", "public_limit=128",
    "--set", "public_sample=64", "--set", "digest_batch=32", "--batch-size", "32", "--set", "momentum=0.9",
    "--threads", "1", "--seed", "4"};

TEST_CASE("a federation killed with SIGKILL and resumed, twice: the run of one go") {
  const std::string full = kdtest::temp_path("fed_full"), killed = kdtest::temp_path("fed_killed");
  run_to_end(full, false, kFederateArgs);

  run_until_checkpoint(killed, false, 1, kFederateArgs);
  run_until_checkpoint(killed, true, 3, kFederateArgs);
  const auto ckpt = nn::load_safetensors(killed + "/checkpoint.safetensors");
  CHECK(ckpt.metadata.count("optim_client3"));
  CHECK(ckpt.metadata.count("optim_digest3"));
  run_to_end(killed, true, kFederateArgs);

  for (int k = 0; k < 4; ++k) {
    const std::string file = "/client" + std::to_string(k) + "_last.safetensors";
    CHECK(weights_of(killed + file) == weights_of(full + file));
  }
  const auto a = metric_lines(full), b = metric_lines(killed);
  REQUIRE(a.size() == 4);
  REQUIRE(b.size() == 4);
  for (size_t r = 0; r < a.size(); ++r)
    for (const char* key : {"test_acc", "train_loss", "loss_digest", "participants", "bytes_up_total", "clients"}) {
      INFO("round ", r + 1, " ", key);
      CHECK(b[r][key] == a[r][key]);
    }
}
