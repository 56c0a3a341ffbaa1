// loader.h: batches of augmented, normalised images from a Dataset, prepared one batch ahead.
//
//   DataLoader loader(train_set, {.batch_size = 128, .seed = 1, .transform = train_transform(train_set)});
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     Batch b;
//     while (loader.next(b)) { ... b.images (B, C, H, W), b.labels (B) ... }
//   }
//
// Determinism: epoch e uses Generator(seed + e) for everything random in it: first the shuffled
// order (Fisher-Yates), then, batch after batch and image after image, the augmentation
// parameters (draw_aug_params). One producer makes the batches in order, so the same seed gives
// the same batches and the same augmentations whether prefetching is on or off, and whatever
// the consumer does between batches.
//
// Prefetching: with `prefetch`, a background std::thread prepares the next batch while the
// caller trains on the current one (one batch ahead: a one-slot hand-over guarded by a mutex and
// a condition variable). An error inside the thread is re-thrown by next().
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/transforms.h"

namespace kd::data {

struct Batch {
  Tensor images;   // (B, C, H, W) float32, augmented and normalised
  Tensor labels;   // (B) int64
  Tensor indices;  // (B) int64: the position of each image in the Dataset
  std::vector<AugParams> aug;  // (B) what was done to each image
  // Paired views (cross-modal runs): views[v] (B, C_v, H, W) holds the same images under
  // LoaderOptions::views[v], with the same augmentation parameters (the same crop and flip).
  std::vector<Tensor> views;
  int64_t epoch = 0;
  int64_t batch_index = 0;  // 0, 1, ... within the epoch
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;     // a fresh permutation every epoch; off: dataset order
  bool drop_last = false;  // drop the last batch when it is smaller than batch_size
  uint64_t seed = 0;       // epoch e draws from Generator(seed + e)
  bool prefetch = true;    // prepare the next batch on a background thread
  TransformConfig transform;  // augmentation and normalisation (mean/std must be set)
  // More views of every image, in Batch::views: each applies the image's augmentation parameters
  // with its own config (its modality and normalisation; its crop/flip settings are not drawn).
  std::vector<TransformConfig> views;
  // The views redraw the photometric choices (jitter, strong colour strengths) from the epoch's
  // generator, after the image's own draws; the geometry stays shared. Off: identical params.
  bool independent_photometric = false;
  // When set, replaces draw_aug_params: the augmentation of image `index` (the teacher cache
  // picks one of its stored views with gen). Called on the prefetch thread, in batch order.
  std::function<AugParams(int64_t index, Generator& gen)> choose_aug;
};

class DataLoader {
 public:
  // Keeps a copy of the Dataset handle (the images are shared, not copied).
  DataLoader(const Dataset& dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Batches per epoch.
  int64_t num_batches() const;
  int64_t dataset_size() const { return dataset_.size(); }
  const LoaderOptions& options() const { return opt_; }

  // Starts epoch `epoch` (stopping any epoch in progress): shuffles and, with prefetching,
  // starts preparing its first batch.
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch into `out`; false when the epoch is over.
  bool next(Batch& out);

  // The order of the dataset indices in epoch `epoch`, as start_epoch would draw it.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  // Builds batch k of the current epoch, drawing its augmentations from gen_.
  Batch make_batch(int64_t k);
  void producer();     // body of the prefetch thread
  void stop_thread();  // asks the thread to stop and joins it

  Dataset dataset_;
  LoaderOptions opt_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;    // this epoch's index order
  std::optional<Generator> gen_;  // this epoch's generator (after the shuffle)
  int64_t consumed_ = 0;          // batches handed out this epoch

  // Prefetch state, guarded by mutex_.
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<Batch> slot_;  // the batch made ahead
  bool produced_all_ = false;  // the thread has made the last batch of the epoch
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace kd::data
