// The real data sets, when they are on disk: the shared CIFAR-10 JPEG archive (../shared/data)
// and the real CIFAR-100 (KDLAB_CIFAR100_DIR). Each test is skipped when its data is absent, so
// CI (which has neither) passes without them. The loaders' behaviour on small synthetic files is
// tested in test_datasets.cpp.
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "datasets/dataset.h"
#include "engine/ops.h"
#include "test_util.h"

using namespace kd;
using namespace kd::data;
namespace fs = std::filesystem;

// A fresh empty folder for one test.
static std::string fresh_dir(const std::string& name) {
  std::string d = kdtest::temp_path(name);
  fs::create_directories(d);
  return d;
}

// ---------------------------------------------------------------- the real CIFAR-10 (JPEG) archive

TEST_CASE("cifar10-jpg archive (../shared/data): 50000 + 10000 images, CIFAR class order, pack round trip") {
  const std::string archive = kdtest::shared_path("data/cifar10-jpg.tar.gz");
  if (!kdtest::file_exists(archive)) {
    MESSAGE("skipped: " << archive << " is absent (it is development data, not shipped to users)");
    return;
  }
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  Dataset train = load_dataset("imagefolder", archive, "train");
  auto t1 = clock::now();
  Dataset test = load_dataset("imagefolder", archive, "test");
  auto t2 = clock::now();
  MESSAGE("cifar10-jpg: read + decoded train in " << std::chrono::duration<double>(t1 - t0).count() << " s, test in "
                                                  << std::chrono::duration<double>(t2 - t1).count() << " s");
  CHECK(train.images.shape() == Shape{50000, 3, 32, 32});
  CHECK(test.images.shape() == Shape{10000, 3, 32, 32});
  const std::vector<std::string> cifar = {"airplane", "automobile", "bird", "cat", "deer",
                                          "dog",      "frog",       "horse", "ship", "truck"};
  CHECK(train.class_names == cifar);
  CHECK(test.class_names == cifar);
  std::vector<int64_t> counts(10, 0);
  for (int64_t y : to_int_vector(train.labels)) counts[y]++;
  CHECK(counts == std::vector<int64_t>(10, 5000));
  // The statistics of the JPEG pixels are close to the published CIFAR-10 ones.
  for (int c = 0; c < 3; ++c) {
    CHECK(train.mean[c] == doctest::Approx(std::vector<float>{0.4914f, 0.4822f, 0.4465f}[c]).epsilon(0.01));
    CHECK(train.std[c] == doctest::Approx(std::vector<float>{0.2470f, 0.2435f, 0.2616f}[c]).epsilon(0.02));
  }

  const std::string dir = fresh_dir("cifar10_packed");
  auto t3 = clock::now();
  pack_cifar_binary(train, dir + "/train.bin");
  pack_cifar_binary(test, dir + "/test.bin");
  Dataset rt = load_dataset("cifar10", dir + "/train.bin", "train");
  auto t4 = clock::now();
  MESSAGE("cifar10-jpg: packed both splits and re-read train in " << std::chrono::duration<double>(t4 - t3).count() << " s");
  CHECK(fs::file_size(dir + "/train.bin") == 50000ull * 3073);
  CHECK(rt.class_names == cifar);
  const bool same_pixels = std::memcmp(rt.images.data<uint8_t>(), train.images.data<uint8_t>(), 50000 * 3072) == 0;
  CHECK(same_pixels);
  CHECK(to_int_vector(rt.labels) == to_int_vector(train.labels));
  Dataset rtest = load_cifar10(dir + "/test.bin", "test");
  CHECK(std::memcmp(rtest.images.data<uint8_t>(), test.images.data<uint8_t>(), 10000 * 3072) == 0);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- the real CIFAR-100

// With the real CIFAR-100 on disk (KDLAB_CIFAR100_DIR = the cifar-100-binary folder, with its
// .tar.gz beside it as ../shared/data/pack_cifar100.py writes them), the folder, the archive and
// a packed .bin give the same 50,000 + 10,000 images, fine and coarse labels, and the channel
// means ../shared/data/README.md publishes. Skipped when the variable is unset (CI has no CIFAR-100).
TEST_CASE("cifar100: the folder, the .tar.gz and a packed .bin read the same data set") {
  const char* env = std::getenv("KDLAB_CIFAR100_DIR");
  if (!env || !*env) {
    MESSAGE("KDLAB_CIFAR100_DIR is not set: the real CIFAR-100 is not read");
    return;
  }
  std::string folder = env;
  while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
  const std::string archive = folder + ".tar.gz";
  for (const char* split : {"train", "test"}) {
    CAPTURE(split);
    const data::Dataset a = data::load_dataset("cifar100", folder, split);
    CHECK(a.size() == (std::string(split) == "train" ? 50000 : 10000));
    CHECK(a.num_classes() == 100);
    CHECK(a.coarse_class_names.size() == 20);
    CHECK(a.class_names[0] == "apple");
    if (std::string(split) == "train") {  // ../shared/data/README.md: channel means 0.5071 0.4865 0.4409
      const Tensor m = mean(a.images.to(DType::f32), {0, 2, 3});  // (3) pixel means, 0..255
      CHECK(m.at({0}) / 255.0 == doctest::Approx(0.5071).epsilon(2e-4));
      CHECK(m.at({1}) / 255.0 == doctest::Approx(0.4865).epsilon(2e-4));
      CHECK(m.at({2}) / 255.0 == doctest::Approx(0.4409).epsilon(2e-4));
    }
    std::vector<data::Dataset> others;
    if (fs::exists(archive)) others.push_back(data::load_dataset("cifar100", archive, split));
    else MESSAGE("no " << archive << " beside the folder: the archive is not compared");
    const std::string packed = kdtest::temp_path(std::string("cifar100_") + split + ".bin");
    data::pack_cifar_binary(a, packed);
    others.push_back(data::load_dataset("cifar100", packed, split));
    for (const data::Dataset& b : others) {
      CAPTURE(b.source);
      REQUIRE(b.size() == a.size());
      CHECK(max(abs(sub(b.images.to(DType::f32), a.images.to(DType::f32)))).item() == 0.0);
      CHECK(to_int_vector(b.labels) == to_int_vector(a.labels));
      CHECK(to_int_vector(b.coarse_labels) == to_int_vector(a.coarse_labels));
      CHECK(b.class_names == a.class_names);
    }
  }
}
