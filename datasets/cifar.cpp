// cifar.cpp: CIFAR-10 / CIFAR-100 in the official binary format, and writing that format.
//
// The binary release (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"):
//   CIFAR-10:  cifar-10-batches-bin/data_batch_{1..5}.bin (10,000 records each), test_batch.bin
//              record = 1 label byte (0..9) + 3072 pixel bytes
//   CIFAR-100: cifar-100-binary/train.bin (50,000 records), test.bin (10,000)
//              record = 1 coarse label byte (0..19) + 1 fine label byte (0..99) + 3072 pixel bytes
// The 3072 pixel bytes are the 1024 red values of the 32 x 32 image in row-major order, then
// the 1024 green, then the 1024 blue: exactly the (C, H, W) layout of one image.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "datasets/archive.h"
#include "datasets/common.h"
#include "datasets/dataset.h"
#include "datasets/normalization.h"
#include "engine/atomic_file.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kC = 3, kH = 32, kW = 32, kPixels = kC * kH * kW;  // 3072

const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                  "dog",      "frog",       "horse", "ship", "truck"};

const std::vector<std::string> kCifar100Fine = {
    "apple",        "aquarium_fish", "baby",        "bear",       "beaver",     "bed",          "bee",
    "beetle",       "bicycle",       "bottle",      "bowl",       "boy",        "bridge",       "bus",
    "butterfly",    "camel",         "can",         "castle",     "caterpillar", "cattle",      "chair",
    "chimpanzee",   "clock",         "cloud",       "cockroach",  "couch",      "crab",         "crocodile",
    "cup",          "dinosaur",      "dolphin",     "elephant",   "flatfish",   "forest",       "fox",
    "girl",         "hamster",       "house",       "kangaroo",   "keyboard",   "lamp",         "lawn_mower",
    "leopard",      "lion",          "lizard",      "lobster",    "man",        "maple_tree",   "motorcycle",
    "mountain",     "mouse",         "mushroom",    "oak_tree",   "orange",     "orchid",       "otter",
    "palm_tree",    "pear",          "pickup_truck", "pine_tree", "plain",      "plate",        "poppy",
    "porcupine",    "possum",        "rabbit",      "raccoon",    "ray",        "road",         "rocket",
    "rose",         "sea",           "seal",        "shark",      "shrew",      "skunk",        "skyscraper",
    "snail",        "snake",         "spider",      "squirrel",   "streetcar",  "sunflower",    "sweet_pepper",
    "table",        "tank",          "telephone",   "television", "tiger",      "tractor",      "train",
    "trout",        "tulip",         "turtle",      "wardrobe",   "whale",      "willow_tree",  "wolf",
    "woman",        "worm"};

const std::vector<std::string> kCifar100Coarse = {"aquatic_mammals",
                                                  "fish",
                                                  "flowers",
                                                  "food_containers",
                                                  "fruit_and_vegetables",
                                                  "household_electrical_devices",
                                                  "household_furniture",
                                                  "insects",
                                                  "large_carnivores",
                                                  "large_man-made_outdoor_things",
                                                  "large_natural_outdoor_scenes",
                                                  "large_omnivores_and_herbivores",
                                                  "medium_mammals",
                                                  "non-insect_invertebrates",
                                                  "people",
                                                  "reptiles",
                                                  "small_mammals",
                                                  "trees",
                                                  "vehicles_1",
                                                  "vehicles_2"};

// The layout of one CIFAR variant.
struct Format {
  const char* name;            // "cifar10" / "cifar100"
  int64_t label_bytes;         // 1 or 2
  int64_t num_fine, num_coarse;  // label ranges (num_coarse 0: no coarse label)
  const char* folder;          // the folder inside the official archive
  const char* archive;         // the official archive's file name
  std::vector<std::string> train_files, test_files;
};

const Format& cifar10_format() {
  static const Format f{"cifar10", 1, 10, 0, "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                        {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                         "data_batch_5.bin"},
                        {"test_batch.bin"}};
  return f;
}

const Format& cifar100_format() {
  static const Format f{"cifar100", 2, 100, 20, "cifar-100-binary", "cifar-100-binary.tar.gz", {"train.bin"}, {"test.bin"}};
  return f;
}

// Parsed records of one or more files, appended.
struct Records {
  std::vector<uint8_t> pixels;
  std::vector<int64_t> fine, coarse;
};

// Checks and appends the records in `bytes` (the content of `file`).
void parse_records(const Format& fmt_, const std::vector<uint8_t>& bytes, const std::string& file, Records& out) {
  const int64_t rec = fmt_.label_bytes + kPixels;
  const int64_t size = (int64_t)bytes.size();
  if (size % rec != 0 || size == 0) {
    const int64_t other = fmt_.label_bytes == 1 ? rec + 1 : rec - 1;
    std::string hint = (size > 0 && size % other == 0)
                           ? fmt::format(" It divides into {}-byte records: is this a {} file? (use data set '{}')",
                                         other, fmt_.label_bytes == 1 ? "CIFAR-100" : "CIFAR-10",
                                         fmt_.label_bytes == 1 ? "cifar100" : "cifar10")
                           : std::string(" The file may be truncated or not in the CIFAR binary format.");
    throw Error(fmt::format("'{}' has {} bytes, not a positive multiple of the {}-byte {} record ({} label byte{} + "
                            "3072 pixel bytes).{}",
                            file, size, rec, fmt_.name, fmt_.label_bytes, fmt_.label_bytes == 1 ? "" : "s", hint));
  }
  const int64_t n = size / rec;
  const size_t start = out.pixels.size();
  out.pixels.resize(start + (size_t)(n * kPixels));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* r = bytes.data() + i * rec;
    const int64_t fine = r[fmt_.label_bytes - 1];
    KD_CHECK(fine < fmt_.num_fine, "'{}': record {} has label {}, but {} has {} classes (wrong file?)", file, i, fine,
             fmt_.name, fmt_.num_fine);
    if (fmt_.num_coarse > 0) {
      const int64_t coarse = r[0];
      KD_CHECK(coarse < fmt_.num_coarse, "'{}': record {} has coarse label {}, but {} has {} super-classes", file, i,
               coarse, fmt_.name, fmt_.num_coarse);
      out.coarse.push_back(coarse);
    }
    out.fine.push_back(fine);
    std::memcpy(out.pixels.data() + start + (size_t)(i * kPixels), r + fmt_.label_bytes, kPixels);
  }
}

// Class names from a text file with one name per line (batches.meta.txt, fine_label_names.txt).
std::vector<std::string> read_names(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> names;
  std::string line;
  while (std::getline(f, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

// Where the binary files of one split are: a folder (the given one or the archive's inner
// folder under it), an archive, or a single .bin file.
Dataset load_cifar(const Format& fmt_, const std::string& path, const std::string& split, bool coarse_as_labels) {
  detail::check_split(split, std::string("load_") + fmt_.name);
  std::error_code ec;
  KD_CHECK(fs::exists(path, ec), "{}: '{}' does not exist (expected a folder holding {}/ or the .bin files, or the "
           "official .tar.gz archive)", fmt_.name, path, fmt_.folder);
  const std::vector<std::string>& wanted = split == "train" ? fmt_.train_files : fmt_.test_files;
  Records recs;
  std::string source = path;
  std::vector<std::string> names;  // class names found beside the data, if any

  if (fs::is_regular_file(path, ec) && is_tar_path(path)) {
    // The official archive: pick the wanted members by their file name, in the order listed.
    std::map<std::string, std::vector<uint8_t>> found;
    read_tar(
        path,
        [&](const std::string& name) {
          const std::string base = detail::basename_of(name);
          return std::find(wanted.begin(), wanted.end(), base) != wanted.end();
        },
        [&](TarEntry& e) {
          if (e.is_file) {
            const std::string base = detail::basename_of(e.name);
            if (std::find(wanted.begin(), wanted.end(), base) != wanted.end()) found[base] = std::move(e.data);
          }
        });
    for (const std::string& w : wanted) {
      auto it = found.find(w);
      KD_CHECK(it != found.end(), "{}: the archive '{}' has no member {} (expected the official {} layout: {}/{})",
               fmt_.name, path, w, fmt_.name, fmt_.folder, fmt::join(wanted, ", "));
      parse_records(fmt_, it->second, path + ":" + w, recs);
    }
  } else if (fs::is_regular_file(path, ec)) {
    // A single binary file (e.g. written by pack_cifar_binary): whatever split was asked for.
    parse_records(fmt_, read_file_bytes(path), path, recs);
    if (fs::exists(path + ".meta.txt", ec)) names = read_names(path + ".meta.txt");
  } else {
    std::string dir = path;
    if (!fs::exists(fs::path(dir) / wanted[0], ec)) {
      if (fs::is_directory(fs::path(dir) / fmt_.folder, ec)) {
        dir = (fs::path(dir) / fmt_.folder).string();
      } else if (fs::is_regular_file(fs::path(dir) / fmt_.archive, ec)) {
        // Downloaded but not unpacked: read the archive itself.
        return load_cifar(fmt_, (fs::path(dir) / fmt_.archive).string(), split, coarse_as_labels);
      }
    }
    for (const std::string& w : wanted) {
      const std::string file = (fs::path(dir) / w).string();
      KD_CHECK(fs::exists(file, ec), "{}: missing '{}' (the {} split needs {} in '{}' or in '{}/{}')", fmt_.name, file,
               split, fmt::join(wanted, ", "), path, path, fmt_.folder);
      parse_records(fmt_, read_file_bytes(file), file, recs);
    }
    source = dir;
    if (fmt_.num_coarse == 0 && fs::exists(fs::path(dir) / "batches.meta.txt", ec))
      names = read_names((fs::path(dir) / "batches.meta.txt").string());
  }

  Dataset d = detail::make_dataset(fmt_.name, split, source, std::move(recs.pixels),
                                   coarse_as_labels ? recs.coarse : recs.fine, kC, kH, kW);
  if (fmt_.num_coarse > 0) {
    d.class_names = coarse_as_labels ? kCifar100Coarse : kCifar100Fine;
    d.coarse_class_names = kCifar100Coarse;
    d.coarse_labels = from_vector(recs.coarse, {(int64_t)recs.coarse.size()});  // (N)
    d.mean = kCifar100Mean;
    d.std = kCifar100Std;
  } else {
    d.class_names = kCifar10Classes;
    // Names shipped beside the data win (a packed image folder keeps its own classes).
    if (!names.empty()) d.class_names = names;
    int64_t max_label = -1;
    for (int64_t y : recs.fine) max_label = std::max(max_label, y);
    KD_CHECK(max_label < (int64_t)d.class_names.size(), "{}: label {} but only {} class names", source, max_label,
             d.class_names.size());
    d.mean = kCifar10Mean;
    d.std = kCifar10Std;
  }
  return d;
}

}  // namespace

Dataset load_cifar10(const std::string& path, const std::string& split) {
  return load_cifar(cifar10_format(), path, split, false);
}

Dataset load_cifar100(const std::string& path, const std::string& split, bool coarse_labels) {
  return load_cifar(cifar100_format(), path, split, coarse_labels);
}

void pack_cifar_binary(const Dataset& dataset, const std::string& out_path) {
  validate(dataset);
  KD_CHECK(dataset.channels() == kC && dataset.height() == kH && dataset.width() == kW,
           "pack_cifar_binary: the CIFAR binary format holds 3 x 32 x 32 images, but {} has ({}, {}, {})",
           dataset.source, dataset.channels(), dataset.height(), dataset.width());
  KD_CHECK(dataset.num_classes() <= 256, "pack_cifar_binary: {} has {} classes; one label byte holds at most 256",
           dataset.source, dataset.num_classes());
  // CIFAR-100 (coarse labels present) keeps its own record: coarse byte, fine byte, pixels.
  const bool cifar100 = dataset.coarse_labels.defined();
  KD_CHECK(!cifar100 || dataset.num_classes() == 100,
           "pack_cifar_binary: {} holds CIFAR-100's super-classes as its labels; pack the data set loaded with its "
           "100 fine labels (the coarse ones are kept beside them)", dataset.source);
  const int64_t n = dataset.size(), label_bytes = cifar100 ? 2 : 1, record = label_bytes + kPixels;
  std::vector<uint8_t> bytes((size_t)(n * record));
  const uint8_t* px = dataset.images.data<uint8_t>();  // (N, 3, 32, 32): already R, G, B planes
  const int64_t* y = dataset.labels.data<int64_t>();
  const Tensor coarse = cifar100 ? dataset.coarse_labels.contiguous() : Tensor();
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* r = bytes.data() + i * record;
    if (cifar100) r[0] = (uint8_t)coarse.data<int64_t>()[i];
    r[label_bytes - 1] = (uint8_t)y[i];
    std::memcpy(r + label_bytes, px + i * kPixels, kPixels);
  }
  std::string names;
  for (const std::string& s : dataset.class_names) names += s + "\n";
  // The folder of --out is made (as the packer always did); then the names first: a reader that
  // finds the data file also finds its names.
  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    KD_CHECK(!ec, "cannot create the folder '{}' for '{}': {}", parent.string(), out_path, ec.message());
  }
  write_file_atomic(out_path + ".meta.txt", std::vector<uint8_t>(names.begin(), names.end()));
  write_file_atomic(out_path, bytes);
}

}  // namespace kd::data
