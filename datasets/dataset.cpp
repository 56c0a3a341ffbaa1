// dataset.cpp: the load_dataset factory and the helpers shared by every data set.
#include "datasets/dataset.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "datasets/common.h"
#include "engine/generator.h"

namespace kd::data {

namespace detail {

void check_split(const std::string& split, const std::string& who) {
  KD_CHECK(split == "train" || split == "test", "{}: unknown split '{}' (use \"train\" or \"test\")", who, split);
}

Dataset make_dataset(const std::string& name, const std::string& split, const std::string& source,
                     std::vector<uint8_t>&& pixels, const std::vector<int64_t>& labels, int64_t c, int64_t h,
                     int64_t w) {
  const int64_t n = (int64_t)labels.size();
  KD_CHECK((int64_t)pixels.size() == n * c * h * w, "{}: {} pixel bytes for {} images of ({}, {}, {})", source,
           pixels.size(), n, c, h, w);
  Dataset d;
  d.name = name;
  d.split = split;
  d.source = source;
  d.images = empty({n, c, h, w}, DType::u8);  // (N, C, H, W)
  if (!pixels.empty()) std::memcpy(d.images.data<uint8_t>(), pixels.data(), pixels.size());
  d.labels = empty({n}, DType::i64);  // (N)
  if (n > 0) std::memcpy(d.labels.data<int64_t>(), labels.data(), (size_t)n * sizeof(int64_t));
  pixels.clear();
  pixels.shrink_to_fit();
  return d;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string basename_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

}  // namespace detail

std::string Dataset::summary() const {
  if (!images.defined()) return fmt::format("{}/{}: empty", name, split);
  std::string s = fmt::format("{}/{}: {} images ({}, {}, {}), {} classes from {}", name, split, size(), channels(),
                              height(), width(), num_classes(), source);
  if (!modality.is_rgb()) s += fmt::format(", seen as {} ({} channels)", modality.str(), input_channels());
  return s;
}

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> names = {"cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder",
                                                 "synthetic"};
  return names;
}

Dataset load_dataset(const std::string& name, const std::string& data_dir, const std::string& split,
                     const LoadOptions& options) {
  detail::check_split(split, "load_dataset(" + name + ")");
  auto need_dir = [&](const char* what) {
    KD_CHECK(!data_dir.empty(), "data set '{}' needs a data folder: pass {}", name, what);
  };
  Dataset d;
  if (name == "cifar10") {
    need_dir("the folder holding cifar-10-batches-bin/ (or the .bin files), or cifar-10-binary.tar.gz itself");
    d = load_cifar10(data_dir, split);
  } else if (name == "cifar100") {
    need_dir("the folder holding cifar-100-binary/ (or train.bin and test.bin), or cifar-100-binary.tar.gz itself");
    d = load_cifar100(data_dir, split, options.coarse_labels);
  } else if (name == "mnist") {
    need_dir("the folder holding train-images-idx3-ubyte.gz and the other three IDX files");
    d = load_idx(name, data_dir, split);
  } else if (name == "fashion-mnist") {
    d = load_idx(name, data_dir.empty() ? std::string(kFashionMnistDefaultDir) : data_dir, split);
  } else if (name == "imagefolder") {
    need_dir("a folder of <class>/<image> files (or <split>/<class>/<image>), or a .tar.gz of one");
    d = load_image_folder(data_dir, split);
  } else if (name == "synthetic") {
    d = make_synthetic(options.synthetic, split);
  } else {
    throw Error(fmt::format("unknown data set '{}': known data sets are {}", name, fmt::join(dataset_names(), ", ")));
  }
  validate(d);
  return d;
}

Dataset subset(const Dataset& dataset, const std::vector<int64_t>& indices) {
  const int64_t n = dataset.size();
  const int64_t per = n > 0 ? dataset.channels() * dataset.height() * dataset.width() : 0;
  Dataset out = dataset;
  const int64_t m = (int64_t)indices.size();
  out.images = empty({m, dataset.channels(), dataset.height(), dataset.width()}, DType::u8);  // (M, C, H, W)
  out.labels = empty({m}, DType::i64);
  if (dataset.coarse_labels.defined()) out.coarse_labels = empty({m}, DType::i64);
  const int64_t oc = dataset.pixel_offset.defined() ? dataset.pixel_offset.size(1) : 0;
  if (oc > 0) out.pixel_offset = empty({m, oc});  // (M, C)
  const uint8_t* src = dataset.images.data<uint8_t>();
  uint8_t* dst = out.images.data<uint8_t>();
  for (int64_t i = 0; i < m; ++i) {
    const int64_t k = indices[i];
    KD_CHECK(k >= 0 && k < n, "subset: index {} is out of range for {} ({} images)", k, dataset.source, n);
    std::memcpy(dst + i * per, src + k * per, (size_t)per);
    out.labels.data<int64_t>()[i] = dataset.labels.data<int64_t>()[k];
    if (dataset.coarse_labels.defined()) out.coarse_labels.data<int64_t>()[i] = dataset.coarse_labels.data<int64_t>()[k];
    if (oc > 0) std::memcpy(out.pixel_offset.data<float>() + i * oc, dataset.offset_of(k), sizeof(float) * (size_t)oc);
  }
  return out;
}

Dataset random_subset(const Dataset& dataset, int64_t n, uint64_t seed) {
  KD_CHECK(n >= 0 && n <= dataset.size(), "random_subset: cannot draw {} of the {} images of {}", n, dataset.size(),
           dataset.source);
  // A partial Fisher-Yates shuffle: the first n positions end up a uniform draw without replacement.
  std::vector<int64_t> order(dataset.size());
  std::iota(order.begin(), order.end(), 0);
  Generator gen(seed);
  gen.partial_shuffle(order, n);
  order.resize(n);
  return subset(dataset, order);
}

void channel_stats(const Tensor& images, std::vector<float>& mean, std::vector<float>& std) {
  KD_CHECK(images.dim() == 4 && images.dtype() == DType::u8 && images.is_contiguous(),
           "channel_stats: expected contiguous uint8 images (N, C, H, W), got {} {}", dtype_name(images.dtype()),
           shape_str(images.shape()));
  const int64_t n = images.size(0), c = images.size(1), hw = images.size(2) * images.size(3);
  mean.assign(c, 0.0f);
  std.assign(c, 1.0f);
  if (n == 0 || hw == 0) return;
  const uint8_t* p = images.data<uint8_t>();
  for (int64_t ch = 0; ch < c; ++ch) {
    // Integer sums are exact; the variance comes from E[x^2] - E[x]^2 in double.
    uint64_t s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* q = p + (i * c + ch) * hw;
      for (int64_t k = 0; k < hw; ++k) {
        s += q[k];
        s2 += (uint64_t)q[k] * q[k];
      }
    }
    const double count = (double)n * (double)hw;
    const double m = (double)s / count / 255.0;
    const double var = std::max(0.0, (double)s2 / count / (255.0 * 255.0) - m * m);
    mean[ch] = (float)m;
    std[ch] = var > 0 ? (float)std::sqrt(var) : 1.0f;
  }
}

void validate(const Dataset& d) {
  const std::string& src = d.source;
  KD_CHECK(d.images.defined() && d.labels.defined(), "{}: the data set has no images or no labels", src);
  KD_CHECK(d.images.dim() == 4 && d.images.dtype() == DType::u8 && d.images.is_contiguous(),
           "{}: images must be contiguous uint8 (N, C, H, W), got {} {}", src, dtype_name(d.images.dtype()),
           shape_str(d.images.shape()));
  KD_CHECK(d.labels.dim() == 1 && d.labels.dtype() == DType::i64 && d.labels.size(0) == d.images.size(0),
           "{}: labels must be int64 (N) with N = {}, got {} {}", src, d.images.size(0), dtype_name(d.labels.dtype()),
           shape_str(d.labels.shape()));
  KD_CHECK(d.size() > 0, "{}: the data set is empty", src);
  KD_CHECK((int64_t)d.mean.size() == d.channels() && (int64_t)d.std.size() == d.channels(),
           "{}: {} channels but {} means and {} standard deviations", src, d.channels(), d.mean.size(), d.std.size());
  KD_CHECK(!d.pixel_offset.defined() || (d.pixel_offset.dim() == 2 && d.pixel_offset.size(0) == d.size() &&
                                         d.pixel_offset.size(1) == d.channels() && d.pixel_offset.dtype() == DType::f32 &&
                                         d.pixel_offset.is_contiguous()),
           "{}: pixel offsets must be float32 (N, C) = ({}, {})", src, d.size(), d.channels());
  const int64_t* y = d.labels.data<int64_t>();
  for (int64_t i = 0; i < d.size(); ++i)
    KD_CHECK(y[i] >= 0 && y[i] < d.num_classes(), "{}: image {} has label {}, outside [0, {})", src, i, y[i],
             d.num_classes());
}

}  // namespace kd::data
