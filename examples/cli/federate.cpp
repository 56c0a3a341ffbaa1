// kdlab federate --algorithm fedavg|feddf|fd|fedmd --model M [--model M2 ...] --clients N
//                --partition iid|dirichlet:A|shards:S [--participation C] [--rounds R] [--local-epochs E]
//                [--public-dataset D --public-dir DIR] [--recipe R] [--set key=value ...]
//                --dataset D --data-dir DIR --out RUN_DIR [--resume]
// kdlab federate --print-partition [--json] --dataset D --clients N --partition P
//
// A federated run (distill/federated/federated.h): the clients train one after another in this
// process; each round is one line of RUN_DIR/metrics.jsonl, and the run resumes like any other.
#include <fmt/format.h>

#include <fstream>

#include "analysis/federated_plot.h"
#include "distill/federated/federated.h"
#include "examples/cli/cli.h"

namespace kd::cli {

// The per-round table of a finished run, from its metrics.jsonl.
static void print_round_table(const std::string& out_dir) {
  std::ifstream in(out_dir + "/metrics.jsonl");
  std::string text;
  fmt::print("\n{:>5}  {:>8}  {:>10}  {:>10}  {:>8}\n", "round", "test_acc", "MB up", "MB down", "time s");
  while (std::getline(in, text)) {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) continue;
    fmt::print("{:>5}  {:>8.4f}  {:>10.3f}  {:>10.3f}  {:>8.1f}\n", j.value("round", 0), j.value("test_acc", 0.0),
               (double)j.value("bytes_up_total", (int64_t)0) / 1e6, (double)j.value("bytes_down_total", (int64_t)0) / 1e6,
               j.value("round_s", 0.0));
  }
}

// The partition as text: each client's image count and per-class counts.
static void print_partition_text(const nlohmann::json& p) {
  fmt::print("partition {} of {} training images among {} clients (seed {}), mean label entropy {:.3f} nats\n",
             p["partition"].get<std::string>(), p["train_images"].get<int64_t>(), p["clients"].get<int64_t>(),
             p["seed"].get<uint64_t>(), p["label_entropy"].get<double>());
  for (const auto& c : p["per_client"]) {
    std::string counts;
    for (const auto& n : c["counts"]) counts += fmt::format(" {:>5}", n.get<int64_t>());
    fmt::print("client {:>3}: {:>6} images |{}\n", c["client"].get<int64_t>(), c["images"].get<int64_t>(), counts);
  }
}

void register_federate(CLI::App& app) {
  auto* cmd = app.add_subcommand("federate", "Federated learning and distillation: FedAvg, FedDF, FD, FedMD on "
                                             "simulated clients");
  struct Opts {
    std::string recipe, out, algorithm, partition, public_dataset, public_dir;
    std::vector<std::string> models, sets;
    int64_t clients = 0, rounds = 0, local_epochs = 0, partition_seed = -1, batch_size = 0;
    double participation = 0, lr = 0;
    CommonOptions common;
    bool resume = false, print_partition = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--recipe", o->recipe, "federated recipe (JSON: the local recipe's keys and a \"federated\" object)");
  cmd->add_option("--out", o->out, "run directory");
  cmd->add_option("--algorithm", o->algorithm, "fedavg | feddf | fd | fedmd (default fedavg)");
  cmd->add_option("--model", o->models, "client model; repeat it for different client models (fd, fedmd): client k "
                                        "gets the (k mod count)-th");
  cmd->add_option("--clients", o->clients, "number of clients (default 10)");
  cmd->add_option("--participation", o->participation, "fraction of clients in each round (default 1)");
  cmd->add_option("--rounds", o->rounds, "communication rounds (default 20)");
  cmd->add_option("--local-epochs", o->local_epochs, "local epochs per round (default 1)");
  cmd->add_option("--partition", o->partition, "iid | dirichlet:ALPHA | shards:S (default dirichlet:1)");
  cmd->add_option("--partition-seed", o->partition_seed, "seed of the partition (default: --seed)");
  cmd->add_option("--public-dataset", o->public_dataset, "unlabelled public set for feddf and fedmd (e.g. cifar100)");
  cmd->add_option("--public-dir", o->public_dir, "its folder or archive");
  cmd->add_option("--batch-size", o->batch_size, "the clients' batch size (default 64)");
  cmd->add_option("--lr", o->lr, "the clients' learning rate (default 0.1, SGD)");
  add_data_options(cmd, o->common);
  add_seed_option(cmd, o->common);
  add_threads_option(cmd, o->common.threads);
  add_limit_options(cmd, o->common);
  cmd->add_option("--set", o->sets, "a federated option (server_steps, fd_lambda, ...: the list is in "
                                    "distill/federated/federated.h) or a local recipe key (repeatable)");
  cmd->add_flag("--resume", o->resume, "continue from RUN_DIR/checkpoint.safetensors");
  cmd->add_flag("--print-partition", o->print_partition, "print each client's per-class counts and exit");
  cmd->add_flag("--json", o->json, "with --print-partition: as JSON");
  cmd->callback([o] {
    distill::FederatedConfig cfg;
    cfg.local = distill::federated_local_defaults();
    if (!o->recipe.empty()) distill::load_federated_recipe(o->recipe, cfg);
    if (o->models.size() == 1) cfg.local.model = o->models[0];
    if (o->models.size() > 1) {
      cfg.local.model = o->models[0];
      std::string list;
      for (const auto& m : o->models) list += (list.empty() ? "" : ",") + m;
      cfg.federated["models"] = list;
    }
    auto set = [&](const char* key, const std::string& value, bool given) {
      if (given) cfg.federated[key] = value;
    };
    set("algorithm", o->algorithm, !o->algorithm.empty());
    set("clients", std::to_string(o->clients), o->clients > 0);
    set("participation", fmt::format("{}", o->participation), o->participation > 0);
    set("rounds", std::to_string(o->rounds), o->rounds > 0);
    set("local_epochs", std::to_string(o->local_epochs), o->local_epochs > 0);
    set("partition", o->partition, !o->partition.empty());
    set("partition_seed", std::to_string(o->partition_seed), o->partition_seed >= 0);
    set("public_dataset", o->public_dataset, !o->public_dataset.empty());
    set("public_data_dir", o->public_dir, !o->public_dir.empty());
    if (o->batch_size > 0) cfg.local.batch_size = o->batch_size;
    if (o->lr > 0) cfg.local.lr = o->lr;
    apply_common_options(o->common, cfg.local);
    for (const auto& s : o->sets) distill::apply_federated_override(s, cfg);
    if (o->print_partition) {
      const nlohmann::json p = distill::describe_partition(cfg);
      if (o->json) fmt::print("{}\n", p.dump());
      else print_partition_text(p);
      return;
    }
    KD_CHECK(!o->out.empty(), "kdlab federate needs --out RUN_DIR (or --print-partition)");
    const train::RunSummary s = distill::run_federated(cfg, o->out, command_line(), o->resume);
    if (s.interrupted) return;
    print_round_table(o->out);
    plot::plot_federated({o->out}, o->out + "/curves.png");
    fmt::print("wrote {}/curves.png (accuracy against round and against bytes; several runs: kdlab plot "
               "--federated RUN_DIR...)\n", o->out);
    fmt::print("done: last test accuracy {:.4f}, best {:.4f} (round {}), {:.1f} s/round\n", s.last_accuracy,
               s.best_accuracy, s.best_epoch, s.seconds_per_epoch);
  });
}

}  // namespace kd::cli
