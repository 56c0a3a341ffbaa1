// loader.cpp: seeded shuffling, batching and the one-batch-ahead prefetch thread (see loader.h).
#include "datasets/loader.h"

#include <cstring>
#include <numeric>

namespace kd::data {

namespace {

// The epoch's order: identity, or a Fisher-Yates shuffle drawing from gen.
std::vector<int64_t> draw_order(int64_t n, bool shuffle, Generator& gen) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) gen.shuffle(order);
  return order;
}

}  // namespace

DataLoader::DataLoader(const Dataset& dataset, LoaderOptions options) : dataset_(dataset), opt_(std::move(options)) {
  validate(dataset_);
  KD_CHECK(opt_.batch_size > 0, "DataLoader: batch_size must be > 0, got {}", opt_.batch_size);
  KD_CHECK(!opt_.drop_last || opt_.batch_size <= dataset_.size(),
           "DataLoader: batch_size {} with drop_last leaves no batch of the {} images of {}; use a smaller batch",
           opt_.batch_size, dataset_.size(), dataset_.source);
  validate_transform(opt_.transform, dataset_.channels(), dataset_.height(), dataset_.width());
  for (const TransformConfig& v : opt_.views) validate_transform(v, dataset_.channels(), dataset_.height(), dataset_.width());
}

DataLoader::~DataLoader() { stop_thread(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_.size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  Generator gen(opt_.seed + (uint64_t)epoch);
  return draw_order(dataset_.size(), opt_.shuffle, gen);
}

void DataLoader::start_epoch(int64_t epoch) {
  KD_CHECK(epoch >= 0, "DataLoader::start_epoch: epoch must be >= 0, got {}", epoch);
  stop_thread();
  epoch_ = epoch;
  gen_.emplace(opt_.seed + (uint64_t)epoch);
  order_ = draw_order(dataset_.size(), opt_.shuffle, *gen_);  // the augmentations draw after the shuffle
  consumed_ = 0;
  slot_.reset();
  produced_all_ = false;
  stop_ = false;
  error_ = nullptr;
  if (opt_.prefetch) thread_ = std::thread(&DataLoader::producer, this);
}

Batch DataLoader::make_batch(int64_t k) {
  const int64_t n = dataset_.size(), C = dataset_.channels(), H = dataset_.height(), W = dataset_.width();
  const int64_t per = C * H * W, C2 = transform_channels(opt_.transform, C);
  const int64_t start = k * opt_.batch_size, end = std::min(n, start + opt_.batch_size), B = end - start;
  Batch b;
  b.epoch = epoch_;
  b.batch_index = k;
  b.images = empty({B, C2, H, W});    // (B, C2, H, W) f32: the modality of opt_.transform
  b.labels = empty({B}, DType::i64);  // (B)
  b.indices = empty({B}, DType::i64); // (B)
  b.aug.reserve(B);
  const uint8_t* src = dataset_.images.data<uint8_t>();
  const int64_t* y = dataset_.labels.data<int64_t>();
  float* dst = b.images.data<float>();
  for (const TransformConfig& v : opt_.views) b.views.push_back(empty({B, transform_channels(v, C), H, W}));
  for (int64_t i = 0; i < B; ++i) {
    const int64_t idx = order_[start + i];
    b.aug.push_back(opt_.choose_aug ? opt_.choose_aug(idx, *gen_) : draw_aug_params(opt_.transform, H, W, *gen_));
    apply_transform(src + idx * per, C, H, W, b.aug.back(), opt_.transform, dst + i * C2 * H * W,
                    dataset_.offset_of(idx));
    for (size_t v = 0; v < opt_.views.size(); ++v) {  // the paired views: the same geometry, their own modality
      const TransformConfig& tv = opt_.views[v];
      const AugParams a = opt_.independent_photometric ? redraw_photometric(b.aug.back(), tv, H, W, *gen_) : b.aug.back();
      const int64_t Cv = b.views[v].size(1);
      apply_transform(src + idx * per, C, H, W, a, tv, b.views[v].data<float>() + i * Cv * H * W,
                      dataset_.offset_of(idx));
    }
    b.labels.data<int64_t>()[i] = y[idx];
    b.indices.data<int64_t>()[i] = idx;
  }
  return b;
}

void DataLoader::producer() {
  const int64_t total = num_batches();
  for (int64_t k = 0; k < total; ++k) {
    Batch b;
    try {
      b = make_batch(k);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      produced_all_ = true;
      cv_.notify_all();
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !slot_.has_value() || stop_; });  // wait until the previous batch was taken
    if (stop_) return;
    slot_ = std::move(b);
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  produced_all_ = true;
  cv_.notify_all();
}

bool DataLoader::next(Batch& out) {
  KD_CHECK(epoch_ >= 0, "DataLoader::next: call start_epoch(epoch) before asking for batches");
  if (!opt_.prefetch) {
    if (consumed_ >= num_batches()) return false;
    out = make_batch(consumed_++);
    return true;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return slot_.has_value() || produced_all_; });
  if (slot_.has_value()) {
    out = std::move(*slot_);
    slot_.reset();
    ++consumed_;
    cv_.notify_all();  // the producer may make the next one
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

void DataLoader::stop_thread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace kd::data
