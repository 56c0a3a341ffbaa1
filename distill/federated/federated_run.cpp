// federated_run.cpp: the federated regime (federated.h): n clients in one process, a round per
// run_regime epoch. Local training, the four algorithms' rounds, the FedDF server, and what the
// checkpoint holds: the global model ("global"), every client's model ("client<k>") and optimizers
// ("client<k>", FedMD's "digest<k>"), FD's class table, the bytes sent so far.
//
// Every random draw of a round comes from a generator seeded by (seed, round, stream): the
// participants, each client's loader, the FedDF server's public batches, FedMD's public sample.
// So nothing random carries over between rounds, and a resumed run repeats the rounds it has not
// done bit for bit (on one thread).
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "datasets/loader.h"
#include "datasets/transforms.h"
#include "distill/federated/fed_math.h"
#include "distill/federated/federated.h"
#include "distill/federated/federated_data.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "train/train.h"

namespace kd::distill {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The seed of one stream of draws in one round (streams: 1 participants, 2 server batches,
// 3 FedMD's public sample, 4 its digest, 100 + k client k's loader).
uint64_t round_seed(uint64_t seed, int64_t round, uint64_t stream) {
  return seed * 1000003ull + (uint64_t)round * 7919ull + stream * 104729ull + 1;
}

// A copy of a module's state (state_dict hands out the live tensors).
nn::NamedTensors copy_state(const nn::Module& m) {
  nn::NamedTensors out;
  for (const auto& [name, t] : m.state_dict()) out.emplace_back(name, t.detach().clone());
  return out;
}

struct Client {
  int64_t id = 0;
  std::string model_name;
  std::shared_ptr<nn::Classifier> model;
  std::unique_ptr<nn::Optimizer> optimizer;  // the local recipe's
  std::unique_ptr<nn::Optimizer> digest;     // fedmd: Adam of the digest
  data::Dataset shard;
};

// What one client's local training reports.
struct LocalStats {
  double loss_sum = 0, correct = 0, seen = 0;
  ClassLogits class_logits;  // fd: its per-class logit sums over the last local epoch
};

class FederatedRegime : public train::Regime {
 public:
  FederatedRegime(const FederatedConfig& config, const std::string& out_dir);

  nlohmann::json record() override;
  nn::LabeledModules modules() override;
  nn::LabeledOptimizers optimizers() override;
  void save_state(nn::TrainingCheckpoint& info) override;
  void prepare_resume(const nlohmann::json& scalars) override;
  void restore_state(const nn::TrainingCheckpoint& ck) override;
  train::EpochReport run_epoch(int64_t round) override;
  void save_best(const train::RunRecorder& recorder) override { save_models(recorder, "best"); }
  void finish(const train::RunRecorder& recorder) override { save_models(recorder, "last"); }
  std::string epoch_name() const override { return "round"; }

 private:
  FederatedConfig cfg_;
  FederatedOptions opt_;
  train::TrainConfig local_;  // the clients' recipe, epochs = local_epochs
  FederatedData data_;
  int64_t K_ = 0;
  std::vector<Client> clients_;
  std::shared_ptr<nn::Classifier> global_;  // fedavg, feddf
  std::unique_ptr<LogitLoss> logit_loss_;   // feddf's server_loss, fd's fd_loss
  Tensor fd_table_, fd_has_;                // fd: Z_bar (K, K) and which rows some client has
  int64_t bytes_up_total_ = 0, bytes_down_total_ = 0;

  bool weights_travel() const { return opt_.algorithm == "fedavg" || opt_.algorithm == "feddf"; }
  std::vector<int64_t> participants(int64_t round) const;
  LocalStats train_local(Client& c, int64_t round, const Tensor& fd_table);
  nlohmann::json feddf_server(const std::vector<int64_t>& S, int64_t round);
  void fedmd_exchange(const std::vector<int64_t>& S, int64_t round, int64_t& up, int64_t& down, double& digest_loss);
  void save_models(const train::RunRecorder& recorder, const std::string& which);
};

FederatedRegime::FederatedRegime(const FederatedConfig& config, const std::string& out_dir)
    : cfg_(config), opt_(federated_options(config)), local_(config.local) {
  local_.epochs = opt_.local_epochs;  // the local recipe's schedule runs over the local epochs
  data_ = load_federated_data(cfg_, opt_, out_dir);
  K_ = data_.num_classes;
  nn::ModelConfig mc;
  mc.num_classes = K_;
  mc.in_channels = data_.train.channels();
  mc.image_size = data_.train.height();
  mc.seed = local_.seed;
  const std::vector<std::string> models = opt_.models.empty() ? std::vector<std::string>{local_.model} : opt_.models;
  if (weights_travel()) global_ = nn::create_model(models[0], mc);
  for (int64_t k = 0; k < opt_.clients; ++k) {
    Client c;
    c.id = k;
    c.model_name = models[k % models.size()];
    nn::ModelConfig ck = mc;
    if (!weights_travel()) ck.seed = local_.seed + (uint64_t)k;  // independent parties start apart
    c.model = nn::create_model(c.model_name, ck);
    c.optimizer = train::make_optimizer(local_, c.model->named_parameters());
    if (opt_.algorithm == "fedmd") c.digest = std::make_unique<nn::Adam>(c.model->named_parameters(), opt_.digest_lr);
    c.shard = data::subset(data_.train, data_.partition[k]);
    KD_CHECK(c.shard.size() > 0, "client {} got no training images from partition {}; use fewer clients", k,
             opt_.partition);
    clients_.push_back(std::move(c));
  }
  if (opt_.algorithm == "feddf") logit_loss_ = std::make_unique<LogitLoss>(opt_.server_loss, opt_.server_T, K_);
  if (opt_.algorithm == "fd") logit_loss_ = std::make_unique<LogitLoss>(opt_.fd_loss, 1.0, K_);
}

nlohmann::json FederatedRegime::record() {
  nlohmann::json models = nlohmann::json::array();
  for (const Client& c : clients_) models.push_back(c.model_name);
  return {{"config", local_.to_json()},
          {"federated", option_params(opt_)},
          {"train_set", data_.train.summary()},
          {"test_set", data_.test.summary()},
          {"val_set", data_.val.size() > 0 ? data_.val.summary() : std::string("none")},
          {"public_set", data_.public_set.size() > 0 ? data_.public_set.summary() : std::string("none")},
          {"num_classes", K_},
          {"client_models", models},
          {"partition", partition_record(data_, opt_, local_.seed)}};
}

nn::LabeledModules FederatedRegime::modules() {
  nn::LabeledModules m;
  if (global_) m.push_back({"global", global_.get()});
  for (Client& c : clients_) m.push_back({fmt::format("client{}", c.id), c.model.get()});
  return m;
}

nn::LabeledOptimizers FederatedRegime::optimizers() {
  nn::LabeledOptimizers o;
  for (Client& c : clients_) {
    o.push_back({fmt::format("client{}", c.id), c.optimizer.get()});
    if (c.digest) o.push_back({fmt::format("digest{}", c.id), c.digest.get()});
  }
  return o;
}

void FederatedRegime::save_state(nn::TrainingCheckpoint& info) {
  info.scalars = {{"federated_algorithm", opt_.algorithm}, {"federated_clients", opt_.clients},
                  {"bytes_up_total", bytes_up_total_}, {"bytes_down_total", bytes_down_total_}};
  if (fd_table_.defined()) info.tensors = {{"fd_table", fd_table_}, {"fd_has_class", fd_has_}};
}

void FederatedRegime::prepare_resume(const nlohmann::json& scalars) {
  const std::string algorithm = scalars.value("federated_algorithm", std::string());
  const int64_t clients = scalars.value("federated_clients", (int64_t)0);
  KD_CHECK(algorithm == opt_.algorithm && clients == opt_.clients,
           "--resume: the checkpoint is of {} with {} clients, this run asks for {} with {}; resume with the same "
           "options (or start a new run folder)", algorithm.empty() ? "not a federated run" : algorithm, clients,
           opt_.algorithm, opt_.clients);
}

void FederatedRegime::restore_state(const nn::TrainingCheckpoint& ck) {
  bytes_up_total_ = ck.scalars.value("bytes_up_total", (int64_t)0);
  bytes_down_total_ = ck.scalars.value("bytes_down_total", (int64_t)0);
  for (const auto& [name, t] : ck.tensors) {
    if (name == "fd_table") fd_table_ = t.to(DType::f32);
    if (name == "fd_has_class") fd_has_ = t.to(DType::i64);
  }
}

std::vector<int64_t> FederatedRegime::participants(int64_t round) const {
  const int64_t n = opt_.clients;
  const int64_t m = std::clamp<int64_t>((int64_t)std::llround(opt_.participation * (double)n), 1, n);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (m < n) {
    Generator gen(round_seed(local_.seed, round, 1));
    gen.partial_shuffle(order, m);
  }
  std::vector<int64_t> S(order.begin(), order.begin() + m);
  std::sort(S.begin(), S.end());
  return S;
}

// E local epochs of client c on its shard: CE, plus fd's distillation term when fd_table is set.
LocalStats FederatedRegime::train_local(Client& c, int64_t round, const Tensor& fd_table) {
  data::LoaderOptions lo;
  lo.batch_size = local_.batch_size;
  lo.shuffle = true;
  lo.seed = round_seed(local_.seed, round, 100 + (uint64_t)c.id);
  lo.prefetch = local_.prefetch;
  lo.transform = local_.augment ? data::train_transform(c.shard) : data::eval_transform(c.shard);
  data::DataLoader loader(c.shard, lo);
  const nn::Schedule schedule = train::make_schedule(local_);
  const int64_t steps = loader.num_batches();
  LocalStats st;
  c.model->train();
  for (int64_t e = 0; e < opt_.local_epochs; ++e) {
    const bool last = e + 1 == opt_.local_epochs;
    loader.start_epoch(e);
    data::Batch b;
    for (int64_t k = 0; loader.next(b); ++k) {
      c.optimizer->scale_lr(schedule.lr(e, k, steps) / local_.lr);
      const Tensor zs = c.model->forward(b.images).logits;  // (B, K)
      Tensor loss = logit_loss_ && opt_.algorithm == "fd"
                        ? fd_client_loss(*logit_loss_, zs, b.labels, fd_table, opt_.fd_lambda)
                        : cross_entropy(zs, b.labels);
      const double value = loss.item();
      KD_CHECK(std::isfinite(value), "client {} in round {}: the loss became {} at local epoch {} step {}; lower the "
               "local learning rate (--lr), then --resume", c.id, round + 1, value, e + 1, k + 1);
      c.optimizer->zero_grad();
      loss.backward();
      c.optimizer->step();
      NoGradGuard ng;
      if (last) {
        st.loss_sum += value * (double)b.size();
        st.correct += sum(eq(argmax(zs, 1), b.labels).to(DType::f32)).item();
        st.seen += (double)b.size();
        if (opt_.algorithm == "fd") st.class_logits.add(zs, b.labels);
      }
    }
  }
  return st;
}

// FedDF's server: the student starts from the FedAvg model (global_), the received client models
// are the teachers; Adam on public batches, cosine LR, gradient clip, validation on the held-out
// split every server_eval_every steps, early stop after server_patience steps without
// improvement; global_ ends as the best student (the FedAvg model itself when none beats it).
nlohmann::json FederatedRegime::feddf_server(const std::vector<int64_t>& S, int64_t round) {
  nn::Classifier& student = *global_;
  const int64_t eval_batch = std::max<int64_t>(local_.batch_size, 256);
  double best_val = train::evaluate(student, data_.val, eval_batch).accuracy;
  const double fedavg_val = best_val;
  nn::NamedTensors best_state = copy_state(student);
  int64_t best_step = 0, step = 0;
  double loss_sum = 0;
  if (opt_.server_steps > 0) {
    nn::Adam adam(student.named_parameters(), opt_.server_lr);
    nn::Schedule cosine;
    cosine.kind = "cosine";
    cosine.base_lr = opt_.server_lr;
    cosine.total_epochs = 1;  // one "epoch" of server_steps steps
    data::LoaderOptions lo;
    lo.batch_size = opt_.server_batch;
    lo.seed = round_seed(local_.seed, round, 2);
    lo.prefetch = local_.prefetch;
    lo.transform = local_.augment ? data::train_transform(data_.public_set) : data::eval_transform(data_.public_set);
    data::DataLoader loader(data_.public_set, lo);
    int64_t pass = 0;
    loader.start_epoch(pass);
    for (Client& c : clients_) c.model->eval();
    while (step < opt_.server_steps) {
      data::Batch b;
      if (!loader.next(b)) {  // the public set is smaller than the step budget: another pass
        loader.start_epoch(++pass);
        continue;
      }
      std::vector<Tensor> teacher_logits;
      {
        NoGradGuard ng;
        for (int64_t k : S) teacher_logits.push_back(clients_[k].model->forward(b.images).logits);
      }
      const Tensor z_bar = mean_logits(teacher_logits);  // (B, K)
      student.train();
      loss_sum += feddf_server_step(student, b.images, z_bar, *logit_loss_, adam,
                                    cosine.factor(0, step, opt_.server_steps), opt_.server_clip);
      ++step;
      if (step % opt_.server_eval_every == 0 || step == opt_.server_steps) {
        const double val = train::evaluate(student, data_.val, eval_batch).accuracy;
        if (val > best_val) {
          best_val = val;
          best_step = step;
          best_state = copy_state(student);
        }
        if (step - best_step >= opt_.server_patience) break;
      }
    }
    student.load_state_dict(best_state);
  }
  return {{"steps", step}, {"best_step", best_step}, {"val_acc_fedavg", fedavg_val}, {"val_acc", best_val},
          {"loss", step > 0 ? loss_sum / (double)step : 0.0}};
}

// FedMD's exchange and digest: logits of every party on the round's public sample (up), their
// mean (down), then each party fits it with L1 for digest_epochs.
void FederatedRegime::fedmd_exchange(const std::vector<int64_t>& S, int64_t round, int64_t& up, int64_t& down,
                                     double& digest_loss) {
  const int64_t n = std::min<int64_t>(opt_.public_sample, data_.public_set.size());
  std::vector<int64_t> order(data_.public_set.size());
  std::iota(order.begin(), order.end(), 0);
  Generator gen(round_seed(local_.seed, round, 3));
  gen.partial_shuffle(order, n);
  std::vector<int64_t> pick(order.begin(), order.begin() + n);
  std::sort(pick.begin(), pick.end());
  const data::Dataset sample = data::subset(data_.public_set, pick);
  std::vector<Tensor> logits;
  for (int64_t k : S) {
    nn::Classifier& model = *clients_[k].model;
    std::vector<Tensor> batches;  // eval mode, no gradient, sample order
    train::for_each_eval_batch(model, sample, 256, [&](const data::Batch& b) {
      batches.push_back(model.forward(b.images).logits);
    });
    logits.push_back(cat(batches, 0));  // (n, K) f(x_pub; w_k)
    up += message_bytes({{"logits", logits.back()}});
  }
  const Tensor consensus = mean_logits(logits);  // (n, K)
  double sum = 0, steps = 0;
  for (int64_t k : S) {
    Client& c = clients_[k];
    down += message_bytes({{"consensus", consensus}});
    data::LoaderOptions lo;
    lo.batch_size = opt_.digest_batch;
    lo.seed = round_seed(local_.seed, round, 4) + (uint64_t)k;
    lo.prefetch = local_.prefetch;
    lo.transform = data::eval_transform(sample);  // the images the consensus was computed on
    data::DataLoader loader(sample, lo);
    c.model->train();
    for (int64_t e = 0; e < opt_.digest_epochs; ++e) {
      loader.start_epoch(e);
      data::Batch b;
      while (loader.next(b)) {
        const Tensor target = index_select(consensus, 0, b.indices);  // (B, K) rows of this batch
        Tensor loss = fedmd_digest_loss(c.model->forward(b.images).logits, target);
        c.digest->zero_grad();
        loss.backward();
        c.digest->step();
        sum += loss.item();
        steps += 1;
      }
    }
  }
  digest_loss = steps > 0 ? sum / steps : 0.0;
}

train::EpochReport FederatedRegime::run_epoch(int64_t round) {
  const auto t0 = Clock::now();
  const std::vector<int64_t> S = participants(round);
  int64_t up = 0, down = 0;
  nlohmann::json line, client_lines = nlohmann::json::array();
  std::vector<LocalStats> stats;
  if (weights_travel()) {
    const nn::NamedTensors w = copy_state(*global_);  // what the server sends
    std::vector<nn::NamedTensors> received;
    std::vector<double> sizes;
    for (int64_t k : S) {
      Client& c = clients_[k];
      c.model->load_state_dict(w);
      down += message_bytes(w);
      c.optimizer = train::make_optimizer(local_, c.model->named_parameters());  // fresh each round, as FedDF's code
      stats.push_back(train_local(c, round, Tensor()));
      received.push_back(copy_state(*c.model));
      up += message_bytes(received.back());
      sizes.push_back((double)c.shard.size());
    }
    global_->load_state_dict(fedavg(received, sizes));
    if (opt_.algorithm == "feddf") {
      line["server"] = feddf_server(S, round);
      line["loss_server"] = line["server"]["loss"];  // loss_*: the driver's non-finite check reads it
    }
  } else if (opt_.algorithm == "fd") {
    std::vector<Tensor> means, counts;
    for (int64_t k : S) {
      if (fd_table_.defined()) down += message_bytes({{"table", fd_table_}, {"has_class", fd_has_}});
      stats.push_back(train_local(clients_[k], round, fd_table_));
      means.push_back(stats.back().class_logits.means());
      counts.push_back(stats.back().class_logits.counts);
      up += message_bytes({{"table", means.back()}, {"counts", counts.back()}});
    }
    fd_table_ = fd_global_table(means, counts, &fd_has_);
  } else {  // fedmd: communicate, digest, revisit
    double digest_loss = 0;
    fedmd_exchange(S, round, up, down, digest_loss);
    line["loss_digest"] = digest_loss;  // loss_*: the driver's non-finite check reads it
    for (int64_t k : S) stats.push_back(train_local(clients_[k], round, Tensor()));
  }
  const double train_seconds = seconds_since(t0);

  // evaluation: the global model, and each participating client's model
  const int64_t eval_batch = std::max<int64_t>(local_.batch_size, 256);
  double loss_sum = 0, seen = 0, client_acc_sum = 0, client_loss_sum = 0;
  for (size_t i = 0; i < S.size(); ++i) {
    const Client& c = clients_[S[i]];
    const LocalStats& st = stats[i];
    nlohmann::json cl = {{"client", c.id}, {"images", c.shard.size()}, {"train_loss", st.loss_sum / st.seen},
                         {"train_acc", st.correct / st.seen}};
    if (opt_.eval_clients || !global_) {
      const train::EvalResult ev = train::evaluate(*c.model, data_.test, eval_batch);
      cl["test_acc"] = ev.accuracy;
      client_acc_sum += ev.accuracy;
      client_loss_sum += ev.loss;
    }
    client_lines.push_back(cl);
    loss_sum += st.loss_sum;
    seen += st.seen;
  }
  train::EpochReport r;
  if (global_) {
    const train::EvalResult ev = train::evaluate(*global_, data_.test, eval_batch);
    r.test_accuracy = ev.accuracy;
    line["test_loss"] = ev.loss;
    if (data_.val.size() > 0) line["val_acc"] = train::evaluate(*global_, data_.val, eval_batch).accuracy;
  } else {
    r.test_accuracy = client_acc_sum / (double)S.size();
    line["test_loss"] = client_loss_sum / (double)S.size();
  }
  bytes_up_total_ += up;
  bytes_down_total_ += down;
  line["round"] = round + 1;
  line["test_acc"] = r.test_accuracy;
  line["train_loss"] = loss_sum / seen;
  line["participants"] = S;
  line["clients"] = client_lines;
  line["bytes_up"] = up;
  line["bytes_down"] = down;
  line["bytes_up_total"] = bytes_up_total_;
  line["bytes_down_total"] = bytes_down_total_;
  line["time_s"] = train_seconds;
  line["round_s"] = seconds_since(t0);
  r.line = line;
  r.seconds = train_seconds;
  std::string clients_text;
  if (opt_.eval_clients || !global_) {
    double lo = 1, hi = 0;
    for (const auto& cl : client_lines) lo = std::min(lo, cl["test_acc"].get<double>()),
                                       hi = std::max(hi, cl["test_acc"].get<double>());
    clients_text = fmt::format(" | clients {:.4f}..{:.4f}", lo, hi);
  }
  r.summary = fmt::format("{} acc {:.4f}{} | up {:.2f} MB down {:.2f} MB", global_ ? "global" : "mean client",
                          r.test_accuracy, clients_text, (double)up / 1e6, (double)down / 1e6);
  r.speed = fmt::format("{:.1f}s", seconds_since(t0));
  return r;
}

void FederatedRegime::save_models(const train::RunRecorder& recorder, const std::string& which) {
  if (global_) {
    recorder.save_weights(fmt::format("model_{}.safetensors", which), *global_, clients_[0].model_name, K_);
    return;
  }
  for (const Client& c : clients_)  // no global model: every client's
    recorder.save_weights(fmt::format("client{}_{}.safetensors", c.id, which), *c.model, c.model_name, K_);
}

}  // namespace

train::RunSummary run_federated(const FederatedConfig& config, const std::string& out_dir,
                                const std::string& command_line, bool resume) {
  const FederatedOptions o = federated_options(config);
  train::set_threads(config.local.threads);
  FederatedRegime regime(config, out_dir);
  train::TrainConfig driver = config.local;  // run_regime's epochs are the rounds
  driver.epochs = o.rounds;
  return train::run_regime(regime, driver, out_dir, command_line, resume);
}

}  // namespace kd::distill
