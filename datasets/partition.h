// partition.h: how a training set is split among the clients of a federated run (kdlab federate).
//
// A spec names the split (../shared/METHODS.md, "Federated distillation"; N images, n clients,
// K classes):
//
//   "iid"            shuffle the N indices, cut them into n runs of floor(N/n) or floor(N/n) + 1
//   "dirichlet:A"    label skew, NIID-Bench's `noniid-labeldir` (Flower's DirichletPartitioner):
//                    repeat until min_k |D_k| >= min_size (10):
//                      for each class c = 0..K-1:
//                        shuffle idx_c, the indices of class c
//                        p ~ Dir(A * 1_n)
//                        p_k <- 0 where |D_k| >= N / n already; p <- p / sum(p)
//                        cut idx_c at floor(cumsum(p) * |idx_c|)[:-1], append piece k to D_k
//                    small A: each client holds few classes; large A: close to iid
//   "shards:S"       McMahan et al.'s pathological split: sort by label, cut into n * S shards of
//                    (almost) equal size, give each client S shards drawn at random, so a client
//                    sees about S classes
//
// Every training image lands in exactly one client. One Generator(seed) draws everything, in the
// order written above, so the same labels, spec, n and seed give the same partition everywhere.
// Each client's indices are returned sorted (its loader shuffles them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd::data {

struct PartitionSpec {
  std::string kind;     // "iid", "dirichlet" or "shards"
  double alpha = 0;     // dirichlet: the concentration A
  int64_t shards = 0;   // shards: S per client
};

// Parses "iid", "dirichlet:0.5", "shards:2"; errors name the spec and show the accepted forms.
PartitionSpec parse_partition(const std::string& spec);

// indices of the training images of each client: clients[k] (sorted), k = 0..n-1.
using Partition = std::vector<std::vector<int64_t>>;

// labels (N) int64 in [0, num_classes). dirichlet resamples until every client has at least
// min_size images (an error when that is impossible, N < n * min_size, or not reached in 1000
// draws, naming the fix).
Partition make_partition(const Tensor& labels, int64_t num_classes, int64_t clients, const std::string& spec,
                         uint64_t seed, int64_t min_size = 10);

// counts[k][c]: the images of class c that client k holds.
std::vector<std::vector<int64_t>> partition_class_counts(const Partition& p, const Tensor& labels,
                                                         int64_t num_classes);

// The mean over clients of the entropy (in nats) of a client's label distribution: log K for an
// even spread of K classes, 0 for one class. Falls as dirichlet's A falls.
double mean_label_entropy(const std::vector<std::vector<int64_t>>& counts);

}  // namespace kd::data
