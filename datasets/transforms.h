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
//   jitter  ColorJitter(brightness=j, contrast=j) with fixed order: x = b x, then x = m + c (x - m)
//           with m the image's mean gray level, clamped to [0, 255]; b, c uniform in [1-j, 1+j]
//   strong  `strong_ops` ops drawn uniformly from {identity, rotate, translate_x, translate_y,
//           brightness, contrast, saturation}, each with its own strength in (0, magnitude/10]
//           of the op's range (rotate +-30 degrees, translate +-30% of the size, colour factors
//           1 +- 0.9), a random sign; nearest-neighbour resampling, black fill, clamped to [0, 255]
//   modality   what the network sees (modality.h: rgb, gray, edges, lowres:K, rgb+edges),
//              C -> C2 channels, on the augmented pixels
//   normalise  x = (pixel / 255 - mean_c) / std_c, for the modality's C2 channels
//   cutout  a cutout_size x cutout_size square (clipped at the borders) at a random centre set
//           to 0 after normalisation (the data-set mean), as in DeVries & Taylor's Cutout
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/modality.h"
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
  float brightness = 1, contrast = 1;  // the colour jitter's factors (1: none)
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
  float color_jitter = 0;   // j of ColorJitter(brightness=j, contrast=j); 0: none
  Modality modality;        // applied after augmentation; mean/std are its channels'
};

// The channels apply_transform writes for images with `channels` stored channels.
int64_t transform_channels(const TransformConfig& config, int64_t channels);

// A second view of the same image for a paired (cross-modal) batch: the same geometry (crop,
// flip, rotations, translations, cutout) with the photometric choices (colour jitter, strong
// brightness / contrast / saturation strengths) drawn afresh from gen.
AugParams redraw_photometric(const AugParams& params, const TransformConfig& config, int64_t height, int64_t width,
                             Generator& gen);

// The usual configurations for a data set (its mean/std filled in):
TransformConfig eval_transform(const Dataset& d);   // normalise only
TransformConfig train_transform(const Dataset& d);  // crop (padding 4 for 32 x 32, H/8 otherwise) + flip
TransformConfig strong_transform(const Dataset& d); // train_transform + 2 strong ops + cutout of H/2

// Draws the random choices of one image, in this order: crop top, crop left, flip, jitter
// (brightness, contrast), then per
// strong op (op id, strength, sign), then cutout centre y, x. Only what the config enables is drawn.
AugParams draw_aug_params(const TransformConfig& config, int64_t height, int64_t width, Generator& gen);

// Applies `params` to one image: src uint8 (C, H, W) contiguous -> dst float (C2, H, W),
// normalised, C2 = transform_channels(config, C). `offset` (C floats, or null): a constant added
// to each channel first (Dataset::pixel_offset, the chroma cue).
void apply_transform(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const AugParams& params,
                     const TransformConfig& config, float* dst, const float* offset = nullptr);
// The same on tensors: image (C, H, W) uint8 -> (C2, H, W) float32.
Tensor apply_transform(const Tensor& image, const AugParams& params, const TransformConfig& config,
                       const float* offset = nullptr);
// The first n images of d (all when n <= 0) as a model sees them in evaluation: its modality,
// offsets and normalisation (eval_transform), (n, C2, H, W) float32.
Tensor eval_images(const Dataset& d, int64_t n = 0);

// x = (pixel / 255 - mean_c) / std_c for uint8 images (N, C, H, W) or (C, H, W) -> float32.
Tensor normalize_images(const Tensor& images, const std::vector<float>& mean, const std::vector<float>& std);

// Checks the config against an image geometry (stored channels; the modality's channels matching
// mean/std, sizes sensible).
void validate_transform(const TransformConfig& config, int64_t channels, int64_t height, int64_t width);

}  // namespace kd::data
