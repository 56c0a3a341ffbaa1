// Federated distillation (issue 28): the equations against PyTorch (tests/reference/gen_federated.py:
// FedAvg exactly, FedDF's server loss and one server step, FD's class table and client loss,
// FedMD's consensus and digest), the partitions' invariants, and small federations end to end
// (every algorithm runs; a run resumed from its checkpoint equals the run of one go; the SIGKILL
// version is in test_crash_safe.cpp).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "analysis/federated_plot.h"
#include "datasets/dataset.h"
#include "datasets/partition.h"
#include "distill/federated/fed_math.h"
#include "distill/federated/federated.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/layers.h"
#include "test_util.h"

using namespace kd;
using json = nlohmann::json;
namespace fs = std::filesystem;

// ------------------------------------------------------------------ golden values

TEST_CASE("federated losses against PyTorch: FedDF's server loss, FD's client loss, FedMD's digest") {
  kdtest::GoldenTable table;
  table["feddf_loss"] = [](const std::vector<Tensor>& in, const json& p) -> std::vector<Tensor> {
    distill::LogitLoss loss("kd", p["T"].get<double>(), in[0].size(1));
    const Tensor z_bar = distill::mean_logits({in[1], in[2], in[3]});
    return {loss(in[0], z_bar, argmax(z_bar, 1))};
  };
  table["fd_client_loss"] = [](const std::vector<Tensor>& in, const json& p) -> std::vector<Tensor> {
    distill::LogitLoss loss("kd", 1.0, in[0].size(1));
    return {distill::fd_client_loss(loss, in[0], in[1], in[2], p["lambda"].get<double>())};
  };
  table["fedmd"] = [](const std::vector<Tensor>& in, const json&) -> std::vector<Tensor> {
    const Tensor consensus = distill::mean_logits({in[1], in[2], in[3]});
    return {distill::fedmd_digest_loss(in[0], consensus), consensus};
  };
  CHECK(kdtest::run_golden_file("federated.json", table) == 5);
}

TEST_CASE("FedAvg's weighted average equals PyTorch's bit for bit; num_batches_tracked is the max") {
  const json c = kdtest::golden_case("federated_exact.json", "fedavg_three_clients");
  std::vector<nn::NamedTensors> states;
  for (const auto& s : c["states"]) {
    nn::NamedTensors st;
    for (auto& [name, t] : s.items()) st.emplace_back(name, kdtest::tensor_from_json(t));
    states.push_back(st);
  }
  const nn::NamedTensors avg = distill::fedavg(states, c["sizes"].get<std::vector<double>>());
  REQUIRE(avg.size() == 3);
  for (const auto& [name, t] : avg) {
    INFO(name);
    const Tensor expected = kdtest::tensor_from_json(c["expected"][name]);
    REQUIRE(t.dtype() == expected.dtype());
    if (t.dtype() == DType::i64) CHECK(t.item() == expected.item());
    else CHECK(to_float_vector(t) == to_float_vector(expected));
  }
  CHECK(distill::message_bytes(avg) == (12 + 3) * 4 + 8);
  // a client with another architecture is refused, naming the way out
  states[1].pop_back();
  CHECK_THROWS_WITH_AS(distill::fedavg(states, {1, 1, 1}), doctest::Contains("use fd or fedmd"), Error);
}

namespace {
// A linear student on flattened inputs, the reference script's torch.nn.Linear.
class LinearNet : public nn::Classifier {
 public:
  LinearNet(int64_t D, int64_t K) {
    Generator gen(0);
    fc = register_module("fc", std::make_shared<nn::Linear>(D, K, gen));
  }
  nn::ModelOutput forward(const Tensor& x) override {
    nn::ModelOutput out;
    out.logits = fc->forward(x.flatten(1));  // (B, K)
    return out;
  }
  std::string classifier_name() const override { return "fc"; }
  std::shared_ptr<nn::Linear> fc;
};
}  // namespace

TEST_CASE("one FedDF server step (KL to the teachers' mean, clip 5, Adam 1e-3) matches PyTorch") {
  const json c = kdtest::golden_case("federated_exact.json", "feddf_step_linear");
  const Tensor x = kdtest::tensor_from_json(c["x"]), W = kdtest::tensor_from_json(c["W"]);
  LinearNet net(x.size(1), W.size(0));
  {
    NoGradGuard no_grad;
    net.fc->weight.copy_(W);
    net.fc->bias.copy_(kdtest::tensor_from_json(c["b"]));
  }
  std::vector<Tensor> teachers;
  for (const auto& t : c["teachers"]) teachers.push_back(kdtest::tensor_from_json(t));
  nn::Adam adam(net.named_parameters(), 1e-3);
  distill::LogitLoss loss("kd", 1.0, W.size(0));
  const double l = distill::feddf_server_step(net, x, distill::mean_logits(teachers), loss, adam, 1.0, 5.0);
  CHECK(l == doctest::Approx(c["loss"].get<double>()).epsilon(1e-5));
  CHECK(c["grad_norm"].get<double>() > 5.0);  // the clip acted
  CHECK(kdtest::allclose(net.fc->weight, kdtest::tensor_from_json(c["W_after"]), 1e-5, 1e-6).ok);
  CHECK(kdtest::allclose(net.fc->bias, kdtest::tensor_from_json(c["b_after"]), 1e-5, 1e-6).ok);
}

TEST_CASE("FD: per-class mean logits, counts and the server's table over the clients that hold a class") {
  const json c = kdtest::golden_case("federated_exact.json", "fd_table_three_clients");
  std::vector<Tensor> means, counts;
  for (size_t k = 0; k < 3; ++k) {
    distill::ClassLogits acc;
    const Tensor z = kdtest::tensor_from_json(c["logits"][k]), y = kdtest::tensor_from_json(c["labels"][k]);
    acc.add(z.slice(0, 0, 3), y.slice(0, 0, 3));  // in two batches, as training sees them
    acc.add(z.slice(0, 3, z.size(0)), y.slice(0, 3, y.size(0)));
    means.push_back(acc.means());
    counts.push_back(acc.counts);
    CHECK(kdtest::allclose(means.back(), kdtest::tensor_from_json(c["means"][k]), 1e-6, 1e-6).ok);
    CHECK(to_int_vector(counts.back()) == to_int_vector(kdtest::tensor_from_json(c["counts"][k])));
  }
  Tensor has;
  const Tensor table = distill::fd_global_table(means, counts, &has);
  CHECK(kdtest::allclose(table, kdtest::tensor_from_json(c["global"]), 1e-6, 1e-6).ok);
  CHECK(to_int_vector(has) == std::vector<int64_t>{1, 1, 1, 1});
}

TEST_CASE("a server loss that reads more than logits is refused; an unknown one lists the methods") {
  CHECK_THROWS_WITH_AS(distill::LogitLoss("fitnet", 1.0, 10), doctest::Contains("only logits travel"), Error);
  CHECK_THROWS_WITH_AS(distill::LogitLoss("at", 1.0, 10), doctest::Contains("only logits travel"), Error);
  CHECK_THROWS_AS(distill::LogitLoss("no_such_loss", 1.0, 10), Error);
  CHECK_NOTHROW(distill::LogitLoss("dkd", 1.0, 10));
}

// ------------------------------------------------------------------ partitions

static Tensor labels_of(int64_t n, int64_t K) {
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = (i * 7 + i / 13) % K;
  return from_vector(y, {n});
}

static void check_covers_once(const data::Partition& p, int64_t N) {
  std::vector<int> seen(N, 0);
  for (const auto& c : p)
    for (int64_t i : c) ++seen[i];
  CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
}

TEST_CASE("partitions: every image in exactly one client, the minimum size, the same seed -> the same split") {
  const int64_t N = 3000, K = 10, n = 20;
  const Tensor y = labels_of(N, K);
  for (const std::string spec : {"iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100", "shards:2"}) {
    INFO(spec);
    const data::Partition p = data::make_partition(y, K, n, spec, 5);
    REQUIRE((int64_t)p.size() == n);
    check_covers_once(p, N);
    for (const auto& c : p) CHECK(c.size() >= 10);
    CHECK(data::make_partition(y, K, n, spec, 5) == p);
    CHECK(data::make_partition(y, K, n, spec, 6) != p);
  }
  // iid: sizes differ by at most one; shards:2: at most 2 classes + the classes a shard straddles
  const data::Partition iid = data::make_partition(y, K, n, "iid", 0);
  for (const auto& c : iid) CHECK((c.size() == N / n || c.size() == N / n + 1));
  for (const auto& row : data::partition_class_counts(data::make_partition(y, K, n, "shards:2", 0), y, K))
    CHECK(std::count_if(row.begin(), row.end(), [](int64_t x) { return x > 0; }) <= 4);
}

TEST_CASE("Dirichlet partitions: label entropy falls as alpha falls") {
  const int64_t N = 5000, K = 10, n = 10;
  const Tensor y = labels_of(N, K);
  double previous = 1e9;
  for (double alpha : {1000.0, 1.0, 0.3, 0.05}) {
    double h = 0;
    for (uint64_t seed = 0; seed < 3; ++seed)
      h += data::mean_label_entropy(data::partition_class_counts(
          data::make_partition(y, K, n, fmt::format("dirichlet:{}", alpha), seed), y, K));
    INFO("alpha ", alpha, " entropy ", h / 3);
    CHECK(h / 3 < previous);
    previous = h / 3;
  }
  CHECK(previous < 0.9);  // alpha 0.05: a couple of classes per client
}

TEST_CASE("partition specs: bad ones say what to write") {
  CHECK_THROWS_WITH_AS(data::parse_partition("dirichlet"), doctest::Contains("dirichlet:ALPHA"), Error);
  CHECK_THROWS_WITH_AS(data::parse_partition("dirichlet:-1"), doctest::Contains("positive"), Error);
  CHECK_THROWS_WITH_AS(data::parse_partition("shards:x"), doctest::Contains("not a number"), Error);
  CHECK_THROWS_WITH_AS(data::parse_partition("labels"), doctest::Contains("unknown partition"), Error);
  const Tensor y = labels_of(100, 10);
  CHECK_THROWS_WITH_AS(data::make_partition(y, 10, 20, "dirichlet:1", 0), doctest::Contains("fewer clients"), Error);
}

// ------------------------------------------------------------------ federations end to end

static distill::FederatedConfig tiny_config(const std::string& algorithm) {
  distill::FederatedConfig cfg;
  cfg.local = distill::federated_local_defaults();
  cfg.local.model = "resnet8";
  cfg.local.dataset = "synthetic";
  cfg.local.train_limit = 240;
  cfg.local.test_limit = 64;
  cfg.local.batch_size = 32;
  cfg.local.threads = 1;
  cfg.local.seed = 3;
  cfg.local.prefetch = false;
  cfg.federated = {{"algorithm", algorithm}, {"clients", "3"}, {"rounds", "2"}, {"partition", "dirichlet:1"},
                   {"public_dataset", "synthetic"}, {"public_limit", "96"}, {"server_steps", "4"},
                   {"server_eval_every", "2"}, {"server_batch", "32"}, {"public_sample", "64"},
                   {"digest_batch", "32"}};
  return cfg;
}

TEST_CASE("every algorithm runs a small federation: a line per round, exact bytes, the models saved, the plot") {
  std::vector<std::string> dirs;
  for (const std::string algorithm : {"fedavg", "feddf", "fd", "fedmd"}) {
    INFO(algorithm);
    distill::FederatedConfig cfg = tiny_config(algorithm);
    if (algorithm == "fedmd" || algorithm == "fd") cfg.federated["models"] = "resnet8,resnet14";
    const std::string dir = kdtest::temp_path("fed_" + algorithm);
    const train::RunSummary s = distill::run_federated(cfg, dir, "test", false);
    CHECK(s.best_epoch >= 1);
    const std::vector<json> lines = kdtest::metric_lines(dir);
    REQUIRE(lines.size() == 2);
    for (const json& l : lines) {
      CHECK(l["clients"].size() == 3);
      CHECK(l["test_acc"].get<double>() >= 0.0);
      CHECK(l["bytes_up"].get<int64_t>() > 0);
    }
    CHECK(lines[1]["bytes_up_total"].get<int64_t>() ==
          lines[0]["bytes_up"].get<int64_t>() + lines[1]["bytes_up"].get<int64_t>());
    if (algorithm == "fd") {  // Z_k (K x K float32) and the class counts (K int64) per client
      CHECK(lines[0]["bytes_up"].get<int64_t>() == 3 * (10 * 10 * 4 + 10 * 8));
      CHECK(lines[0]["bytes_down"].get<int64_t>() == 0);  // no table yet in the first round
    }
    if (algorithm == "fedmd") CHECK(lines[0]["bytes_up"].get<int64_t>() == 3 * 64 * 10 * 4);
    if (algorithm == "feddf") CHECK(lines[0]["server"]["steps"].get<int64_t>() >= 2);
    const bool global = algorithm == "fedavg" || algorithm == "feddf";
    CHECK(fs::exists(dir + (global ? "/model_last.safetensors" : "/client2_last.safetensors")));
    dirs.push_back(dir);
  }
  // accuracy against round and against bytes, all four runs
  const std::vector<plot::Panel> panels = plot::federated_panels({plot::read_federated_curve(dirs[0]),
                                                                  plot::read_federated_curve(dirs[2])});
  REQUIRE(panels.size() == 2);
  CHECK(panels[1].series[0].x.back() > panels[1].series[1].x.back());  // fedavg sends more than fd
  const std::string png = kdtest::temp_path("federated_curves.png");
  plot::plot_federated(dirs, png);
  CHECK(fs::file_size(png) > 1000);
}

TEST_CASE("the public set's labels are never read: 10-class public images for 5-class clients") {
  for (const std::string algorithm : {"feddf", "fedmd"}) {
    INFO(algorithm);
    distill::FederatedConfig cfg = tiny_config(algorithm);
    cfg.local.num_classes = 5;  // the synthetic public set keeps its 10 classes
    cfg.federated["rounds"] = "1";
    const std::string dir = kdtest::temp_path("fed_public_" + algorithm);
    CHECK_NOTHROW(distill::run_federated(cfg, dir, "test", false));
    CHECK(kdtest::metric_lines(dir).size() == 1);
  }
}

TEST_CASE("a federation resumed from its checkpoint equals the run of one go (one thread)") {
  for (const std::string algorithm : {"feddf", "fd", "fedmd"}) {
    INFO(algorithm);
    distill::FederatedConfig cfg = tiny_config(algorithm);
    cfg.federated["rounds"] = "3";
    cfg.federated["participation"] = "0.67";
    const std::string full = kdtest::temp_path("fed_full_" + algorithm), part = kdtest::temp_path("fed_part_" + algorithm);
    distill::run_federated(cfg, full, "test", false);
    distill::FederatedConfig first = cfg;
    first.federated["rounds"] = "1";
    distill::run_federated(first, part, "test", false);
    distill::run_federated(cfg, part, "test", true);
    const auto a = kdtest::metric_lines(full), b = kdtest::metric_lines(part);
    REQUIRE(b.size() == 3);
    for (size_t r = 0; r < 3; ++r) {
      CHECK(a[r]["test_acc"] == b[r]["test_acc"]);
      CHECK(a[r]["train_loss"] == b[r]["train_loss"]);
      CHECK(a[r]["participants"] == b[r]["participants"]);
      CHECK(a[r]["bytes_up_total"] == b[r]["bytes_up_total"]);
    }
    const std::string file = algorithm == "feddf" ? "/model_last.safetensors" : "/client1_last.safetensors";
    CHECK(kdtest::float_weights(full + file) == kdtest::float_weights(part + file));
  }
}

TEST_CASE("federated options: bad values and impossible combinations say the fix") {
  distill::FederatedConfig cfg = tiny_config("fedavg");
  cfg.federated["models"] = "resnet8,resnet14";
  CHECK_THROWS_WITH_AS(distill::federated_options(cfg), doctest::Contains("use fd or fedmd"), Error);
  cfg = tiny_config("feddf");
  cfg.federated.erase("public_dataset");
  CHECK_THROWS_WITH_AS(distill::federated_options(cfg), doctest::Contains("--public-dataset"), Error);
  cfg = tiny_config("fedprox");
  CHECK_THROWS_WITH_AS(distill::federated_options(cfg), doctest::Contains("fedavg, feddf, fd, fedmd"), Error);
  cfg = tiny_config("fedavg");
  CHECK_THROWS_WITH_AS(distill::apply_federated_override("clientz=3", cfg), doctest::Contains("federated option"),
                       Error);
  distill::apply_federated_override("lr=0.05", cfg);
  distill::apply_federated_override("rounds=7", cfg);
  CHECK(cfg.local.lr == 0.05);
  CHECK(distill::federated_options(cfg).rounds == 7);
}

TEST_CASE("federated recipes: recipes/federated/ parse; a recipe's federated object and local keys land apart") {
  int count = 0;
  for (const auto& e : fs::directory_iterator(std::string(KDLAB_SOURCE_DIR) + "/recipes/federated")) {
    CAPTURE(e.path().string());
    distill::FederatedConfig cfg;
    cfg.local = distill::federated_local_defaults();
    REQUIRE_NOTHROW(distill::load_federated_recipe(e.path().string(), cfg));
    CHECK(distill::federated_options(cfg).clients >= 1);
    ++count;
  }
  CHECK(count >= 1);
  const std::string path = kdtest::temp_path("fed_recipe.json");
  std::ofstream(path) << R"({"lr": 0.05, "federated": {"algorithm": "fd", "models": ["resnet8", "resnet14"]}})";
  distill::FederatedConfig cfg;
  distill::load_federated_recipe(path, cfg);
  CHECK(cfg.local.lr == 0.05);
  CHECK(distill::federated_options(cfg).models == std::vector<std::string>{"resnet8", "resnet14"});
  std::ofstream(path) << R"({"federated": {"clientz": 3}})";
  CHECK_THROWS_WITH_AS(distill::load_federated_recipe(path, cfg), doctest::Contains("clientz"), Error);
}

TEST_CASE("kdlab federate --print-partition --json: the per-client class counts, without training") {
  const std::string cmd = std::string(KDLAB_BIN) + " federate --print-partition --json --dataset synthetic "
                          "--train-limit 500 --clients 5 --partition shards:2 --seed 1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  REQUIRE(pclose(p) == 0);
  const json j = json::parse(out);
  CHECK(j["clients"] == 5);
  CHECK(j["per_client"].size() == 5);
  int64_t total = 0;
  for (const auto& c : j["per_client"]) {
    int64_t sum = 0;
    for (const auto& n : c["counts"]) sum += n.get<int64_t>();
    CHECK(sum == c["images"].get<int64_t>());
    total += sum;
  }
  CHECK(total == 450);  // val_fraction 0.1 held out first
  CHECK(j["train_images"] == 450);
}

TEST_CASE("fedavg and feddf split the same images among the same clients (the held-out split is common)") {
  distill::FederatedConfig a = tiny_config("fedavg"), b = tiny_config("feddf");
  CHECK(distill::describe_partition(a)["per_client"] == distill::describe_partition(b)["per_client"]);
  a.federated["val_fraction"] = "0";
  CHECK(distill::describe_partition(a)["train_images"] == 240);
  b.federated["val_fraction"] = "0";
  CHECK_THROWS_WITH_AS(distill::describe_partition(b), doctest::Contains("val_fraction must be > 0"), Error);
}
