// transforms.cpp: drawing and applying per-image augmentations (see transforms.h).
//
// All image work happens on one float buffer (C, H, W) holding pixel values in [0, 255]; the
// kernels are plain loops over that buffer, one function per step.
#include "datasets/transforms.h"

#include <cmath>
#include <cstring>

#include "datasets/dataset.h"

namespace kd::data {

const char* strong_op_name(StrongOp op) {
  switch (op) {
    case StrongOp::identity: return "identity";
    case StrongOp::rotate: return "rotate";
    case StrongOp::translate_x: return "translate_x";
    case StrongOp::translate_y: return "translate_y";
    case StrongOp::brightness: return "brightness";
    case StrongOp::contrast: return "contrast";
    case StrongOp::saturation: return "saturation";
  }
  return "?";
}

bool AugParams::operator==(const AugParams& o) const {
  if (pad != o.pad || crop_top != o.crop_top || crop_left != o.crop_left || flipped != o.flipped ||
      cutout_y != o.cutout_y || cutout_x != o.cutout_x || cutout_size != o.cutout_size ||
      brightness != o.brightness || contrast != o.contrast ||
      strong.size() != o.strong.size())
    return false;
  for (size_t k = 0; k < strong.size(); ++k)
    if (strong[k].op != o.strong[k].op || strong[k].value != o.strong[k].value) return false;
  return true;
}

std::string AugParams::str() const {
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : " ") + part; };
  if (pad > 0) add(fmt::format("crop({},{})", crop_top, crop_left));
  if (flipped) add("flip");
  if (brightness != 1.0f || contrast != 1.0f) add(fmt::format("jitter({:.4g},{:.4g})", brightness, contrast));
  for (const StrongStep& st : strong) add(fmt::format("{}({:.4g})", strong_op_name(st.op), st.value));
  if (cutout_size > 0) add(fmt::format("cutout({},{},{})", cutout_y, cutout_x, cutout_size));
  return s.empty() ? "none" : s;
}

// ---- configurations

TransformConfig eval_transform(const Dataset& d) {
  TransformConfig c;
  c.modality = d.modality;  // the modality's channels and their normalisation (modality.h)
  modality_normalization(d.modality, d.mean, d.std, c.mean, c.std);
  return c;
}

int64_t transform_channels(const TransformConfig& c, int64_t channels) {
  return modality_channels(c.modality, channels);
}

TransformConfig train_transform(const Dataset& d) {
  TransformConfig c = eval_transform(d);
  c.crop_padding = d.height() == 32 ? 4 : std::max<int>(1, (int)d.height() / 8);
  c.hflip = true;
  return c;
}

TransformConfig strong_transform(const Dataset& d) {
  TransformConfig c = train_transform(d);
  c.strong_ops = 2;
  c.strong_magnitude = 10;
  c.cutout_size = (int)d.height() / 2;
  return c;
}

void validate_transform(const TransformConfig& c, int64_t stored_channels, int64_t height, int64_t width) {
  const int64_t channels = transform_channels(c, stored_channels);
  KD_CHECK((int64_t)c.mean.size() == channels && (int64_t)c.std.size() == channels,
           "transform: {} means and {} standard deviations for images with {} channel(s) ({}); give one per channel",
           c.mean.size(), c.std.size(), channels, c.modality.str());
  KD_CHECK(c.color_jitter >= 0 && c.color_jitter <= 1, "transform: color_jitter {} must be in [0, 1]", c.color_jitter);
  for (float s : c.std) KD_CHECK(s > 0, "transform: standard deviations must be > 0, got {}", s);
  KD_CHECK(c.crop_padding >= 0 && c.crop_padding <= std::max(height, width),
           "transform: crop padding {} must be in [0, {}]", c.crop_padding, std::max(height, width));
  KD_CHECK(c.strong_ops >= 0 && c.strong_ops <= 16, "transform: strong_ops {} must be in [0, 16]", c.strong_ops);
  KD_CHECK(c.strong_magnitude >= 0 && c.strong_magnitude <= 10, "transform: strong_magnitude {} must be in [0, 10]",
           c.strong_magnitude);
  KD_CHECK(c.cutout_size >= 0, "transform: cutout_size {} must be >= 0", c.cutout_size);
}

// ---- drawing

namespace {

// ColorJitter(brightness=j, contrast=j): each factor uniform in [max(0, 1 - j), 1 + j].
void draw_jitter(const TransformConfig& c, AugParams& p, Generator& gen) {
  if (c.color_jitter <= 0) return;
  const float lo = std::max(0.0f, 1.0f - c.color_jitter), hi = 1.0f + c.color_jitter;
  p.brightness = lo + (hi - lo) * gen.uniform();
  p.contrast = lo + (hi - lo) * gen.uniform();
}

// The strength of one strong op: a level in (0, magnitude / 10] and a random sign.
float draw_strong_value(const TransformConfig& c, StrongOp op, int64_t height, int64_t width, Generator& gen) {
  const float level = c.strong_magnitude / 10.0f * (1.0f - gen.uniform());  // in (0, magnitude / 10]
  const float sign = gen.uniform() < 0.5f ? -1.0f : 1.0f;
  switch (op) {
    case StrongOp::identity: return 0;
    case StrongOp::rotate: return sign * 30.0f * level;
    case StrongOp::translate_x: return sign * std::round(0.3f * (float)width * level);
    case StrongOp::translate_y: return sign * std::round(0.3f * (float)height * level);
    case StrongOp::brightness:
    case StrongOp::contrast:
    case StrongOp::saturation: return 1.0f + sign * 0.9f * level;
  }
  return 0;
}

bool is_photometric(StrongOp op) {
  return op == StrongOp::brightness || op == StrongOp::contrast || op == StrongOp::saturation;
}

}  // namespace

AugParams redraw_photometric(const AugParams& p, const TransformConfig& c, int64_t height, int64_t width,
                             Generator& gen) {
  AugParams q = p;
  q.view = -1;
  draw_jitter(c, q, gen);
  for (StrongStep& st : q.strong)
    if (is_photometric(st.op)) st.value = draw_strong_value(c, st.op, height, width, gen);
  return q;
}

AugParams draw_aug_params(const TransformConfig& c, int64_t height, int64_t width, Generator& gen) {
  AugParams p;
  if (c.crop_padding > 0) {
    // torchvision RandomCrop.get_params on the padded (H + 2p) x (W + 2p) image:
    // i = randint(0, H + 2p - H + 1), j = randint(0, W + 2p - W + 1)
    p.pad = c.crop_padding;
    p.crop_top = (int)gen.randint(0, 2 * c.crop_padding + 1);
    p.crop_left = (int)gen.randint(0, 2 * c.crop_padding + 1);
  }
  if (c.hflip) p.flipped = gen.uniform() < 0.5f;
  draw_jitter(c, p, gen);
  for (int k = 0; k < c.strong_ops; ++k) {
    StrongStep st;
    st.op = (StrongOp)gen.randint(0, kNumStrongOps);
    st.value = draw_strong_value(c, st.op, height, width, gen);
    p.strong.push_back(st);
  }
  if (c.cutout_size > 0) {
    p.cutout_size = c.cutout_size;
    p.cutout_y = (int)gen.randint(0, height);
    p.cutout_x = (int)gen.randint(0, width);
  }
  return p;
}

// ---- the steps, on float pixel buffers (C, H, W) in [0, 255]

namespace {

// out(c, y, x) = padded(c, y + top, x + left), where padded has `pad` black pixels on each side.
void crop_with_padding(const float* in, int64_t C, int64_t H, int64_t W, int pad, int top, int left, float* out) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + top - pad;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = x + left - pad;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        out[(c * H + y) * W + x] = inside ? in[(c * H + sy) * W + sx] : 0.0f;
      }
    }
}

// out(c, y, x) = in(c, y, W - 1 - x)
void flip_horizontal(const float* in, int64_t C, int64_t H, int64_t W, float* out) {
  for (int64_t r = 0; r < C * H; ++r)
    for (int64_t x = 0; x < W; ++x) out[r * W + x] = in[r * W + (W - 1 - x)];
}

// Counter-clockwise rotation by `degrees` about the image centre, nearest neighbour, black fill:
// each output pixel reads the input at the inverse-rotated position.
void rotate(const float* in, int64_t C, int64_t H, int64_t W, float degrees, float* out) {
  const double a = degrees * M_PI / 180.0, ca = std::cos(a), sa = std::sin(a);
  const double cy = (H - 1) / 2.0, cx = (W - 1) / 2.0;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const double dx = x - cx, dy = y - cy;
      const int64_t sx = (int64_t)std::lround(ca * dx - sa * dy + cx);
      const int64_t sy = (int64_t)std::lround(sa * dx + ca * dy + cy);
      const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
      for (int64_t c = 0; c < C; ++c) out[(c * H + y) * W + x] = inside ? in[(c * H + sy) * W + sx] : 0.0f;
    }
}

// out(c, y, x) = in(c, y - ty, x - tx): the content moves by (ty, tx) pixels, black fill.
void translate(const float* in, int64_t C, int64_t H, int64_t W, int64_t ty, int64_t tx, float* out) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y - ty, sx = x - tx;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        out[(c * H + y) * W + x] = inside ? in[(c * H + sy) * W + sx] : 0.0f;
      }
}

// Grayscale of an RGB pixel, with torchvision's weights (rgb_to_grayscale).
inline float gray(const float* img, int64_t hw, int64_t p) {
  return 0.2989f * img[p] + 0.587f * img[hw + p] + 0.114f * img[2 * hw + p];
}

inline float clamp255(float v) { return std::min(255.0f, std::max(0.0f, v)); }

// Brightness: blend with black, x = f x.
void brightness(float* img, int64_t n, float f) {
  for (int64_t i = 0; i < n; ++i) img[i] = clamp255(f * img[i]);
}

// Contrast: blend with the mean gray level m of the image, x = m + f (x - m).
void contrast(float* img, int64_t C, int64_t H, int64_t W, float f) {
  const int64_t hw = H * W;
  double m = 0;
  if (C == 3) {
    for (int64_t p = 0; p < hw; ++p) m += gray(img, hw, p);
    m /= (double)hw;
  } else {
    for (int64_t i = 0; i < C * hw; ++i) m += img[i];
    m /= (double)(C * hw);
  }
  for (int64_t i = 0; i < C * hw; ++i) img[i] = clamp255((float)m + f * (img[i] - (float)m));
}

// Saturation: blend each pixel with its own gray level, x = g + f (x - g). RGB only.
void saturation(float* img, int64_t C, int64_t H, int64_t W, float f) {
  if (C != 3) return;
  const int64_t hw = H * W;
  for (int64_t p = 0; p < hw; ++p) {
    const float g = gray(img, hw, p);
    for (int64_t c = 0; c < 3; ++c) img[c * hw + p] = clamp255(g + f * (img[c * hw + p] - g));
  }
}

}  // namespace

void apply_transform(const uint8_t* src, int64_t C, int64_t H, int64_t W, const AugParams& p,
                     const TransformConfig& config, float* dst, const float* offset) {
  const int64_t n = C * H * W, hw = H * W;
  std::vector<float> a(n), b(n);  // (C, H, W) pixel values in [0, 255]; each step writes the other buffer
  for (int64_t i = 0; i < n; ++i) a[i] = (float)src[i];
  if (offset)  // the image's constant per-channel offset (the chroma cue), in float: no clamping
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < hw; ++i) a[c * hw + i] += offset[c];

  if (p.pad > 0) {
    crop_with_padding(a.data(), C, H, W, p.pad, p.crop_top, p.crop_left, b.data());
    std::swap(a, b);
  }
  if (p.flipped) {
    flip_horizontal(a.data(), C, H, W, b.data());
    std::swap(a, b);
  }
  if (p.brightness != 1.0f) brightness(a.data(), n, p.brightness);  // ColorJitter: brightness, then contrast
  if (p.contrast != 1.0f) contrast(a.data(), C, H, W, p.contrast);
  for (const StrongStep& st : p.strong) {
    switch (st.op) {
      case StrongOp::identity: break;
      case StrongOp::rotate:
        rotate(a.data(), C, H, W, st.value, b.data());
        std::swap(a, b);
        break;
      case StrongOp::translate_x:
        translate(a.data(), C, H, W, 0, (int64_t)st.value, b.data());
        std::swap(a, b);
        break;
      case StrongOp::translate_y:
        translate(a.data(), C, H, W, (int64_t)st.value, 0, b.data());
        std::swap(a, b);
        break;
      case StrongOp::brightness: brightness(a.data(), n, st.value); break;
      case StrongOp::contrast: contrast(a.data(), C, H, W, st.value); break;
      case StrongOp::saturation: saturation(a.data(), C, H, W, st.value); break;
    }
  }

  // The modality (modality.h): what the network sees of the augmented image, C -> C2 channels.
  const int64_t C2 = transform_channels(config, C);
  if (!config.modality.is_rgb()) {
    b.resize((size_t)(C2 * hw));
    apply_modality(a.data(), C, H, W, config.modality, b.data());
    std::swap(a, b);
  }

  // Normalise exactly as ToTensor + Normalize do in float32: v = pixel / 255, then (v - mean) / std.
  for (int64_t c = 0; c < C2; ++c) {
    const float m = config.mean[c], s = config.std[c];
    for (int64_t i = 0; i < hw; ++i) {
      const float v = a[c * hw + i] / 255.0f;
      dst[c * hw + i] = (v - m) / s;
    }
  }

  if (p.cutout_size > 0) {
    // The square [y - size/2, y + size/2) x [x - size/2, x + size/2), clipped, set to 0 (the mean).
    const int64_t y0 = std::max<int64_t>(0, p.cutout_y - p.cutout_size / 2);
    const int64_t y1 = std::min<int64_t>(H, p.cutout_y - p.cutout_size / 2 + p.cutout_size);
    const int64_t x0 = std::max<int64_t>(0, p.cutout_x - p.cutout_size / 2);
    const int64_t x1 = std::min<int64_t>(W, p.cutout_x - p.cutout_size / 2 + p.cutout_size);
    for (int64_t c = 0; c < C2; ++c)
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) dst[(c * H + y) * W + x] = 0.0f;
  }
}

Tensor apply_transform(const Tensor& image, const AugParams& params, const TransformConfig& config,
                       const float* offset) {
  KD_CHECK(image.dim() == 3 && image.dtype() == DType::u8,
           "apply_transform: expected a uint8 image (C, H, W), got {} {}", dtype_name(image.dtype()),
           shape_str(image.shape()));
  Tensor src = image.contiguous();
  const int64_t C = src.size(0), H = src.size(1), W = src.size(2);
  validate_transform(config, C, H, W);
  Tensor out = empty({transform_channels(config, C), H, W});  // (C2, H, W) f32
  apply_transform(src.data<uint8_t>(), C, H, W, params, config, out.data<float>(), offset);
  return out;
}

Tensor eval_images(const Dataset& d, int64_t n) {
  n = n <= 0 ? d.size() : std::min(n, d.size());
  const TransformConfig tc = eval_transform(d);
  const int64_t C = d.channels(), H = d.height(), W = d.width(), C2 = transform_channels(tc, C);
  Tensor out = empty({n, C2, H, W});  // (n, C2, H, W)
  const AugParams none;
  for (int64_t i = 0; i < n; ++i)
    apply_transform(d.images.data<uint8_t>() + i * C * H * W, C, H, W, none, tc, out.data<float>() + i * C2 * H * W,
                    d.offset_of(i));
  return out;
}

Tensor normalize_images(const Tensor& images, const std::vector<float>& mean, const std::vector<float>& std) {
  KD_CHECK((images.dim() == 3 || images.dim() == 4) && images.dtype() == DType::u8,
           "normalize_images: expected uint8 images (N, C, H, W) or (C, H, W), got {} {}",
           dtype_name(images.dtype()), shape_str(images.shape()));
  Tensor src = images.contiguous();
  const int64_t cdim = images.dim() - 3;
  const int64_t N = images.dim() == 4 ? src.size(0) : 1, C = src.size(cdim), HW = src.size(cdim + 1) * src.size(cdim + 2);
  KD_CHECK((int64_t)mean.size() == C && (int64_t)std.size() == C,
           "normalize_images: {} channel(s) but {} means and {} standard deviations", C, mean.size(), std.size());
  Tensor out = empty(src.shape());  // same shape, f32
  const uint8_t* s = src.data<uint8_t>();
  float* d = out.data<float>();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < HW; ++k) {
        const int64_t at = (i * C + c) * HW + k;
        d[at] = ((float)s[at] / 255.0f - mean[c]) / std[c];
      }
  return out;
}

}  // namespace kd::data
