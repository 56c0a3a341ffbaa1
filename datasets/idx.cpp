// idx.cpp: MNIST and Fashion-MNIST in the IDX format (gzip-compressed or plain).
//
// IDX (http://yann.lecun.com/exdb/mnist/): big-endian 32-bit header fields, then raw bytes.
//   images: magic 2051 (0x00000803), count, rows, cols, then count * rows * cols pixels (row-major)
//   labels: magic 2049 (0x00000801), count, then count label bytes
// File names: {train,t10k}-{images-idx3,labels-idx1}-ubyte, optionally ".gz" (Debian's
// dataset-fashion-mnist installs the four .gz files under /usr/share/datasets/fashion-mnist).
#include <filesystem>

#include "datasets/archive.h"
#include "datasets/common.h"
#include "datasets/dataset.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kImageMagic = 2051, kLabelMagic = 2049;

uint32_t big_endian_u32(const uint8_t* p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

// The file `stem` (e.g. "train-images-idx3-ubyte") in dir or dir/raw, gzip-compressed or not;
// also the "train-images.idx3-ubyte" spelling some copies use.
std::string find_idx_file(const std::string& dir, const std::string& stem, const std::string& who) {
  std::string dotted = stem;
  const size_t dash = dotted.find("-idx");
  if (dash != std::string::npos) dotted[dash] = '.';
  std::error_code ec;
  for (const std::string& sub : {std::string(""), std::string("raw")}) {
    for (const std::string& name : {stem + ".gz", stem, dotted + ".gz", dotted}) {
      fs::path p = sub.empty() ? fs::path(dir) / name : fs::path(dir) / sub / name;
      if (fs::is_regular_file(p, ec)) return p.string();
    }
  }
  throw Error(fmt::format("{}: no {}[.gz] in '{}' (nor in '{}/raw'); expected the four IDX files "
                          "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                          "t10k-labels-idx1-ubyte, gzip-compressed or plain",
                          who, stem, dir, dir));
}

}  // namespace

Dataset load_idx(const std::string& name, const std::string& dir, const std::string& split) {
  const std::string who = "load_idx(" + name + ")";
  detail::check_split(split, who);
  KD_CHECK(name == "mnist" || name == "fashion-mnist", "{}: the IDX loader knows 'mnist' and 'fashion-mnist'", who);
  std::error_code ec;
  KD_CHECK(fs::is_directory(dir, ec), "{}: the folder '{}' does not exist{}", who, dir,
           name == "fashion-mnist" ? " (install it with: apt-get install dataset-fashion-mnist)" : "");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string image_file = find_idx_file(dir, prefix + "-images-idx3-ubyte", who);
  const std::string label_file = find_idx_file(dir, prefix + "-labels-idx1-ubyte", who);

  // ---- images: magic, count, rows, cols, pixels
  std::vector<uint8_t> img = read_file_bytes(image_file);
  KD_CHECK(img.size() >= 16, "'{}' is truncated: {} bytes, shorter than the 16-byte IDX image header", image_file,
           img.size());
  const uint32_t img_magic = big_endian_u32(img.data());
  KD_CHECK(img_magic == kImageMagic, "'{}' is not an IDX image file: magic number {} (expected {}){}", image_file,
           img_magic, kImageMagic, img_magic == kLabelMagic ? "; this is a label file" : "");
  const int64_t n = big_endian_u32(img.data() + 4);
  const int64_t h = big_endian_u32(img.data() + 8), w = big_endian_u32(img.data() + 12);
  KD_CHECK(h > 0 && w > 0 && h <= 4096 && w <= 4096, "'{}': implausible image size {} x {} in the IDX header",
           image_file, h, w);
  const int64_t want = 16 + n * h * w;
  KD_CHECK((int64_t)img.size() == want,
           "'{}' has {} bytes, but its header announces {} images of {} x {} ({} bytes with the header): the file is "
           "{}",
           image_file, img.size(), n, h, w, want, (int64_t)img.size() < want ? "truncated" : "too long (corrupt)");

  // ---- labels: magic, count, labels
  std::vector<uint8_t> lab = read_file_bytes(label_file);
  KD_CHECK(lab.size() >= 8, "'{}' is truncated: {} bytes, shorter than the 8-byte IDX label header", label_file,
           lab.size());
  const uint32_t lab_magic = big_endian_u32(lab.data());
  KD_CHECK(lab_magic == kLabelMagic, "'{}' is not an IDX label file: magic number {} (expected {}){}", label_file,
           lab_magic, kLabelMagic, lab_magic == kImageMagic ? "; this is an image file" : "");
  const int64_t nl = big_endian_u32(lab.data() + 4);
  KD_CHECK(nl == n, "'{}' holds {} labels but '{}' holds {} images: the two files do not belong together", label_file,
           nl, image_file, n);
  KD_CHECK((int64_t)lab.size() == 8 + n, "'{}' has {} bytes, but its header announces {} labels ({} bytes): the file "
           "is {}", label_file, lab.size(), n, 8 + n, (int64_t)lab.size() < 8 + n ? "truncated" : "too long (corrupt)");
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = lab[8 + i];
    KD_CHECK(labels[i] < 10, "'{}': label {} of image {} is outside 0..9", label_file, labels[i], i);
  }

  img.erase(img.begin(), img.begin() + 16);
  Dataset d = detail::make_dataset(name, split, image_file, std::move(img), labels, 1, h, w);
  if (name == "mnist") {
    d.class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    d.mean = {0.1307f};
    d.std = {0.3081f};
  } else {
    d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    d.mean = {0.2860f};
    d.std = {0.3530f};
  }
  return d;
}

}  // namespace kd::data
