// federated_data.h: the data a federated run trains on (federated_config.cpp builds it, the
// regime in federated_run.cpp reads it).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/dataset.h"
#include "datasets/partition.h"
#include "distill/federated/federated.h"

namespace kd::distill {

struct FederatedData {
  data::Dataset train;       // what the clients share out (without the validation split)
  data::Dataset test;
  data::Dataset val;         // val_fraction held out: feddf's validation, val_acc; empty when 0
  data::Dataset public_set;  // feddf, fedmd: unlabelled images, normalised like the training set
  data::Partition partition; // client k's indices into `train`
  int64_t num_classes = 0;
};

// The local recipe's training and test sets (limits, subsets, label noise as kdlab train has
// them), feddf's validation split, the partition and the public set.
FederatedData load_federated_data(const FederatedConfig& config, const FederatedOptions& options,
                                  const std::string& out_dir);

// The partition as describe_partition prints it and config.json records it.
nlohmann::json partition_record(const FederatedData& data, const FederatedOptions& options, uint64_t seed);

}  // namespace kd::distill
