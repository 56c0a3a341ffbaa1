// federated_config.cpp: a federated run's configuration (the local recipe and FederatedOptions),
// its recipe form and --set, and the data it trains on: the partitioned training set, the test
// set, the server's validation split and the public set (federated.h, federated_data.h).
#include <fmt/ranges.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <sstream>

#include "distill/federated/federated.h"
#include "distill/federated/federated_data.h"
#include "engine/generator.h"
#include "nn/models/model.h"
#include "train/train.h"

namespace kd::distill {

train::TrainConfig federated_local_defaults() {
  train::TrainConfig c;
  c.optimizer = "sgd";
  c.lr = 0.1;
  c.momentum = 0.0;
  c.weight_decay = 0.0;
  c.batch_size = 64;
  c.schedule = "constant";
  c.epochs = 1;
  return c;
}

static std::vector<std::string> federated_keys() {
  std::vector<std::string> keys;
  for (const OptionInfo& row : option_infos<FederatedOptions>()) keys.push_back(row.key);
  return keys;
}

static bool is_federated_key(const std::string& key) {
  const std::vector<std::string> keys = federated_keys();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// A recipe value as the option table reads it: text as is, a list comma-joined, else JSON.
static std::string option_string(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::vector<std::string> items;
    for (const auto& item : v) items.push_back(option_string(item));
    return fmt::format("{}", fmt::join(items, ","));
  }
  return v.dump();
}

void load_federated_recipe(const std::string& path, FederatedConfig& config) {
  std::ifstream in(path);
  KD_CHECK(in.good(), "cannot read the federated recipe '{}' (is the path right?)", path);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  KD_CHECK(j.is_object(), "the federated recipe '{}' is not a JSON object", path);
  nlohmann::json local = nlohmann::json::object();
  for (auto& [key, value] : j.items()) {
    if (key != "federated") {
      local[key] = value;
      continue;
    }
    KD_CHECK(value.is_object(), "{}: \"federated\" must be an object of federated options ({})", path,
             fmt::join(federated_keys(), ", "));
    for (auto& [k, v] : value.items()) config.federated[k] = option_string(v);
  }
  train::apply_overrides(local, config.local, path);
  federated_options(config);  // unknown or bad federated keys fail here, naming the recipe's values
}

void apply_federated_override(const std::string& kv, FederatedConfig& config) {
  const size_t eq = kv.find('=');
  KD_CHECK(eq != std::string::npos && eq > 0, "--set '{}': write it as key=value", kv);
  const std::string key = kv.substr(0, eq);
  if (is_federated_key(key)) {
    config.federated[key] = kv.substr(eq + 1);
    return;
  }
  KD_CHECK(train::is_setting(key), "--set {}: '{}' is neither a federated option ({}) nor a local recipe key (kdlab "
           "train's recipe keys: model, lr, batch_size, optimizer, ...)", kv, key, fmt::join(federated_keys(), ", "));
  train::apply_override_string(kv, config.local);
}

FederatedOptions federated_options(const FederatedConfig& config) {
  const FederatedOptions o = parse_options<FederatedOptions>("federate", config.federated);
  const std::vector<std::string> algorithms{"fedavg", "feddf", "fd", "fedmd"};
  KD_CHECK(std::find(algorithms.begin(), algorithms.end(), o.algorithm) != algorithms.end(),
           "unknown federated algorithm '{}'; use one of {}", o.algorithm, fmt::join(algorithms, ", "));
  KD_CHECK(o.clients >= 1, "clients={}: a federation needs at least 1 client", o.clients);
  KD_CHECK(o.participation > 0 && o.participation <= 1, "participation={} must be in (0, 1] (1: every client, every "
           "round)", o.participation);
  KD_CHECK(o.rounds >= 1 && o.local_epochs >= 1, "rounds={} and local_epochs={} must be at least 1", o.rounds,
           o.local_epochs);
  data::parse_partition(o.partition);  // errors show the accepted forms
  for (const std::string& m : o.models) nn::create_model(m, {});  // an unknown model lists the known ones
  const bool weights_travel = o.algorithm == "fedavg" || o.algorithm == "feddf";
  std::vector<std::string> distinct = o.models;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  KD_CHECK(!weights_travel || distinct.size() <= 1, "{} averages weights, so every client needs the same model (got "
           "models={}); use fd or fedmd for different client models", o.algorithm, fmt::join(o.models, ","));
  const bool uses_public = o.algorithm == "feddf" || o.algorithm == "fedmd";
  KD_CHECK(!uses_public || !o.public_dataset.empty(), "{} distils on an unlabelled public set: give --public-dataset "
           "(e.g. cifar100 for cifar10 clients, or synthetic)", o.algorithm);
  KD_CHECK(o.server_steps >= 0 && o.server_batch >= 1 && o.server_eval_every >= 1 && o.server_patience >= 1 &&
               o.server_lr > 0 && o.server_clip > 0 && o.server_T > 0,
           "feddf's server options must be positive (server_steps may be 0: FedAvg plus the server's validation)");
  KD_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "val_fraction={} must be in [0, 1)", o.val_fraction);
  KD_CHECK(o.algorithm != "feddf" || o.val_fraction > 0,
           "feddf validates its student on val_fraction of the training set: val_fraction must be > 0");
  KD_CHECK(o.fd_lambda >= 0, "fd_lambda={} must be >= 0", o.fd_lambda);
  KD_CHECK(o.public_sample >= 1 && o.digest_epochs >= 0 && o.digest_batch >= 1 && o.digest_lr > 0,
           "fedmd's public_sample, digest_batch and digest_lr must be positive, digest_epochs >= 0");
  return o;
}

// ------------------------------------------------------------------ data

FederatedData load_federated_data(const FederatedConfig& config, const FederatedOptions& o,
                                  const std::string& out_dir) {
  FederatedData d;
  const train::Run run = train::prepare_run(config.local, out_dir, "");  // limits, subset, label noise
  d.train = run.train_set;
  d.test = run.test_set;
  d.num_classes = config.local.num_classes > 0 ? config.local.num_classes : d.train.num_classes();
  if (o.val_fraction > 0) {
    // the server's validation split: val_fraction of the training set, a fixed draw (seed 1) so
    // that every run of an experiment holds out the same images, whatever the algorithm (FedAvg
    // and FedDF compared on the same clients' data); the clients share the rest
    const int64_t n_val = std::max<int64_t>(1, (int64_t)(o.val_fraction * (double)d.train.size()));
    KD_CHECK(n_val < d.train.size(), "val_fraction={} leaves no training images", o.val_fraction);
    std::vector<int64_t> order(d.train.size());
    std::iota(order.begin(), order.end(), 0);
    Generator gen(1);
    gen.partial_shuffle(order, n_val);
    std::vector<int64_t> val(order.begin(), order.begin() + n_val), rest(order.begin() + n_val, order.end());
    std::sort(val.begin(), val.end());
    std::sort(rest.begin(), rest.end());
    d.val = data::subset(d.train, val);
    d.train = data::subset(d.train, rest);
  }
  const uint64_t pseed = o.partition_seed >= 0 ? (uint64_t)o.partition_seed : config.local.seed;
  d.partition = data::make_partition(d.train.labels, d.num_classes, o.clients, o.partition, pseed);
  if (!o.public_dataset.empty() && (o.algorithm == "feddf" || o.algorithm == "fedmd")) {
    data::LoadOptions lo;
    lo.synthetic.seed = config.local.seed + 7919;  // other images than the synthetic training set's
    lo.synthetic.channels = d.train.channels();
    lo.synthetic.height = d.train.height();
    lo.synthetic.width = d.train.width();
    d.public_set = train::first_n(data::load_dataset(o.public_dataset, o.public_data_dir, "train", lo),
                                  o.public_limit);
    KD_CHECK(d.public_set.channels() == d.train.channels() && d.public_set.height() == d.train.height() &&
                 d.public_set.width() == d.train.width(),
             "the public set {} has images ({}, {}, {}) but the clients' are ({}, {}, {}); use a public set of the "
             "same image size", d.public_set.summary(), d.public_set.channels(), d.public_set.height(),
             d.public_set.width(), d.train.channels(), d.train.height(), d.train.width());
    // the clients' networks expect their own normalisation; the public labels are never read
    // (CIFAR-100's would be out of range for CIFAR-10 clients), so they are set to 0
    d.public_set.mean = d.train.mean;
    d.public_set.std = d.train.std;
    d.public_set.labels = zeros({d.public_set.size()}, DType::i64);
    d.public_set.coarse_labels = Tensor();
  }
  return d;
}

nlohmann::json describe_partition(const FederatedConfig& config) {
  const FederatedOptions o = federated_options(config);
  FederatedOptions without_public = o;
  without_public.public_dataset.clear();  // the partition needs no public set
  const FederatedData d = load_federated_data(config, without_public, "");
  return partition_record(d, o, config.local.seed);
}

nlohmann::json partition_record(const FederatedData& d, const FederatedOptions& o, uint64_t seed) {
  const auto counts = data::partition_class_counts(d.partition, d.train.labels, d.num_classes);
  nlohmann::json clients = nlohmann::json::array();
  for (size_t k = 0; k < counts.size(); ++k)
    clients.push_back({{"client", k}, {"images", d.partition[k].size()}, {"counts", counts[k]}});
  return {{"partition", o.partition},
          {"seed", o.partition_seed >= 0 ? (uint64_t)o.partition_seed : seed},
          {"clients", o.clients},
          {"num_classes", d.num_classes},
          {"train_images", d.train.size()},
          {"label_entropy", data::mean_label_entropy(counts)},
          {"per_client", clients}};
}

}  // namespace kd::distill
