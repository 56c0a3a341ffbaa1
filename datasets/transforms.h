// transforms.h: per-image augmentation and normalisation, with every random choice recorded.
//
// A transform is two steps, so that whatever a loader did to an image can be done again later
// (a teacher cache stores teacher outputs per sample *and* augmentation, and must look them up):
//   1. draw_aug_params(config, H, W, gen)  draws all random choices of one image from an explicit
//      Generator, in a fixed order, into an AugParams;
//   2. apply_transform(image, params, config)  is a pure function of the image and the params.
//
// The pipeline, in order (the standard CIFAR recipe, then optional "strong" RandAugment-style
// ops for extra "virtual views"):
//   crop    torchvision RandomCrop(H, padding=p): pad every side with p black pixels (value 0,
//           before normalisation), take the H x W window at (top, left), top/left in [0, 2p]
//   flip    RandomHorizontalFlip(0.5): mirror left-right
//   strong  `strong_ops` ops drawn uniformly from {identity, rotate, translate_x, translate_y,
//           brightness, contrast, saturation}, each with its own strength in (0, magnitude/10]
//           of the op's range (rotate +-30 degrees, translate +-30% of the size, colour factors
//           1 +- 0.9), a random sign; nearest-neighbour resampling, black fill, clamped to [0, 255]
//   normalise  x = (pixel / 255 - mean_c) / std_c
//   cutout  a cutout_size x cutout_size square (clipped at the borders) at a random centre set
//           to 0 after normalisation (the data-set mean), as in DeVries & Taylor's Cutout
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/tensor.h"

namespace kd::data {

struct Dataset;

enum class StrongOp : uint8_t { identity, rotate, translate_x, translate_y, brightness, contrast, saturation };
inline constexpr int kNumStrongOps = 7;
const char* strong_op_name(StrongOp op);

// One strong op as applied: value in the op's own unit (degrees for rotate, pixels for the
// translations, the blend factor for brightness / contrast / saturation; unused for identity).
struct StrongStep {
  StrongOp op = StrongOp::identity;
  float value = 0;
};

// Everything random about one augmented image.
struct AugParams {
  int pad = 0;         // zero padding of the crop (0: no crop)
  int crop_top = 0;    // torchvision's i: first row of the window in the padded image, in [0, 2 pad]
  int crop_left = 0;   // torchvision's j: first column
  bool flipped = false;
  std::vector<StrongStep> strong;  // in the order applied
  int cutout_y = 0, cutout_x = 0;  // centre of the cutout square
  int cutout_size = 0;             // 0: no cutout
  int view = -1;  // which stored view of the teacher cache this is (-1: drawn fresh); not compared by ==
  bool operator==(const AugParams& o) const;
  std::string str() const;  // "crop(4,1) flip rotate(-12.3) cutout(5,9,16)" for logs and tests
};

struct TransformConfig {
  std::vector<float> mean;  // (C) normalisation, in [0, 1] pixel units
  std::vector<float> std;   // (C)
  int crop_padding = 0;     // RandomCrop(H, padding) with black padding; 0: no crop
  bool hflip = false;       // RandomHorizontalFlip(p = 0.5)
  int strong_ops = 0;       // RandAugment-style ops per image; 0: none
  float strong_magnitude = 10;  // in [0, 10]: the largest strength an op may draw
  int cutout_size = 0;      // side of the cutout square in pixels; 0: none
};

// The usual configurations for a data set (its mean/std filled in):
TransformConfig eval_transform(const Dataset& d);   // normalise only
TransformConfig train_transform(const Dataset& d);  // crop (padding 4 for 32 x 32, H/8 otherwise) + flip
TransformConfig strong_transform(const Dataset& d); // train_transform + 2 strong ops + cutout of H/2

// Draws the random choices of one image, in this order: crop top, crop left, flip, then per
// strong op (op id, strength, sign), then cutout centre y, x. Only what the config enables is drawn.
AugParams draw_aug_params(const TransformConfig& config, int64_t height, int64_t width, Generator& gen);

// Applies `params` to one image: src uint8 (C, H, W) contiguous -> dst float (C, H, W), normalised.
void apply_transform(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const AugParams& params,
                     const TransformConfig& config, float* dst);
// The same on tensors: image (C, H, W) uint8 -> (C, H, W) float32.
Tensor apply_transform(const Tensor& image, const AugParams& params, const TransformConfig& config);

// x = (pixel / 255 - mean_c) / std_c for uint8 images (N, C, H, W) or (C, H, W) -> float32.
Tensor normalize_images(const Tensor& images, const std::vector<float>& mean, const std::vector<float>& std);

// Checks the config against an image geometry (channels matching mean/std, sizes sensible).
void validate_transform(const TransformConfig& config, int64_t channels, int64_t height, int64_t width);

}  // namespace kd::data
