// partition.cpp: iid, Dirichlet label skew and shards (see partition.h).
#include "datasets/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"
#include "engine/generator.h"

namespace kd::data {

PartitionSpec parse_partition(const std::string& spec) {
  const std::string forms = "use iid, dirichlet:ALPHA (e.g. dirichlet:0.5) or shards:S (e.g. shards:2)";
  PartitionSpec p;
  const size_t colon = spec.find(':');
  p.kind = spec.substr(0, colon);
  const std::string value = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (p.kind == "iid") {
    KD_CHECK(value.empty(), "partition '{}': iid takes no value; {}", spec, forms);
    return p;
  }
  KD_CHECK(p.kind == "dirichlet" || p.kind == "shards", "unknown partition '{}'; {}", spec, forms);
  KD_CHECK(!value.empty(), "partition '{}' needs a value after ':'; {}", spec, forms);
  size_t used = 0;
  try {
    if (p.kind == "dirichlet") p.alpha = std::stod(value, &used);
    else p.shards = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KD_CHECK(used == value.size() && used > 0, "partition '{}': '{}' is not a number; {}", spec, value, forms);
  KD_CHECK(p.kind != "dirichlet" || (p.alpha > 0 && std::isfinite(p.alpha)),
           "partition '{}': ALPHA must be positive (0.1 is strong label skew, 100 almost iid)", spec);
  KD_CHECK(p.kind != "shards" || p.shards >= 1, "partition '{}': S must be at least 1 shard per client", spec);
  return p;
}

namespace {

// Cuts `order` into n consecutive runs at floor(k * size / n).
Partition cut_evenly(const std::vector<int64_t>& order, int64_t n) {
  Partition out(n);
  const int64_t N = (int64_t)order.size();
  for (int64_t k = 0; k < n; ++k)
    out[k].assign(order.begin() + k * N / n, order.begin() + (k + 1) * N / n);
  return out;
}

// NIID-Bench's noniid-labeldir, one draw (the caller repeats it until the minimum size holds).
Partition dirichlet_draw(const std::vector<std::vector<int64_t>>& by_class, int64_t N, int64_t n, double alpha,
                         Generator& gen) {
  Partition clients(n);
  for (const std::vector<int64_t>& idx : by_class) {
    std::vector<int64_t> idx_c = idx;
    gen.shuffle(idx_c);
    std::vector<double> p(n);  // p ~ Dir(alpha * 1_n): normalised Gamma(alpha) draws
    double total = 0;
    for (int64_t k = 0; k < n; ++k) total += p[k] = gen.gamma(alpha);
    for (int64_t k = 0; k < n; ++k) p[k] /= total;
    double kept = 0;  // no more for clients that already hold N / n images
    for (int64_t k = 0; k < n; ++k) {
      if (!((double)clients[k].size() < (double)N / (double)n)) p[k] = 0;
      kept += p[k];
    }
    if (kept <= 0) continue;  // cannot happen while fewer than N images are placed; kept for safety
    const double size_c = (double)idx_c.size();
    double cumsum = 0;
    int64_t start = 0;
    for (int64_t k = 0; k < n; ++k) {
      cumsum += p[k] / kept;
      // the cut after client k at floor(cumsum(p)_k * |idx_c|); the last client takes the rest
      const int64_t end = k + 1 == n ? (int64_t)idx_c.size() : (int64_t)(cumsum * size_c);
      for (int64_t i = start; i < std::max(start, end); ++i) clients[k].push_back(idx_c[i]);
      start = std::max(start, end);
    }
  }
  return clients;
}

}  // namespace

Partition make_partition(const Tensor& labels, int64_t num_classes, int64_t n, const std::string& spec_text,
                         uint64_t seed, int64_t min_size) {
  const PartitionSpec spec = parse_partition(spec_text);
  KD_CHECK(labels.defined() && labels.dim() == 1 && labels.dtype() == DType::i64,
           "make_partition: labels must be a 1-D int64 tensor");
  const int64_t N = labels.numel();
  KD_CHECK(n >= 1, "the number of clients must be at least 1 (got {})", n);
  KD_CHECK(N >= n, "{} training images cannot be split among {} clients; use fewer clients or more images", N, n);
  const Tensor y = labels.contiguous();
  const int64_t* yp = y.data<int64_t>();
  std::vector<std::vector<int64_t>> by_class(num_classes);
  for (int64_t i = 0; i < N; ++i) {
    KD_CHECK(yp[i] >= 0 && yp[i] < num_classes, "make_partition: label {} of image {} is outside [0, {})", yp[i], i,
             num_classes);
    by_class[yp[i]].push_back(i);
  }
  Generator gen(seed);
  Partition clients;
  if (spec.kind == "iid") {
    std::vector<int64_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    gen.shuffle(order);
    clients = cut_evenly(order, n);
  } else if (spec.kind == "shards") {
    const int64_t num_shards = n * spec.shards;
    KD_CHECK(num_shards <= N, "shards:{} with {} clients needs {} shards but there are only {} images; use fewer "
             "shards or clients", spec.shards, n, num_shards, N);
    std::vector<int64_t> sorted;  // by label, stable (image order within a class)
    for (const auto& idx : by_class) sorted.insert(sorted.end(), idx.begin(), idx.end());
    const Partition shards = cut_evenly(sorted, num_shards);
    std::vector<int64_t> shard_order(num_shards);
    std::iota(shard_order.begin(), shard_order.end(), 0);
    gen.shuffle(shard_order);
    clients.assign(n, {});
    for (int64_t s = 0; s < num_shards; ++s) {
      const auto& shard = shards[shard_order[s]];
      clients[s / spec.shards].insert(clients[s / spec.shards].end(), shard.begin(), shard.end());
    }
  } else {  // dirichlet
    KD_CHECK(N >= n * min_size, "dirichlet: {} clients of at least {} images need {} images, there are {}; use "
             "fewer clients or more images", n, min_size, n * min_size, N);
    const int64_t max_draws = 1000;
    int64_t draws = 0;
    for (;;) {
      clients = dirichlet_draw(by_class, N, n, spec.alpha, gen);
      size_t smallest = clients[0].size();
      for (const auto& c : clients) smallest = std::min(smallest, c.size());
      if ((int64_t)smallest >= min_size) break;
      KD_CHECK(++draws < max_draws, "{}: no draw in {} gave every one of the {} clients {} images; raise ALPHA or "
               "use fewer clients", spec_text, max_draws, n, min_size);
    }
  }
  for (auto& c : clients) std::sort(c.begin(), c.end());
  return clients;
}

std::vector<std::vector<int64_t>> partition_class_counts(const Partition& p, const Tensor& labels,
                                                         int64_t num_classes) {
  const Tensor y = labels.contiguous();
  const int64_t* yp = y.data<int64_t>();
  std::vector<std::vector<int64_t>> counts(p.size(), std::vector<int64_t>(num_classes, 0));
  for (size_t k = 0; k < p.size(); ++k)
    for (int64_t i : p[k]) ++counts[k][yp[i]];
  return counts;
}

double mean_label_entropy(const std::vector<std::vector<int64_t>>& counts) {
  if (counts.empty()) return 0.0;
  double sum = 0;
  for (const auto& row : counts) {
    const double n = (double)std::accumulate(row.begin(), row.end(), (int64_t)0);
    for (int64_t c : row)
      if (c > 0) sum -= (double)c / n * std::log((double)c / n);
  }
  return sum / (double)counts.size();
}

}  // namespace kd::data
