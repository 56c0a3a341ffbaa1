// dataset.h: an image-classification data set held in memory, and the loaders that fill one.
//
// A Dataset is deliberately plain: all images in one uint8 tensor (N, C, H, W), all labels in
// one int64 tensor (N), the class names, and the per-channel mean/std used to normalise it. The
// small data sets kdlab trains on (CIFAR: 50,000 x 3 x 32 x 32 = 150 MB) fit in memory, and a
// single tensor makes batching a memcpy. Transforms (transforms.h) and batching (loader.h) work
// on top of it.
//
// Sources (load_dataset's names):
//   cifar10, cifar100   the official binary release: data_batch_{1..5}.bin + test_batch.bin, or
//                       train.bin + test.bin (CIFAR-100); a folder holding them, the folder that
//                       holds cifar-10-batches-bin/ / cifar-100-binary/, the .tar.gz itself, or
//                       a single packed .bin file (pack_cifar_binary)
//   mnist, fashion-mnist  IDX files (train-images-idx3-ubyte[.gz], ...), gzip or plain
//   imagefolder         root/<class>/*.{jpg,jpeg,png,bmp} (or root/<split>/<class>/...), a folder
//                       or a .tar.gz of one, decoded with stb_image
//   synthetic           procedurally drawn patterns, seeded (no files needed)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/modality.h"
#include "engine/tensor.h"

namespace kd::data {

struct Dataset {
  std::string name;    // "cifar10", "imagefolder", ...
  std::string split;   // "train" or "test"
  std::string source;  // the file or folder it was read from (for messages and run records)
  Tensor images;       // (N, C, H, W) uint8, contiguous
  Tensor labels;       // (N) int64, in [0, num_classes())
  Tensor coarse_labels;  // (N) int64, CIFAR-100's 20 super-classes; undefined for other data sets
  std::vector<std::string> class_names;         // label k is class_names[k]
  std::vector<std::string> coarse_class_names;  // CIFAR-100 only
  std::vector<float> mean;  // (C) per-channel mean of pixels / 255, the normalisation default
  std::vector<float> std;   // (C) per-channel standard deviation of pixels / 255
  // What a model sees of these images (modality.h): rgb = the stored channels. A handle made by
  // with_modality shares the images; transforms apply the modality and its normalisation.
  Modality modality;
  // (N, C) float32 or undefined: a constant added to every pixel of image i's channel c before
  // augmentation, in pixel units (the planted chroma cue of the MFH control, plant_chroma_cue).
  Tensor pixel_offset;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
  int64_t num_classes() const { return (int64_t)class_names.size(); }
  // The channels a model takes: those of the modality made from the stored ones.
  int64_t input_channels() const { return modality_channels(modality, channels()); }
  // Image i's pixel offset (C floats), or nullptr when there is none.
  const float* offset_of(int64_t i) const {
    return pixel_offset.defined() ? pixel_offset.data<float>() + i * pixel_offset.size(1) : nullptr;
  }
  // One line for logs: "cifar10/train: 50000 images (3, 32, 32), 10 classes from <source>"
  std::string summary() const;
};

// Names load_dataset accepts, in the order the help text lists them.
const std::vector<std::string>& dataset_names();

// The folder fashion-mnist is read from when no folder is given (Debian's dataset-fashion-mnist).
inline constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// Options of the synthetic data set (see make_synthetic).
struct SyntheticOptions {
  int64_t size = 0;  // number of images; 0: 5000 for "train", 1000 for "test"
  int64_t num_classes = 10;
  int64_t channels = 3;
  int64_t height = 32;
  int64_t width = 32;
  uint64_t seed = 0;  // picks the class patterns and, with the split, the samples
  float noise = 0.08f;  // standard deviation of the per-pixel Gaussian noise, in [0, 1] pixel units
};

struct LoadOptions {
  bool coarse_labels = false;  // cifar100: use the 20 super-classes as `labels`
  SyntheticOptions synthetic;  // for "synthetic"
};

// Loads split "train" or "test" of data set `name` from `data_dir` (a folder, an archive or a
// file, as listed at the top of this header; "" means the default, which only fashion-mnist and
// synthetic have). Unknown names are an error that lists the known ones.
Dataset load_dataset(const std::string& name, const std::string& data_dir, const std::string& split,
                     const LoadOptions& options = {});

// ---- the individual loaders (load_dataset dispatches to these)
Dataset load_cifar10(const std::string& path, const std::string& split);
Dataset load_cifar100(const std::string& path, const std::string& split, bool coarse_labels = false);
// MNIST and Fashion-MNIST differ only in their class names and normalisation; `name` picks them.
Dataset load_idx(const std::string& name, const std::string& dir, const std::string& split);
Dataset load_image_folder(const std::string& path, const std::string& split);
// Procedural classes: each class is a striped Gaussian blob with a class-specific orientation,
// stripe frequency and colour; samples vary in phase, position, size, contrast, background and
// noise. Same options and split -> the same images, bit for bit.
Dataset make_synthetic(const SyntheticOptions& options, const std::string& split);

// Writes `dataset` in the CIFAR-10 binary format (records of 1 label byte + the 3072 bytes of
// the R, G and B planes), atomically, plus its class names one per line in `out_path`.meta.txt
// (the form of the official batches.meta.txt). load_cifar10(out_path) reads it back. Needs
// 3 x 32 x 32 images and fewer than 256 classes. CIFAR-100 (a data set with coarse labels) is
// written in its own record layout (coarse byte, fine byte, pixels), which load_cifar100 reads.
void pack_cifar_binary(const Dataset& dataset, const std::string& out_path);

// ---- helpers
// The rows `indices` of a data set (a copy), e.g. a class-balanced or random subset.
Dataset subset(const Dataset& dataset, const std::vector<int64_t>& indices);
// n examples drawn without replacement with a Generator seeded by `seed`, in the drawn order.
Dataset random_subset(const Dataset& dataset, int64_t n, uint64_t seed);
// Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1] pixel units.
void channel_stats(const Tensor& images, std::vector<float>& mean, std::vector<float>& std);

// Checks the invariants every loader guarantees (shapes, dtypes, labels in range); the error
// names `dataset.source`. load_dataset calls it on everything it returns.
void validate(const Dataset& dataset);

}  // namespace kd::data
