// DataLoader: seeded shuffling, batching, drop_last, recorded augmentations, and determinism with
// and without the prefetch thread.
#include <chrono>
#include <numeric>
#include <set>
#include <thread>

#include "datasets/dataset.h"
#include "datasets/loader.h"
#include "test_util.h"

using namespace kd;
using namespace kd::data;

static Dataset small_set(int64_t n = 50) { return make_synthetic({.size = n, .num_classes = 5, .height = 8, .width = 8, .seed = 4}, "train"); }

// All batches of one epoch.
static std::vector<Batch> run_epoch(DataLoader& loader, int64_t epoch, int sleep_ms = 0) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) {
    out.push_back(b);
    if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  }
  return out;
}

static void check_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    INFO("batch " << k);
    CHECK(a[k].batch_index == b[k].batch_index);
    CHECK(a[k].epoch == b[k].epoch);
    CHECK(to_int_vector(a[k].indices) == to_int_vector(b[k].indices));
    CHECK(to_int_vector(a[k].labels) == to_int_vector(b[k].labels));
    CHECK(kdtest::allclose(a[k].images, b[k].images, 0, 0).ok);
    REQUIRE(a[k].aug.size() == b[k].aug.size());
    for (size_t i = 0; i < a[k].aug.size(); ++i) CHECK(a[k].aug[i] == b[k].aug[i]);
  }
}

TEST_CASE("loader: batches cover a shuffled epoch; labels and indices agree with the data set") {
  Dataset d = small_set(50);
  LoaderOptions opt;
  opt.batch_size = 16;
  opt.seed = 3;
  opt.transform = train_transform(d);
  DataLoader loader(d, opt);
  CHECK(loader.num_batches() == 4);
  std::vector<Batch> batches = run_epoch(loader, 0);
  REQUIRE(batches.size() == 4);
  CHECK(batches[3].size() == 2);  // 50 = 3 * 16 + 2
  std::vector<int64_t> seen;
  for (const Batch& b : batches) {
    CHECK(b.images.shape() == Shape{b.size(), 3, 8, 8});
    CHECK(b.images.dtype() == DType::f32);
    CHECK(b.labels.dtype() == DType::i64);
    CHECK(b.aug.size() == (size_t)b.size());
    for (int64_t i = 0; i < b.size(); ++i) {
      const int64_t idx = (int64_t)b.indices.at({i});
      seen.push_back(idx);
      CHECK(b.labels.at({i}) == d.labels.at({idx}));
      // The recorded augmentation reproduces the image (what a teacher cache relies on).
      Tensor again = apply_transform(d.images.select(0, idx), b.aug[i], opt.transform);
      CHECK(kdtest::allclose(again, b.images.select(0, i), 0, 0).ok);
    }
  }
  CHECK(seen == loader.epoch_order(0));
  std::set<int64_t> unique(seen.begin(), seen.end());
  CHECK(unique.size() == 50);
  CHECK(*unique.begin() == 0);
  CHECK(*unique.rbegin() == 49);
  std::vector<int64_t> identity(50);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(seen != identity);  // shuffled
  CHECK(loader.epoch_order(1) != loader.epoch_order(0));
  Batch extra;
  CHECK(!loader.next(extra));  // the epoch is over, and stays over
  CHECK(!loader.next(extra));
}

TEST_CASE("loader: same seed, same batches; prefetch on or off; a slow consumer changes nothing") {
  Dataset d = small_set(40);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 17;
  opt.transform = strong_transform(d);
  LoaderOptions no_prefetch = opt;
  no_prefetch.prefetch = false;
  DataLoader a(d, opt), b(d, opt), c(d, no_prefetch);
  for (int64_t epoch : {0, 1, 5}) {
    std::vector<Batch> ra = run_epoch(a, epoch), rb = run_epoch(b, epoch, 2), rc = run_epoch(c, epoch);
    check_same_batches(ra, rb);
    check_same_batches(ra, rc);
  }
  // Another seed: another order.
  LoaderOptions other = opt;
  other.seed = 18;
  DataLoader e(d, other);
  CHECK(to_int_vector(run_epoch(e, 0)[0].indices) != to_int_vector(run_epoch(a, 0)[0].indices));
  // Epoch e of seed s uses Generator(s + e): seed 17 epoch 1 == seed 18 epoch 0.
  check_same_batches(run_epoch(a, 1), [&] {
    auto r = run_epoch(e, 0);
    for (Batch& x : r) x.epoch = 1;
    return r;
  }());
}

TEST_CASE("loader: restarting an epoch midway, and destroying a loader with a batch pending") {
  Dataset d = small_set(40);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.seed = 2;
  opt.transform = train_transform(d);
  DataLoader loader(d, opt);
  std::vector<Batch> full = run_epoch(loader, 3);
  loader.start_epoch(3);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(loader.next(b));
  std::vector<Batch> again = run_epoch(loader, 3);  // restart while the thread waits
  check_same_batches(full, again);
  {
    DataLoader pending(d, opt);
    pending.start_epoch(0);
    REQUIRE(pending.next(b));
  }  // the destructor stops the thread that holds the next batch
  CHECK(b.size() == 4);
}

TEST_CASE("loader: no shuffle, no augmentation: the data set in order, normalised") {
  Dataset d = small_set(10);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.shuffle = false;
  opt.transform = eval_transform(d);
  DataLoader loader(d, opt);
  std::vector<Batch> batches = run_epoch(loader, 0);
  REQUIRE(batches.size() == 3);
  Tensor all = normalize_images(d.images, d.mean, d.std);
  int64_t k = 0;
  for (const Batch& b : batches)
    for (int64_t i = 0; i < b.size(); ++i, ++k) {
      CHECK(b.indices.at({i}) == k);
      CHECK(b.aug[i] == AugParams{});
      CHECK(kdtest::allclose(b.images.select(0, i), all.select(0, k), 0, 0).ok);
    }
  CHECK(k == 10);
  // Normalised with the data set's statistics: mean about 0, std about 1 per channel.
  Tensor m = mean(all, {0, 2, 3});
  for (float v : to_float_vector(m)) CHECK(std::fabs(v) < 1e-3);
}

TEST_CASE("loader: drop_last") {
  Dataset d = small_set(10);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.drop_last = true;
  opt.transform = eval_transform(d);
  DataLoader loader(d, opt);
  CHECK(loader.num_batches() == 2);
  std::vector<Batch> batches = run_epoch(loader, 0);
  REQUIRE(batches.size() == 2);
  for (const Batch& b : batches) CHECK(b.size() == 4);
  opt.drop_last = false;
  CHECK(DataLoader(d, opt).num_batches() == 3);
}

TEST_CASE("loader: errors") {
  Dataset d = small_set(10);
  LoaderOptions opt;
  opt.transform = eval_transform(d);
  opt.batch_size = 0;
  CHECK_THROWS_WITH_SUBSTR(DataLoader(d, opt), "batch_size must be > 0");
  opt.batch_size = 16;
  opt.drop_last = true;
  CHECK_THROWS_WITH_SUBSTR(DataLoader(d, opt), "leaves no batch of the 10 images");
  opt.drop_last = false;
  opt.transform.mean = {0.5f};
  CHECK_THROWS_WITH_SUBSTR(DataLoader(d, opt), "1 means and");
  opt.transform = eval_transform(d);
  DataLoader loader(d, opt);
  Batch b;
  CHECK_THROWS_WITH_SUBSTR(loader.next(b), "call start_epoch");
}
