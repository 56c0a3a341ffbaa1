// synthetic.cpp: a procedurally drawn data set, for tests and for runs without downloaded data.
//
// Class k is a pattern: stripes at orientation theta_k with frequency f_k (cycles per image),
// tinted with colour c_k, seen through a Gaussian window ("a striped blob"). Every sample draws
// its own orientation jitter, frequency jitter, phase, window position and size, contrast,
// background colour and per-pixel noise, and mixes a random tint into the class colour. So no
// single pixel statistic separates the classes (the class-mean images are nearly flat, random
// phases cancel) but a small CNN with oriented filters learns them well.
//
//   value_c(y, x) = bg_c + amp * window(y, x) * sin(2 pi f (u cos theta + v sin theta) + phase) * tint_c
//                   + noise * N(0, 1),         u = x / W - 1/2, v = y / H - 1/2
//   window(y, x)  = exp(-((u - cx)^2 + (v - cy)^2) / (2 s^2)),   pixel = round(255 clamp(value, 0, 1))
#include <cmath>

#include "datasets/common.h"
#include "datasets/dataset.h"
#include "engine/generator.h"

namespace kd::data {

namespace {

struct ClassPattern {
  double theta, freq;
  std::vector<double> colour;  // (C) in [-1, 1], largest |entry| = 1
};

}  // namespace

Dataset make_synthetic(const SyntheticOptions& o, const std::string& split) {
  detail::check_split(split, "make_synthetic");
  KD_CHECK(o.num_classes >= 2 && o.num_classes <= 1000, "synthetic: num_classes must be in [2, 1000], got {}",
           o.num_classes);
  KD_CHECK(o.channels >= 1 && o.height >= 4 && o.width >= 4,
           "synthetic: images must have at least 1 channel and be at least 4 x 4, got ({}, {}, {})", o.channels,
           o.height, o.width);
  KD_CHECK(o.size >= 0, "synthetic: size must be >= 0, got {}", o.size);
  const int64_t n = o.size > 0 ? o.size : (split == "train" ? 5000 : 1000);
  const int64_t K = o.num_classes, C = o.channels, H = o.height, W = o.width;
  const double pi = M_PI;

  // The classes depend on the seed only, so train and test share them.
  Generator class_gen(o.seed);
  std::vector<ClassPattern> classes(K);
  for (int64_t k = 0; k < K; ++k) {
    ClassPattern& p = classes[k];
    p.theta = pi * ((double)k + 0.25 * class_gen.uniform_double()) / (double)K;  // distinct orientations
    // Frequencies spread over [1.5, 4.5) by the golden ratio, so neighbouring orientations differ in frequency.
    const double golden = std::fmod((double)k * 0.6180339887498949, 1.0);
    p.freq = 1.5 + 3.0 * golden;
    p.colour.resize(C);
    double big = 0;
    for (int64_t c = 0; c < C; ++c) {
      p.colour[c] = 2.0 * class_gen.uniform_double() - 1.0;
      big = std::max(big, std::fabs(p.colour[c]));
    }
    for (double& v : p.colour) v = (C == 1) ? 1.0 : v / std::max(big, 1e-6);
  }

  // Samples: a different stream per split.
  Generator gen(o.seed * 0x9E3779B97F4A7C15ull + (split == "train" ? 1 : 2));
  std::vector<uint8_t> pixels((size_t)(n * C * H * W));  // (N, C, H, W)
  std::vector<int64_t> labels(n);
  std::vector<double> tint(C), bg(C);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i % K;  // balanced classes; the loader shuffles
    labels[i] = k;
    const ClassPattern& p = classes[k];
    const double theta = p.theta + (gen.uniform_double() - 0.5) * 0.5 * pi / (double)K;
    const double freq = p.freq * (0.9 + 0.2 * gen.uniform_double());
    const double phase = 2.0 * pi * gen.uniform_double();
    const double cx = 0.4 * (gen.uniform_double() - 0.5), cy = 0.4 * (gen.uniform_double() - 0.5);
    const double s = 0.18 + 0.15 * gen.uniform_double();
    const double amp = 0.25 + 0.2 * gen.uniform_double();
    for (int64_t c = 0; c < C; ++c) {
      bg[c] = 0.35 + 0.3 * gen.uniform_double();
      tint[c] = 0.7 * p.colour[c] + 0.3 * (2.0 * gen.uniform_double() - 1.0);
    }
    const double ct = std::cos(theta), st = std::sin(theta);
    uint8_t* img = pixels.data() + i * C * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const double v = (double)y / (double)H - 0.5;
      for (int64_t x = 0; x < W; ++x) {
        const double u = (double)x / (double)W - 0.5;
        const double d2 = (u - cx) * (u - cx) + (v - cy) * (v - cy);
        const double window = std::exp(-d2 / (2.0 * s * s));
        const double stripe = std::sin(2.0 * pi * freq * (u * ct + v * st) + phase);
        for (int64_t c = 0; c < C; ++c) {
          double value = bg[c] + amp * window * stripe * tint[c] + (double)o.noise * gen.normal();
          value = std::min(1.0, std::max(0.0, value));
          img[(c * H + y) * W + x] = (uint8_t)std::lround(255.0 * value);
        }
      }
    }
  }

  Dataset d = detail::make_dataset("synthetic", split, fmt::format("synthetic(seed={})", o.seed), std::move(pixels),
                                   labels, C, H, W);
  for (int64_t k = 0; k < K; ++k) d.class_names.push_back(fmt::format("pattern{}", k));
  channel_stats(d.images, d.mean, d.std);
  return d;
}

}  // namespace kd::data
