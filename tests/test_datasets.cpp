// Data sets: every loader on small files this test writes in the exact official formats (CIFAR-10
// and CIFAR-100 binary, IDX plain and gzip, PNG / BMP / JPEG image folders, tar.gz archives), the
// bad-data errors, the synthetic set, packing to the CIFAR binary format, and (when ../shared/data
// has it) the full CIFAR-10 JPEG archive.
#include <zlib.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "datasets/archive.h"
#include "datasets/dataset.h"
#include "test_util.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using namespace kd;
using namespace kd::data;
namespace fs = std::filesystem;

// CHECK_THROWS_WITH_SUBSTR for messages built at run time (paths of the test's own files).
#define CHECK_ERROR_CONTAINS(expr, text) CHECK_THROWS_WITH_SUBSTR(expr, std::string(text).c_str())

// ---------------------------------------------------------------- writers for the test files

// A fresh empty folder for one test.
static std::string fresh_dir(const std::string& name) {
  std::string d = kdtest::temp_path(name);
  fs::create_directories(d);
  return d;
}

static void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write((const char*)bytes.data(), (std::streamsize)bytes.size());
  REQUIRE(f.good());
}

static void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), (unsigned)bytes.size()) == (int)bytes.size());
  gzclose(f);
}

static std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// The pixel value both the writers and the checks use: image i, channel c, row y, column x.
static uint8_t pixel(int64_t i, int64_t c, int64_t y, int64_t x) {
  return (uint8_t)((i * 37 + c * 71 + y * 13 + x * 5) % 256);
}

// One CIFAR record: label byte(s), then the R, G, B planes of 32 x 32.
static void append_cifar_record(std::vector<uint8_t>& out, const std::vector<uint8_t>& labels, int64_t i) {
  out.insert(out.end(), labels.begin(), labels.end());
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 32; ++y)
      for (int64_t x = 0; x < 32; ++x) out.push_back(pixel(i, c, y, x));
}

// CIFAR-10: data_batch_1..5.bin with `per_file` records each, then test_batch.bin. Image i (counted
// over the train files in order) has label (i * 3) % 10; test image j has label j % 10 and
// pixels of image 1000 + j.
static void write_cifar10_files(const std::string& dir, int64_t per_file) {
  int64_t i = 0;
  for (int f = 1; f <= 5; ++f) {
    std::vector<uint8_t> bytes;
    for (int64_t k = 0; k < per_file; ++k, ++i) append_cifar_record(bytes, {(uint8_t)((i * 3) % 10)}, i);
    write_bytes(dir + "/data_batch_" + std::to_string(f) + ".bin", bytes);
  }
  std::vector<uint8_t> test;
  for (int64_t j = 0; j < per_file; ++j) append_cifar_record(test, {(uint8_t)(j % 10)}, 1000 + j);
  write_bytes(dir + "/test_batch.bin", test);
}

// CIFAR-100: train.bin (n records, coarse i % 20, fine (i * 7) % 100) and test.bin (n records of image 500 + j).
static void write_cifar100_files(const std::string& dir, int64_t n) {
  std::vector<uint8_t> train, test;
  for (int64_t i = 0; i < n; ++i) append_cifar_record(train, {(uint8_t)(i % 20), (uint8_t)((i * 7) % 100)}, i);
  for (int64_t j = 0; j < n; ++j) append_cifar_record(test, {(uint8_t)((j + 1) % 20), (uint8_t)(99 - j)}, 500 + j);
  write_bytes(dir + "/train.bin", train);
  write_bytes(dir + "/test.bin", test);
}

static void check_pixels(const Dataset& d, int64_t row, int64_t image) {
  const uint8_t* p = d.images.data<uint8_t>() + row * d.channels() * d.height() * d.width();
  bool ok = true;
  for (int64_t c = 0; c < d.channels(); ++c)
    for (int64_t y = 0; y < d.height(); ++y)
      for (int64_t x = 0; x < d.width(); ++x)
        ok = ok && *p++ == pixel(image, c, y, x);
  CHECK_MESSAGE(ok, "pixels of row " << row << " differ from image " << image);
}

// A tar archive (ustar), gzip-compressed or not. Names longer than 100 characters use the ustar
// prefix field; `gnu_long` entries use a GNU 'L' long-name header instead.
struct TarMember {
  std::string name;
  std::vector<uint8_t> data;
  bool dir = false;
  bool gnu_long = false;
};

static void tar_header(std::vector<uint8_t>& out, const std::string& full, uint64_t size, char type) {
  uint8_t h[512] = {};
  std::string name = full, prefix;
  if (name.size() > 100) {
    size_t cut = name.rfind('/', 155);
    REQUIRE(cut != std::string::npos);
    prefix = name.substr(0, cut);
    name = name.substr(cut + 1);
  }
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf((char*)h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
  std::snprintf((char*)h + 108, 8, "%07o", 0);
  std::snprintf((char*)h + 116, 8, "%07o", 0);
  std::snprintf((char*)h + 124, 12, "%011llo", (unsigned long long)size);
  std::snprintf((char*)h + 136, 12, "%011o", 0);
  std::memset(h + 148, ' ', 8);
  h[156] = (uint8_t)type;
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memcpy(h + 345, prefix.data(), std::min<size_t>(prefix.size(), 155));
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf((char*)h + 148, 8, "%06o", sum);
  h[155] = ' ';
  out.insert(out.end(), h, h + 512);
}

static void tar_data(std::vector<uint8_t>& out, const std::vector<uint8_t>& data) {
  out.insert(out.end(), data.begin(), data.end());
  out.resize((out.size() + 511) / 512 * 512, 0);
}

static std::vector<uint8_t> make_tar(const std::vector<TarMember>& members) {
  std::vector<uint8_t> out;
  for (const TarMember& m : members) {
    if (m.gnu_long) {
      std::vector<uint8_t> name(m.name.begin(), m.name.end());
      name.push_back(0);
      tar_header(out, "././@LongLink", name.size(), 'L');
      tar_data(out, name);
      tar_header(out, m.name.substr(0, 99), m.data.size(), '0');
    } else {
      tar_header(out, m.name, m.data.size(), m.dir ? '5' : '0');
    }
    tar_data(out, m.data);
  }
  out.resize(out.size() + 1024, 0);  // the end-of-archive marker
  return out;
}

// Every file under `root` as tar members named relative to `root`, prefixed by `prefix`.
static std::vector<TarMember> tree_members(const std::string& root, const std::string& prefix) {
  std::vector<TarMember> ms;
  std::vector<fs::path> paths;
  for (const auto& e : fs::recursive_directory_iterator(root)) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  for (const fs::path& p : paths) {
    std::string rel = prefix + fs::relative(p, root).string();
    if (fs::is_directory(p)) ms.push_back({rel + "/", {}, true});
    else ms.push_back({rel, slurp(p.string())});
  }
  return ms;
}

// An image (C, H, W) of pixel(i, ...) written as PNG, BMP or JPEG (stb_image_write wants HWC).
static void write_image(const std::string& path, int64_t i, int c, int h, int w) {
  std::vector<uint8_t> hwc((size_t)(h * w * c));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) hwc[(y * w + x) * c + ch] = pixel(i, ch, y, x);
  fs::create_directories(fs::path(path).parent_path());
  int ok = 0;
  if (path.ends_with(".png")) ok = stbi_write_png(path.c_str(), w, h, c, hwc.data(), w * c);
  else if (path.ends_with(".bmp")) ok = stbi_write_bmp(path.c_str(), w, h, c, hwc.data());
  else ok = stbi_write_jpg(path.c_str(), w, h, c, hwc.data(), 100);
  REQUIRE(ok);
}

// root/<class>/<k>.png for classes {"cat", "ant", "bee"} (so sorted: ant, bee, cat), 3 images each,
// image number = 10 * (sorted label) + k; BMPs in "bee".
static void write_small_folder(const std::string& root, int c = 3, int h = 5, int w = 4) {
  const std::vector<std::string> classes = {"ant", "bee", "cat"};
  for (int64_t label : {2, 0, 1})
    for (int k = 0; k < 3; ++k) {
      const std::string ext = classes[label] == "bee" ? ".bmp" : ".png";
      write_image(root + "/" + classes[label] + "/" + std::to_string(k) + ext, 10 * label + k, c, h, w);
    }
  write_bytes(root + "/cat/notes.txt", {'h', 'i'});  // not an image: ignored
}

static void check_small_folder(const Dataset& d, int c = 3, int h = 5, int w = 4) {
  REQUIRE(d.size() == 9);
  CHECK(d.class_names == std::vector<std::string>{"ant", "bee", "cat"});
  CHECK(d.images.shape() == Shape{9, c, h, w});
  CHECK(to_int_vector(d.labels) == std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2, 2});
  for (int64_t r = 0; r < 9; ++r) check_pixels(d, r, 10 * (r / 3) + r % 3);
  CHECK(d.mean.size() == (size_t)c);
}

// ---------------------------------------------------------------- CIFAR

TEST_CASE("cifar10: the official binary files, from a folder, the archive's folder, and the .tar.gz") {
  const std::string dir = fresh_dir("cifar10");
  write_cifar10_files(dir + "/cifar-10-batches-bin", 3);

  auto check_train = [](const Dataset& d) {
    REQUIRE(d.size() == 15);
    CHECK(d.images.shape() == Shape{15, 3, 32, 32});
    CHECK(d.num_classes() == 10);
    CHECK(d.class_names[0] == "airplane");
    CHECK(d.class_names[9] == "truck");
    for (int64_t i = 0; i < 15; ++i) {
      CHECK(d.labels.at({i}) == (i * 3) % 10);
      check_pixels(d, i, i);
    }
    CHECK(d.mean == std::vector<float>{0.4914f, 0.4822f, 0.4465f});
    CHECK(d.std == std::vector<float>{0.2470f, 0.2435f, 0.2616f});
  };
  auto check_test = [](const Dataset& d) {
    REQUIRE(d.size() == 3);
    for (int64_t j = 0; j < 3; ++j) {
      CHECK(d.labels.at({j}) == j % 10);
      check_pixels(d, j, 1000 + j);
    }
  };
  SUBCASE("the folder holding cifar-10-batches-bin/") {
    check_train(load_dataset("cifar10", dir, "train"));
    check_test(load_dataset("cifar10", dir, "test"));
  }
  SUBCASE("cifar-10-batches-bin/ itself") {
    check_train(load_cifar10(dir + "/cifar-10-batches-bin", "train"));
    CHECK(load_cifar10(dir + "/cifar-10-batches-bin", "train").split == "train");
  }
  SUBCASE("the .tar.gz archive, as published") {
    std::vector<TarMember> ms = tree_members(dir, "");
    ms.push_back({"cifar-10-batches-bin/batches.meta.txt", {'x', '\n'}});
    const std::string downloads = fresh_dir("downloads");
    const std::string archive = downloads + "/cifar-10-binary.tar.gz";
    write_gzip(archive, make_tar(ms));
    check_train(load_dataset("cifar10", archive, "train"));
    check_test(load_dataset("cifar10", archive, "test"));
    check_test(load_dataset("cifar10", downloads, "test"));  // the folder it was downloaded to
  }
  SUBCASE("batches.meta.txt beside the files names the classes") {
    std::string names;
    for (int k = 0; k < 10; ++k) names += "c" + std::to_string(k) + "\n";
    write_bytes(dir + "/cifar-10-batches-bin/batches.meta.txt", std::vector<uint8_t>(names.begin(), names.end()));
    Dataset d = load_cifar10(dir, "test");
    CHECK(d.class_names[3] == "c3");
  }
}

TEST_CASE("cifar100: fine labels by default, coarse on request; folder and archive") {
  const std::string dir = fresh_dir("cifar100");
  write_cifar100_files(dir + "/cifar-100-binary", 4);
  Dataset d = load_dataset("cifar100", dir, "train");
  REQUIRE(d.size() == 4);
  CHECK(d.num_classes() == 100);
  CHECK(d.class_names[0] == "apple");
  CHECK(d.class_names[99] == "worm");
  CHECK(d.coarse_class_names.size() == 20);
  CHECK(d.coarse_class_names[19] == "vehicles_2");
  for (int64_t i = 0; i < 4; ++i) {
    CHECK(d.labels.at({i}) == (i * 7) % 100);
    CHECK(d.coarse_labels.at({i}) == i % 20);
    check_pixels(d, i, i);
  }
  CHECK(d.mean == std::vector<float>{0.5071f, 0.4867f, 0.4408f});
  CHECK(d.std == std::vector<float>{0.2675f, 0.2565f, 0.2761f});

  LoadOptions coarse;
  coarse.coarse_labels = true;
  Dataset c = load_dataset("cifar100", dir, "test", coarse);
  CHECK(c.num_classes() == 20);
  for (int64_t j = 0; j < 4; ++j) {
    CHECK(c.labels.at({j}) == (j + 1) % 20);
    check_pixels(c, j, 500 + j);
  }

  const std::string archive = dir + "/cifar-100-binary.tar.gz";
  write_gzip(archive, make_tar(tree_members(dir, "")));
  Dataset t = load_cifar100(archive, "test");
  CHECK(to_int_vector(t.labels) == std::vector<int64_t>{99, 98, 97, 96});

  // packed: CIFAR-100's own record (coarse byte, fine byte, pixels), read back by load_cifar100
  const std::string packed = dir + "/packed100.bin";
  pack_cifar_binary(d, packed);
  CHECK(fs::file_size(packed) == 4u * (2 + 3072));
  Dataset p = load_cifar100(packed, "train");
  CHECK(to_int_vector(p.labels) == to_int_vector(d.labels));
  CHECK(to_int_vector(p.coarse_labels) == to_int_vector(d.coarse_labels));
  for (int64_t i = 0; i < 4; ++i) check_pixels(p, i, i);
  CHECK_ERROR_CONTAINS(pack_cifar_binary(c, dir + "/coarse.bin"), "holds CIFAR-100's super-classes as its labels");
}

TEST_CASE("cifar: bad files give errors naming the file") {
  const std::string dir = fresh_dir("cifar_bad");
  write_cifar10_files(dir, 2);
  const std::string batch3 = dir + "/data_batch_3.bin";

  SUBCASE("missing directory") {
    CHECK_ERROR_CONTAINS(load_cifar10(dir + "/nope", "train"), "/nope' does not exist");
  }
  SUBCASE("missing file") {
    fs::remove(batch3);
    CHECK_ERROR_CONTAINS(load_cifar10(dir, "train"), "missing '" + batch3 + "'");
  }
  SUBCASE("truncated file") {
    std::vector<uint8_t> b = slurp(batch3);
    b.resize(b.size() - 100);
    write_bytes(batch3, b);
    CHECK_ERROR_CONTAINS(load_cifar10(dir, "train"), "'" + batch3 + "' has 6046 bytes, not a positive multiple of the 3073-byte cifar10 record");
  }
  SUBCASE("empty file") {
    write_bytes(batch3, {});
    CHECK_ERROR_CONTAINS(load_cifar10(dir, "train"), "'" + batch3 + "' has 0 bytes");
  }
  SUBCASE("CIFAR-100 records read as CIFAR-10: wrong record size, with a hint") {
    const std::string d100 = fresh_dir("c100");
    write_cifar100_files(d100, 3);
    CHECK_ERROR_CONTAINS(load_cifar10(d100 + "/train.bin", "train"), "is this a CIFAR-100 file? (use data set 'cifar100')");
    CHECK_ERROR_CONTAINS(load_cifar100(dir + "/test_batch.bin", "test"), "is this a CIFAR-10 file?");
  }
  SUBCASE("label out of range") {
    std::vector<uint8_t> b = slurp(batch3);
    b[3073] = 12;
    write_bytes(batch3, b);
    CHECK_ERROR_CONTAINS(load_cifar10(dir, "train"), "'" + batch3 + "': record 1 has label 12, but cifar10 has 10 classes");
  }
  SUBCASE("archive without the member") {
    const std::string archive = dir + "/partial.tar.gz";
    write_gzip(archive, make_tar({{"cifar-10-batches-bin/test_batch.bin", slurp(dir + "/test_batch.bin")}}));
    CHECK(load_cifar10(archive, "test").size() == 2);
    CHECK_ERROR_CONTAINS(load_cifar10(archive, "train"), "has no member data_batch_1.bin");
  }
  SUBCASE("unknown split") {
    CHECK_ERROR_CONTAINS(load_cifar10(dir, "val"), "unknown split 'val' (use \"train\" or \"test\")");
  }
}

// ---------------------------------------------------------------- tar

TEST_CASE("tar reader: ustar prefix, GNU long names, plain tar; corrupt and truncated archives") {
  const std::string dir = fresh_dir("tar");
  const std::string long_dir = std::string(70, 'd') + "/" + std::string(60, 'e');
  std::vector<TarMember> ms = {{"top/", {}, true},
                               {"top/a.txt", {'a', 'b', 'c'}},
                               {long_dir + "/file.bin", std::vector<uint8_t>(700, 7)},
                               {"g/" + std::string(120, 'n') + ".txt", {'z'}, false, true}};
  for (bool gz : {true, false}) {
    const std::string path = dir + (gz ? "/t.tar.gz" : "/t.tar");
    if (gz) write_gzip(path, make_tar(ms));
    else write_bytes(path, make_tar(ms));
    std::vector<std::string> names;
    std::vector<size_t> sizes;
    read_tar(path, [](const std::string& n) { return n != "top/a.txt"; },
             [&](TarEntry& e) {
               names.push_back(e.name);
               sizes.push_back(e.data.size());
             });
    CHECK(names == std::vector<std::string>{"top/", "top/a.txt", long_dir + "/file.bin", "g/" + std::string(120, 'n') + ".txt"});
    CHECK(sizes == std::vector<size_t>{0, 0, 700, 1});  // top/a.txt was not wanted
  }
  SUBCASE("not a tar file") {
    const std::string path = dir + "/junk.tar.gz";
    write_gzip(path, std::vector<uint8_t>(2048, 'x'));
    CHECK_ERROR_CONTAINS(read_tar(path, [](const std::string&) { return true; }, [](TarEntry&) {}),
                             "'" + path + "' is not a tar archive, or is corrupt");
  }
  SUBCASE("truncated gzip stream") {
    const std::string full = dir + "/t.tar.gz", cut = dir + "/cut.tar.gz";
    std::vector<uint8_t> b = slurp(full);
    b.resize(b.size() / 2);
    write_bytes(cut, b);
    CHECK_ERROR_CONTAINS(read_tar(cut, [](const std::string&) { return true; }, [](TarEntry&) {}),
                             "'" + cut + "' is truncated");
  }
  SUBCASE("truncated inside a member") {
    const std::string cut = dir + "/cut.tar";
    std::vector<uint8_t> b = make_tar(ms);
    b.resize(512 * 4 + 100);  // inside file.bin's data
    write_bytes(cut, b);
    CHECK_ERROR_CONTAINS(read_tar(cut, [](const std::string&) { return true; }, [](TarEntry&) {}),
                             "the archive ends inside member '" + long_dir + "/file.bin'");
  }
  SUBCASE("missing file") {
    CHECK_ERROR_CONTAINS(read_file_bytes(dir + "/none.gz"), "none.gz': the file does not exist");
  }
}

// ---------------------------------------------------------------- IDX

// IDX files of n images h x w (pixels of image 200 + i, one channel) and labels (i * 3) % 10.
static void write_idx(const std::string& dir, const std::string& prefix, int64_t n, int64_t h, int64_t w, bool gz) {
  auto be32 = [](std::vector<uint8_t>& out, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back((uint8_t)(v >> s));
  };
  std::vector<uint8_t> img, lab;
  be32(img, 2051);
  be32(img, (uint32_t)n);
  be32(img, (uint32_t)h);
  be32(img, (uint32_t)w);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) img.push_back(pixel(200 + i, 0, y, x));
  be32(lab, 2049);
  be32(lab, (uint32_t)n);
  for (int64_t i = 0; i < n; ++i) lab.push_back((uint8_t)((i * 3) % 10));
  const std::string ext = gz ? ".gz" : "";
  if (gz) {
    write_gzip(dir + "/" + prefix + "-images-idx3-ubyte" + ext, img);
    write_gzip(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, lab);
  } else {
    write_bytes(dir + "/" + prefix + "-images-idx3-ubyte", img);
    write_bytes(dir + "/" + prefix + "-labels-idx1-ubyte", lab);
  }
}

TEST_CASE("idx: MNIST / Fashion-MNIST files, gzip and plain") {
  for (bool gz : {true, false}) {
    INFO("gzip " << gz);
    const std::string dir = fresh_dir("idx");
    write_idx(dir, "train", 7, 6, 5, gz);
    write_idx(dir, "t10k", 3, 6, 5, gz);
    Dataset d = load_dataset("mnist", dir, "train");
    REQUIRE(d.size() == 7);
    CHECK(d.images.shape() == Shape{7, 1, 6, 5});
    for (int64_t i = 0; i < 7; ++i) {
      CHECK(d.labels.at({i}) == (i * 3) % 10);
      check_pixels(d, i, 200 + i);
    }
    CHECK(d.class_names[7] == "7");
    CHECK(d.mean == std::vector<float>{0.1307f});
    CHECK(d.std == std::vector<float>{0.3081f});
    Dataset f = load_dataset("fashion-mnist", dir, "test");
    CHECK(f.size() == 3);
    CHECK(f.class_names[9] == "Ankle boot");
    CHECK(f.mean == std::vector<float>{0.2860f});
    CHECK(f.std == std::vector<float>{0.3530f});
  }
  // torchvision's layout: <root>/raw/
  const std::string dir = fresh_dir("idx_raw");
  write_idx(dir + "/raw", "t10k", 2, 3, 3, true);
  CHECK(load_idx("mnist", dir, "test").size() == 2);
}

TEST_CASE("idx: bad files give errors naming the file") {
  const std::string dir = fresh_dir("idx_bad");
  write_idx(dir, "train", 4, 3, 3, false);
  const std::string img = dir + "/train-images-idx3-ubyte", lab = dir + "/train-labels-idx1-ubyte";
  SUBCASE("wrong magic") {
    std::vector<uint8_t> b = slurp(img);
    b[3] = 0x01;  // 2049: a label file's magic
    write_bytes(img, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"),
                             "'" + img + "' is not an IDX image file: magic number 2049 (expected 2051); this is a label file");
    b[3] = 0x99;
    write_bytes(img, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"), "magic number 2201 (expected 2051)");
  }
  SUBCASE("truncated image file") {
    std::vector<uint8_t> b = slurp(img);
    b.resize(b.size() - 5);
    write_bytes(img, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"),
                             "'" + img + "' has 47 bytes, but its header announces 4 images of 3 x 3 (52 bytes with the header): the file is truncated");
  }
  SUBCASE("truncated header") {
    write_bytes(lab, {0, 0, 8});
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"), "'" + lab + "' is truncated: 3 bytes");
  }
  SUBCASE("truncated gzip") {
    const std::string gz_dir = fresh_dir("idx_gz");
    write_idx(gz_dir, "train", 50, 8, 8, true);
    const std::string gz = gz_dir + "/train-images-idx3-ubyte.gz";
    std::vector<uint8_t> b = slurp(gz);
    b.resize(b.size() * 2 / 3);
    write_bytes(gz, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", gz_dir, "train"), "'" + gz + "' is truncated: the gzip stream ends unexpectedly");
  }
  SUBCASE("label count differs") {
    write_idx(fresh_dir("other"), "train", 5, 3, 3, false);
    std::vector<uint8_t> b = slurp(lab);
    b[7] = 5;
    b.push_back(0);
    write_bytes(lab, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"), "holds 5 labels but '" + img + "' holds 4 images");
  }
  SUBCASE("label out of range") {
    std::vector<uint8_t> b = slurp(lab);
    b[9] = 10;
    write_bytes(lab, b);
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "train"), "label 10 of image 1 is outside 0..9");
  }
  SUBCASE("missing files and folders") {
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir, "test"), "no t10k-images-idx3-ubyte[.gz] in '" + dir + "'");
    CHECK_ERROR_CONTAINS(load_idx("mnist", dir + "/gone", "test"), "the folder '" + dir + "/gone' does not exist");
    CHECK_ERROR_CONTAINS(load_dataset("mnist", "", "train"), "data set 'mnist' needs a data folder");
  }
}

TEST_CASE("fashion-mnist: the files Debian's dataset-fashion-mnist installs") {
  if (!fs::exists(std::string(kFashionMnistDefaultDir) + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("skipped: " << kFashionMnistDefaultDir << " is absent (apt-get install dataset-fashion-mnist)");
    return;
  }
  Dataset train = load_dataset("fashion-mnist", "", "train");
  Dataset test = load_dataset("fashion-mnist", "", "test");
  CHECK(train.images.shape() == Shape{60000, 1, 28, 28});
  CHECK(test.images.shape() == Shape{10000, 1, 28, 28});
  std::vector<int64_t> counts(10, 0);
  for (int64_t y : to_int_vector(train.labels)) counts[y]++;
  CHECK(counts == std::vector<int64_t>(10, 6000));
  std::vector<float> m, s;
  channel_stats(train.images, m, s);
  CHECK(m[0] == doctest::Approx(0.2860).epsilon(0.002));
  CHECK(s[0] == doctest::Approx(0.3530).epsilon(0.002));
}

// ---------------------------------------------------------------- image folders

TEST_CASE("imagefolder: PNG and BMP files, classes sorted by name, exact pixels") {
  const std::string root = fresh_dir("folder");
  SUBCASE("RGB") {
    write_small_folder(root);
    Dataset d = load_dataset("imagefolder", root, "train");
    check_small_folder(d);
    CHECK(d.name == "imagefolder");
    // Without published statistics the folder's own are used.
    std::vector<float> m, s;
    channel_stats(d.images, m, s);
    CHECK(d.mean == m);
    CHECK(d.std == s);
  }
  SUBCASE("grayscale PNG") {
    for (int label = 0; label < 3; ++label)
      for (int k = 0; k < 3; ++k)
        write_image(root + "/" + std::string(1, (char)('a' + label)) + "/" + std::to_string(k) + ".png", 10 * label + k, 1, 6, 6);
    Dataset d = load_image_folder(root, "test");
    check_small_folder([&] { d.class_names = {"ant", "bee", "cat"}; return d; }(), 1, 6, 6);
  }
  SUBCASE("train/ and test/ subfolders pick the split") {
    write_small_folder(root + "/train");
    write_image(root + "/test/ant/0.png", 0, 3, 5, 4);
    write_image(root + "/test/cat/0.png", 7, 3, 5, 4);
    check_small_folder(load_image_folder(root, "train"));
    Dataset t = load_image_folder(root, "test");
    CHECK(t.size() == 2);
    CHECK(t.class_names == std::vector<std::string>{"ant", "cat"});
    check_pixels(t, 1, 7);
  }
  SUBCASE("JPEG decodes close to the original") {
    write_image(root + "/x/0.jpg", 3, 3, 16, 16);
    write_image(root + "/y/0.jpeg", 4, 3, 16, 16);
    Dataset d = load_image_folder(root, "train");
    REQUIRE(d.size() == 2);
    std::vector<float> px = to_float_vector(d.images.select(0, 0).to(DType::f32));
    double err = 0;
    for (int64_t c = 0, k = 0; c < 3; ++c)
      for (int64_t y = 0; y < 16; ++y)
        for (int64_t x = 0; x < 16; ++x, ++k) err += std::fabs(px[k] - pixel(3, c, y, x));
    CHECK(err / px.size() < 12.0);  // quality-100 JPEG of a sharp ramp: small mean error
  }
}

TEST_CASE("imagefolder: a .tar.gz of the tree, with or without a wrapping folder and split folders") {
  const std::string root = fresh_dir("folder_tar");
  write_small_folder(root + "/tree");
  const std::string a = root + "/plain.tar.gz", b = root + "/wrapped.tgz", c = root + "/split.tar.gz";
  write_gzip(a, make_tar(tree_members(root + "/tree", "")));
  write_gzip(b, make_tar(tree_members(root + "/tree", "images/")));
  std::vector<TarMember> ms = tree_members(root + "/tree", "data/train/");
  ms.push_back({"data/test/ant/0.png", slurp(root + "/tree/ant/1.png")});
  write_gzip(c, make_tar(ms));
  check_small_folder(load_dataset("imagefolder", a, "train"));
  check_small_folder(load_dataset("imagefolder", b, "test"));  // no split folders: the tree for both
  check_small_folder(load_dataset("imagefolder", c, "train"));
  Dataset t = load_dataset("imagefolder", c, "test");
  CHECK(t.size() == 1);
  CHECK(t.class_names == std::vector<std::string>{"ant"});
  check_pixels(t, 0, 1);
  CHECK(t.source == c + ":data/test");
}

TEST_CASE("imagefolder: bad data gives errors naming the file") {
  const std::string root = fresh_dir("folder_bad");
  SUBCASE("missing directory") {
    CHECK_ERROR_CONTAINS(load_image_folder(root + "/none", "train"), "image folder '" + root + "/none' does not exist");
  }
  SUBCASE("no class folders") {
    write_bytes(root + "/readme.txt", {'x'});
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"), "has no class subfolders");
  }
  SUBCASE("empty class folder") {
    write_small_folder(root);
    fs::create_directories(root + "/dog");
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"), "class folder '" + root + "/dog' has no images");
  }
  SUBCASE("empty class folder in an archive") {
    write_small_folder(root + "/tree");
    fs::create_directories(root + "/tree/dog");
    write_gzip(root + "/t.tar.gz", make_tar(tree_members(root + "/tree", "")));
    CHECK_ERROR_CONTAINS(load_image_folder(root + "/t.tar.gz", "train"), "class folder './dog' in '" + root + "/t.tar.gz' has no images");
  }
  SUBCASE("unreadable image") {
    write_small_folder(root);
    write_bytes(root + "/bee/9.png", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"), "cannot decode image '" + root + "/bee/9.png'");
  }
  SUBCASE("truncated image") {
    write_small_folder(root);
    std::vector<uint8_t> b = slurp(root + "/cat/1.png");
    b.resize(b.size() / 2);
    write_bytes(root + "/cat/1.png", b);
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"), "cannot decode image '" + root + "/cat/1.png'");
  }
  SUBCASE("wrong image size") {
    write_small_folder(root);
    write_image(root + "/cat/big.png", 0, 3, 6, 4);
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"),
                             "image '" + root + "/cat/big.png' is 4 x 6 with 3 channel(s), but '" + root + "/ant/0.png' is 4 x 5 with 3");
  }
  SUBCASE("wrong channel count") {
    write_small_folder(root);
    write_image(root + "/ant/gray.png", 0, 1, 5, 4);
    CHECK_ERROR_CONTAINS(load_image_folder(root, "train"), "'" + root + "/ant/gray.png' is 4 x 5 with 1 channel(s)");
  }
  SUBCASE("a split folder is missing") {
    write_small_folder(root + "/train");
    CHECK_ERROR_CONTAINS(load_image_folder(root, "test"), "has a train/ subfolder but no test/ one");
    write_gzip(root + "/t.tar.gz", make_tar(tree_members(root + "/train", "train/")));
    CHECK_ERROR_CONTAINS(load_image_folder(root + "/t.tar.gz", "test"), "has a train/ folder but no test/ one");
  }
  SUBCASE("a file that is not an archive") {
    write_bytes(root + "/x.zip", {'P', 'K'});
    CHECK_ERROR_CONTAINS(load_image_folder(root + "/x.zip", "train"), "is a file but not a .tar, .tar.gz or .tgz archive");
  }
}

// ---------------------------------------------------------------- packing

TEST_CASE("pack_cifar_binary: an image folder packed and read back with the CIFAR-10 reader") {
  const std::string root = fresh_dir("pack");
  for (int label = 0; label < 3; ++label)
    for (int k = 0; k < 2; ++k)
      write_image(root + "/imgs/class" + std::to_string(label) + "/" + std::to_string(k) + ".png", 10 * label + k, 3, 32, 32);
  Dataset d = load_image_folder(root + "/imgs", "train");
  const std::string out = root + "/packed/train.bin";
  pack_cifar_binary(d, out);
  CHECK(fs::file_size(out) == 6 * 3073);
  for (const auto& e : fs::directory_iterator(root + "/packed"))
    CHECK_MESSAGE(e.path().string().find(".tmp") == std::string::npos, "left over " << e.path());
  Dataset r = load_dataset("cifar10", out, "train");
  CHECK(r.size() == 6);
  CHECK(to_int_vector(r.images) == to_int_vector(d.images));
  CHECK(to_int_vector(r.labels) == to_int_vector(d.labels));
  CHECK(r.class_names == std::vector<std::string>{"class0", "class1", "class2"});
  // Overwriting is atomic too and gives the same bytes.
  std::vector<uint8_t> before = slurp(out);
  pack_cifar_binary(d, out);
  CHECK(slurp(out) == before);

  Dataset gray = make_synthetic({.size = 4, .channels = 1, .height = 28, .width = 28}, "train");
  CHECK_ERROR_CONTAINS(pack_cifar_binary(gray, root + "/g.bin"), "holds 3 x 32 x 32 images, but synthetic(seed=0) has (1, 28, 28)");
}

// ---------------------------------------------------------------- synthetic and helpers

TEST_CASE("synthetic: seeded, any shape, balanced, and not trivially separable") {
  SyntheticOptions o;
  o.size = 200;
  o.seed = 5;
  Dataset a = make_synthetic(o, "train"), b = make_synthetic(o, "train");
  CHECK(to_int_vector(a.images) == to_int_vector(b.images));
  CHECK(a.images.shape() == Shape{200, 3, 32, 32});
  Dataset t = make_synthetic(o, "test");
  CHECK(to_int_vector(t.images) != to_int_vector(a.images));
  o.seed = 6;
  CHECK(to_int_vector(make_synthetic(o, "train").images) != to_int_vector(a.images));
  std::vector<int64_t> counts(10, 0);
  for (int64_t y : to_int_vector(a.labels)) counts[y]++;
  CHECK(counts == std::vector<int64_t>(10, 20));
  CHECK(make_synthetic({}, "train").size() == 5000);
  CHECK(make_synthetic({}, "test").size() == 1000);

  Dataset g = load_dataset("synthetic", "", "test", {.synthetic = {.size = 12, .num_classes = 3, .channels = 1, .height = 9, .width = 7}});
  CHECK(g.images.shape() == Shape{12, 1, 9, 7});
  CHECK(g.num_classes() == 3);
  CHECK(g.mean.size() == 1);

  // Not trivial: a nearest-class-mean classifier on raw pixels (fit on train, scored on test)
  // stays far from perfect, because random phases wash the class means out.
  o.seed = 5;
  o.size = 1000;
  Dataset train = make_synthetic(o, "train"), test = make_synthetic(o, "test");
  const int64_t D = 3 * 32 * 32;
  std::vector<double> means(10 * D, 0.0);
  for (int64_t i = 0; i < train.size(); ++i) {
    const uint8_t* p = train.images.data<uint8_t>() + i * D;
    const int64_t y = train.labels.data<int64_t>()[i];
    for (int64_t k = 0; k < D; ++k) means[y * D + k] += p[k] / 100.0;
  }
  int correct = 0;
  for (int64_t i = 0; i < test.size(); ++i) {
    const uint8_t* p = test.images.data<uint8_t>() + i * D;
    int best = 0;
    double best_d = 1e300;
    for (int c = 0; c < 10; ++c) {
      double dist = 0;
      for (int64_t k = 0; k < D; ++k) dist += (p[k] - means[c * D + k]) * (p[k] - means[c * D + k]);
      if (dist < best_d) best_d = dist, best = c;
    }
    correct += best == test.labels.data<int64_t>()[i];
  }
  MESSAGE("synthetic: nearest-class-mean accuracy " << correct / 10.0 << "% (chance 10%)");
  CHECK(correct < 600);
}

TEST_CASE("load_dataset: names, splits and helpers") {
  CHECK_ERROR_CONTAINS(load_dataset("imagenet", "/x", "train"),
                           "unknown data set 'imagenet': known data sets are cifar10, cifar100, mnist, fashion-mnist, imagefolder, synthetic");
  CHECK_ERROR_CONTAINS(load_dataset("synthetic", "", "valid"), "unknown split 'valid'");
  CHECK_ERROR_CONTAINS(load_dataset("cifar10", "", "train"), "data set 'cifar10' needs a data folder");
  Dataset d = load_dataset("synthetic", "", "train", {.synthetic = {.size = 30}});
  CHECK(d.summary() == "synthetic/train: 30 images (3, 32, 32), 10 classes from synthetic(seed=0)");
  Dataset s = subset(d, {4, 2, 2});
  CHECK(to_int_vector(s.labels) == std::vector<int64_t>{4, 2, 2});
  CHECK(to_int_vector(s.images.select(0, 1)) == to_int_vector(d.images.select(0, 2)));
  CHECK_ERROR_CONTAINS(subset(d, {30}), "index 30 is out of range");
  Dataset r = random_subset(d, 10, 1), r2 = random_subset(d, 10, 1);
  CHECK(to_int_vector(r.images) == to_int_vector(r2.images));
  CHECK(r.size() == 10);
  std::vector<float> m, sd;
  channel_stats(from_vector(std::vector<uint8_t>{0, 255, 51, 51}, {1, 2, 1, 2}), m, sd);
  CHECK(m[0] == doctest::Approx(0.5));
  CHECK(m[1] == doctest::Approx(0.2));
  CHECK(sd[0] == doctest::Approx(0.5));
  CHECK(sd[1] == 1.0f);  // constant channel: std 1 so normalising does not divide by 0
}
