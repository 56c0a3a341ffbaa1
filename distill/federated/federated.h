// federated.h: federated (knowledge) distillation, `kdlab federate`: n clients simulated in one
// process, one after another, each with its own model, optimizer state and data shard, in rounds.
// A federated run is a train::Regime (federated_run.cpp, FederatedRegime): run_regime's epochs are
// the rounds; the checkpoint holds every client's model and optimizers and the server's state.
// Semantics: ../shared/METHODS.md, "Federated distillation"; the equations are in fed_math.h.
//
// One round r (S = the participating clients, round(C * n) of them drawn with a generator seeded
// by (seed, r)):
//   fedavg  download w to each k in S; k trains E local epochs (CE) from w; upload w_k;
//           w <- sum_k n_k / sum_j n_j w_k                         bytes: |w| each way per client
//   feddf   as fedavg, then the server distils: student from the FedAvg w, teachers the received
//           w_k (eval mode), server_steps Adam steps on public batches with server_loss
//           (KL(softmax(z_bar / T) || softmax(f / T)), T = 1), cosine LR, gradient clip 5,
//           validation every server_eval_every steps on val_fraction of the training set (held
//           out for every algorithm, so that they share the clients' data), stop after
//           server_patience steps without improvement; w <- the best student
//   fd      k trains E local epochs with CE + lambda KL(softmax(Z_bar[y]) || softmax(f)) (CE only
//           before the first table), tracking its per-class mean logits Z_k over its last local
//           epoch; upload Z_k (K x K) and its class counts; Z_bar <- per-class mean over holders;
//           download Z_bar. No weights travel; models may differ per client.
//   fedmd   the parties compute logits on public_sample public images drawn for the round
//           (upload), consensus = their mean (download), digest: digest_epochs of L1 to the
//           consensus (Adam digest_lr, batch digest_batch), revisit: E local epochs of CE on the
//           private shard. Models may differ per client.
// The server_loss of feddf (and fd's client term, fd_loss) can be any logits-only method of the
// distillation registry (kd, dkd, ...); the public set has no labels, so the method's labels
// are the teachers' argmax and no CE is added (fd: the true labels, and the CE of L_k).
//
// Test accuracy per round: the global model (fedavg, feddf), else the mean over clients of each
// client model's accuracy (fd, fedmd), whose best round saves every client's model.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "datasets/partition.h"
#include "distill/options.h"
#include "train/recipe.h"
#include "train/regime.h"

namespace kd::distill {

// Everything federated, one option table: `kdlab federate`'s options, --set key=value, and the
// "federated" object of a recipe all read it. Defaults: FedDF's paper (clients SGD lr 0.1 without
// momentum or weight decay, batch 64; the server's constants) where it gives one.
struct FederatedOptions {
  std::string algorithm = "fedavg";
  int64_t clients = 10;
  double participation = 1.0;       // C: the fraction of clients in each round
  int64_t rounds = 20;
  int64_t local_epochs = 1;         // E
  std::string partition = "dirichlet:1";
  int64_t partition_seed = -1;      // -1: the run's seed
  std::vector<std::string> models;  // client k's model is models[k % size]; empty: the local recipe's model
  std::string public_dataset;       // feddf, fedmd: the unlabelled set (labels ignored)
  std::string public_data_dir;
  int64_t public_limit = 0;         // > 0: only its first N images
  bool eval_clients = true;         // each participating client's test accuracy in the round's line
  // feddf's server (Lin et al. 2020, noise_knowledge_transfer.py)
  std::string server_loss = "kd";   // a logits-only registry method; kd at T = 1 is FedDF's KL
  double server_T = 1.0;
  int64_t server_steps = 10000;
  double server_lr = 1e-3;
  int64_t server_batch = 128;
  double server_clip = 5.0;
  int64_t server_eval_every = 100;
  int64_t server_patience = 1000;
  double val_fraction = 0.1;        // of the training set, held out (feddf's validation; val_acc)
  // fd (Jeong et al. 2018)
  std::string fd_loss = "kd";       // the client's distillation term (kd at T = 1: the paper's KL)
  double fd_lambda = 1.0;
  // fedmd (Li & Wang 2019)
  int64_t public_sample = 5000;
  int64_t digest_epochs = 1;
  int64_t digest_batch = 256;
  double digest_lr = 1e-3;

  template <class Self, class F>
  static void for_each_option(Self& o, F&& f) {
    const bool df = o.algorithm == "feddf", md = o.algorithm == "fedmd", fd = o.algorithm == "fd";
    f("algorithm", o.algorithm, "fedavg | feddf | fd | fedmd");
    f("clients", o.clients, "n, the number of clients");
    f("participation", o.participation, "C, the fraction of clients that take part in each round");
    f("rounds", o.rounds, "communication rounds");
    f("local_epochs", o.local_epochs, "E, local epochs per round on a client's shard");
    f("partition", o.partition, "iid | dirichlet:ALPHA | shards:S");
    f("partition_seed", o.partition_seed, "seed of the partition (-1: the run's seed)");
    f("models", o.models, "client models, comma-separated, client k gets models[k % count] (fd, fedmd)");
    f("public_dataset", o.public_dataset, "the unlabelled public set (feddf, fedmd)", df || md);
    f("public_data_dir", o.public_data_dir, "its folder or archive", df || md);
    f("public_limit", o.public_limit, "use only its first N images (0: all)", df || md);
    f("eval_clients", o.eval_clients, "test accuracy of every participating client each round");
    f("server_loss", o.server_loss, "feddf: the server's distillation loss, a logits-only registry method", df);
    f("server_T", o.server_T, "feddf: the temperature T of server_loss", df);
    f("server_steps", o.server_steps, "feddf: distillation steps per round (the paper: 1e4)", df);
    f("server_lr", o.server_lr, "feddf: Adam's learning rate, cosine over server_steps", df);
    f("server_batch", o.server_batch, "feddf: public images per step", df);
    f("server_clip", o.server_clip, "feddf: gradient-norm clip", df);
    f("server_eval_every", o.server_eval_every, "feddf: steps between validations", df);
    f("server_patience", o.server_patience, "feddf: stop after this many steps without improvement", df);
    f("val_fraction", o.val_fraction, "fraction of the training set held out (every algorithm, so that they "
                                      "share the clients' data): feddf's validation, the global model's val_acc");
    f("fd_loss", o.fd_loss, "fd: the client's distillation term, a logits-only registry method", fd);
    f("fd_lambda", o.fd_lambda, "fd: lambda, the weight of the distillation term", fd);
    f("public_sample", o.public_sample, "fedmd: public images per round", md);
    f("digest_epochs", o.digest_epochs, "fedmd: epochs of the digest on the public sample", md);
    f("digest_batch", o.digest_batch, "fedmd: batch of the digest", md);
    f("digest_lr", o.digest_lr, "fedmd: Adam's learning rate in the digest", md);
  }
};

// A federated run: the local recipe (model, data, the clients' optimizer; its epochs are replaced
// by local_epochs) and the federated options as strings (--set, the recipe's "federated" object).
struct FederatedConfig {
  train::TrainConfig local;
  Params federated;
};

// The local recipe's defaults for clients (FedDF: SGD lr 0.1, no momentum, no weight decay,
// batch 64, a constant LR).
train::TrainConfig federated_local_defaults();
// Reads a federated recipe: a JSON object of TrainConfig keys (the local recipe) with an optional
// "federated" object of FederatedOptions keys. Unknown keys are errors listing the known ones.
void load_federated_recipe(const std::string& path, FederatedConfig& config);
// --set key=value: a federated option when its key is one, else a local recipe key (an unknown
// key is an error listing both kinds).
void apply_federated_override(const std::string& kv, FederatedConfig& config);
// The options parsed and checked (an error names a bad value and the fix).
FederatedOptions federated_options(const FederatedConfig& config);

// kdlab federate --print-partition: the data set the local recipe names, partitioned, without
// training: {"partition", "clients", "num_classes", "label_entropy", "per_client": [{"client",
// "images", "counts": [per class]}]}.
nlohmann::json describe_partition(const FederatedConfig& config);

// Runs the federation into out_dir (resumes from its checkpoint when `resume`).
train::RunSummary run_federated(const FederatedConfig& config, const std::string& out_dir,
                                const std::string& command_line, bool resume);

}  // namespace kd::distill
