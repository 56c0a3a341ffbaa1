// modality.h: what a network sees of an image (cross-modal distillation, issue #30), and the
// planted chroma cue of the modality-focusing control.
//
// A modality is a function of the (augmented) colour image, in pixel units [0, 255] (before
// normalisation), applied by the transform after the augmentation and before normalisation
// (transforms.h), so the teacher's and the student's views of one image always share the crop
// and the flip:
//   rgb        the data set's own channels, unchanged
//   gray       luminance Y = 0.299 R + 0.587 G + 0.114 B (one channel; a 1-channel data set: itself)
//   edges      Sobel gradient magnitude of Y, sqrt(Gx^2 + Gy^2) / 4 (one channel), with the image's
//              border replicated (no artificial edge at the frame); / 4 makes a step of height h
//              read h, the kernel's weights summing to 4 on each side
//   lowres:K   every channel averaged down to K x K (PyTorch's adaptive_avg_pool2d) and enlarged
//              back by nearest neighbour (F.interpolate(mode="nearest")): the detail of a
//              K x K sensor at the original size
//   rgb+edges  the image's channels with the edges channel stacked after them (a "joint" input)
// Any model of the zoo takes any channel count, so teacher and student may see different ones.
//
// Normalisation: a modality's channels are normalised from the data set's published per-channel
// mean m_c and standard deviation s_c, so every split, run and tool agrees without measuring:
// rgb and lowres keep (m_c, s_c); gray takes (sum w_c m_c, sum w_c s_c) (exact for the mean, the
// standard deviation of perfectly correlated channels for the spread); edges takes mean 0 and
// the gray spread (a gradient is a difference of luminances; the first BatchNorm centres it).
//
// The chroma cue (Xue et al., ICLR 2023's modality focusing hypothesis, as a control): image i of
// class c gets, with probability p, the constant offset delta_c added to every pixel before
// augmentation, where delta_c lies in the plane 0.299 dR + 0.587 dG + 0.114 dB = 0:
//     delta_c = A (cos theta_c u + sin theta_c v),   theta_c = 2 pi c / K,
// u = (0.587, -0.299, 0) / |.|, v = w x u / |.| (an orthonormal basis of the chroma plane), A the
// strength in pixel units. Luminance cannot see it: Y(x + delta) = Y(x) up to float rounding. The
// offsets stay in float (no clamping, no uint8 rounding), so that holds for every pixel.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd::data {

struct Dataset;

// The luminance weights (ITU-R BT.601), the and METHODS.md's.
inline constexpr float kLumaR = 0.299f, kLumaG = 0.587f, kLumaB = 0.114f;

struct Modality {
  enum class Kind { rgb, gray, edges, lowres, rgb_edges };
  Kind kind = Kind::rgb;
  int64_t size = 0;  // lowres: K
  bool is_rgb() const { return kind == Kind::rgb; }
  std::string str() const;  // "rgb", "gray", "edges", "lowres:8", "rgb+edges"
  bool operator==(const Modality& o) const { return kind == o.kind && size == o.size; }
  bool operator!=(const Modality& o) const { return !(*this == o); }
};

// "rgb" | "gray" | "edges" | "lowres:K" | "rgb+edges" ("" = rgb); anything else is an error that
// lists them.
Modality parse_modality(const std::string& text);
// The names for help texts.
const char* modality_help();

// Channels of the modality of an image with `channels` channels; an error when the modality
// cannot be made from them (gray/edges need 1 or 3 channels).
int64_t modality_channels(const Modality& m, int64_t channels);
// The normalisation of the modality's channels (see the top of this header).
void modality_normalization(const Modality& m, const std::vector<float>& mean, const std::vector<float>& std,
                            std::vector<float>& out_mean, std::vector<float>& out_std);
// in (C, H, W) pixel values -> out (modality_channels(m, C), H, W); in and out must not overlap.
void apply_modality(const float* in, int64_t C, int64_t H, int64_t W, const Modality& m, float* out);
// The same on a float tensor (C, H, W) or (N, C, H, W) of pixel values.
Tensor apply_modality(const Tensor& images, const Modality& m);
// A handle on the same images (shared, not copied) that models and transforms see as modality m.
Dataset with_modality(const Dataset& d, const Modality& m);

// ---- the chroma cue
struct ChromaCue {
  double p = 0;          // probability that an image carries its class's offset
  float strength = 32;   // A, in pixel units
  uint64_t seed = 0;     // which images carry it (the split is mixed in)
  bool active() const { return p > 0; }
  std::string str() const;  // "0.5:32"
};
// "P" or "P:A" with P in [0, 1] and A > 0 ("" or "0": none).
ChromaCue parse_chroma_cue(const std::string& text);
// delta_c for class c of K, strength A: (dR, dG, dB).
std::array<float, 3> chroma_offset(int64_t label, int64_t num_classes, float strength);
// Sets d.pixel_offset (N, 3): row i is delta_{label i} with probability cue.p (a Bernoulli draw
// per image from Generator(cue.seed mixed with the split)), else zeros. Needs a 3-channel data set.
// Returns how many images carry it.
int64_t plant_chroma_cue(Dataset& d, const ChromaCue& cue);

}  // namespace kd::data
