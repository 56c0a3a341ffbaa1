// modality.cpp: the modality transforms and the chroma cue (see modality.h).
#include "datasets/modality.h"

#include <cmath>
#include <cstring>

#include "datasets/dataset.h"
#include "engine/error.h"
#include "engine/generator.h"

namespace kd::data {

std::string Modality::str() const {
  switch (kind) {
    case Kind::rgb: return "rgb";
    case Kind::gray: return "gray";
    case Kind::edges: return "edges";
    case Kind::lowres: return fmt::format("lowres:{}", size);
    case Kind::rgb_edges: return "rgb+edges";
  }
  return "?";
}

const char* modality_help() { return "rgb | gray | edges | lowres:K | rgb+edges"; }

Modality parse_modality(const std::string& text) {
  Modality m;
  if (text.empty() || text == "rgb") return m;
  if (text == "gray" || text == "grey") m.kind = Modality::Kind::gray;
  else if (text == "edges") m.kind = Modality::Kind::edges;
  else if (text == "rgb+edges") m.kind = Modality::Kind::rgb_edges;
  else if (text.rfind("lowres:", 0) == 0) {
    m.kind = Modality::Kind::lowres;
    const std::string k = text.substr(7);
    char* end = nullptr;
    const long v = std::strtol(k.c_str(), &end, 10);
    KD_CHECK(!k.empty() && *end == '\0' && v >= 1,
             "modality '{}': K in lowres:K must be a whole number of pixels >= 1, like lowres:8", text);
    m.size = v;
  } else {
    throw Error(fmt::format("unknown modality '{}': known modalities are {}", text, modality_help()));
  }
  return m;
}

int64_t modality_channels(const Modality& m, int64_t C) {
  const bool luma_ok = C == 1 || C == 3;
  switch (m.kind) {
    case Modality::Kind::rgb:
    case Modality::Kind::lowres: return C;
    case Modality::Kind::gray:
    case Modality::Kind::edges:
    case Modality::Kind::rgb_edges:
      KD_CHECK(luma_ok, "modality {} is made from the luminance of a 1- or 3-channel image, but the images have {} "
                        "channels; use rgb or lowres:K", m.str(), C);
      return m.kind == Modality::Kind::rgb_edges ? C + 1 : 1;
  }
  return C;
}

static float weighted_luma(const std::vector<float>& v) {
  return v.size() == 1 ? v[0] : kLumaR * v[0] + kLumaG * v[1] + kLumaB * v[2];
}

void modality_normalization(const Modality& m, const std::vector<float>& mean, const std::vector<float>& std,
                            std::vector<float>& out_mean, std::vector<float>& out_std) {
  const int64_t C = (int64_t)mean.size();
  modality_channels(m, C);  // the check
  switch (m.kind) {
    case Modality::Kind::rgb:
    case Modality::Kind::lowres:
      out_mean = mean;
      out_std = std;
      return;
    case Modality::Kind::gray:
      out_mean = {weighted_luma(mean)};
      out_std = {weighted_luma(std)};
      return;
    case Modality::Kind::edges:
      out_mean = {0.0f};
      out_std = {weighted_luma(std)};
      return;
    case Modality::Kind::rgb_edges:
      out_mean = mean;
      out_std = std;
      out_mean.push_back(0.0f);
      out_std.push_back(weighted_luma(std));
      return;
  }
}

namespace {

// Y of every pixel: (H, W) from (C, H, W), C = 1 or 3.
void luminance(const float* in, int64_t C, int64_t hw, float* y) {
  if (C == 1) {
    std::memcpy(y, in, sizeof(float) * (size_t)hw);
    return;
  }
  for (int64_t p = 0; p < hw; ++p) y[p] = kLumaR * in[p] + kLumaG * in[hw + p] + kLumaB * in[2 * hw + p];
}

// Sobel magnitude / 4 of a (H, W) plane, the border replicated.
void sobel_magnitude(const float* y, int64_t H, int64_t W, float* out) {
  auto at = [&](int64_t r, int64_t c) {
    r = std::min(std::max<int64_t>(r, 0), H - 1);
    c = std::min(std::max<int64_t>(c, 0), W - 1);
    return y[r * W + c];
  };
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c) {
      // Gx = [-1 0 1; -2 0 2; -1 0 1], Gy = its transpose, as correlations (conv2d)
      const float gx = (at(r - 1, c + 1) + 2 * at(r, c + 1) + at(r + 1, c + 1)) -
                       (at(r - 1, c - 1) + 2 * at(r, c - 1) + at(r + 1, c - 1));
      const float gy = (at(r + 1, c - 1) + 2 * at(r + 1, c) + at(r + 1, c + 1)) -
                       (at(r - 1, c - 1) + 2 * at(r - 1, c) + at(r - 1, c + 1));
      out[r * W + c] = std::sqrt(gx * gx + gy * gy) / 4.0f;
    }
}

// adaptive_avg_pool2d to K x K, then nearest-neighbour back to H x W, one plane.
void lowres_plane(const float* in, int64_t H, int64_t W, int64_t K, float* out) {
  std::vector<float> small((size_t)(K * K));
  for (int64_t i = 0; i < K; ++i) {
    const int64_t r0 = i * H / K, r1 = ((i + 1) * H + K - 1) / K;  // floor(i H / K), ceil((i + 1) H / K)
    for (int64_t j = 0; j < K; ++j) {
      const int64_t c0 = j * W / K, c1 = ((j + 1) * W + K - 1) / K;
      double s = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) s += in[r * W + c];
      small[i * K + j] = (float)(s / (double)((r1 - r0) * (c1 - c0)));
    }
  }
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c) out[r * W + c] = small[(r * K / H) * K + c * K / W];  // floor(r K / H)
}

}  // namespace

void apply_modality(const float* in, int64_t C, int64_t H, int64_t W, const Modality& m, float* out) {
  const int64_t hw = H * W;
  modality_channels(m, C);
  switch (m.kind) {
    case Modality::Kind::rgb: std::memcpy(out, in, sizeof(float) * (size_t)(C * hw)); return;
    case Modality::Kind::gray: luminance(in, C, hw, out); return;
    case Modality::Kind::edges: {
      std::vector<float> y((size_t)hw);
      luminance(in, C, hw, y.data());
      sobel_magnitude(y.data(), H, W, out);
      return;
    }
    case Modality::Kind::lowres:
      KD_CHECK(m.size <= H && m.size <= W, "modality {}: K = {} is larger than the {} x {} image", m.str(), m.size, H,
               W);
      for (int64_t c = 0; c < C; ++c) lowres_plane(in + c * hw, H, W, m.size, out + c * hw);
      return;
    case Modality::Kind::rgb_edges: {
      std::memcpy(out, in, sizeof(float) * (size_t)(C * hw));
      std::vector<float> y((size_t)hw);
      luminance(in, C, hw, y.data());
      sobel_magnitude(y.data(), H, W, out + C * hw);
      return;
    }
  }
}

Tensor apply_modality(const Tensor& images, const Modality& m) {
  KD_CHECK((images.dim() == 3 || images.dim() == 4) && images.dtype() == DType::f32,
           "apply_modality: expected float pixel values (N, C, H, W) or (C, H, W), got {} {}",
           dtype_name(images.dtype()), shape_str(images.shape()));
  Tensor src = images.contiguous();
  const bool batched = images.dim() == 4;
  const int64_t N = batched ? src.size(0) : 1, d = batched ? 1 : 0;
  const int64_t C = src.size(d), H = src.size(d + 1), W = src.size(d + 2), C2 = modality_channels(m, C);
  Tensor out = batched ? empty({N, C2, H, W}) : empty({C2, H, W});
  for (int64_t i = 0; i < N; ++i)
    apply_modality(src.data<float>() + i * C * H * W, C, H, W, m, out.data<float>() + i * C2 * H * W);
  return out;
}

Dataset with_modality(const Dataset& d, const Modality& m) {
  Dataset out = d;  // tensors are shared handles
  modality_channels(m, d.channels());  // refuses what cannot be made
  out.modality = m;
  return out;
}

// ---- the chroma cue

std::string ChromaCue::str() const { return fmt::format("{}:{}", p, strength); }

ChromaCue parse_chroma_cue(const std::string& text) {
  ChromaCue cue;
  if (text.empty() || text == "0" || text == "none") return cue;
  const size_t colon = text.find(':');
  const std::string ps = text.substr(0, colon), as = colon == std::string::npos ? "" : text.substr(colon + 1);
  char* end = nullptr;
  cue.p = std::strtod(ps.c_str(), &end);
  KD_CHECK(!ps.empty() && *end == '\0' && cue.p >= 0 && cue.p <= 1,
           "chroma cue '{}': expected P or P:STRENGTH with the probability P in [0, 1], like 0.5 or 1:32", text);
  if (!as.empty()) {
    cue.strength = std::strtof(as.c_str(), &end);
    KD_CHECK(*end == '\0' && cue.strength > 0 && std::isfinite(cue.strength),
             "chroma cue '{}': STRENGTH must be a positive number of pixel levels, like 1:32", text);
  }
  return cue;
}

std::array<float, 3> chroma_offset(int64_t label, int64_t num_classes, float strength) {
  KD_CHECK(num_classes > 0 && label >= 0 && label < num_classes, "chroma_offset: class {} of {}", label, num_classes);
  // u = (0.587, -0.299, 0) / |.|, v = w x u / |.|, both orthogonal to w = (0.299, 0.587, 0.114)
  const double w[3] = {kLumaR, kLumaG, kLumaB};
  double u[3] = {w[1], -w[0], 0.0};
  double v[3] = {w[1] * u[2] - w[2] * u[1], w[2] * u[0] - w[0] * u[2], w[0] * u[1] - w[1] * u[0]};
  const double nu = std::sqrt(u[0] * u[0] + u[1] * u[1]), nv = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  const double theta = 2.0 * M_PI * (double)label / (double)num_classes;
  std::array<float, 3> d{};
  for (int c = 0; c < 3; ++c) d[c] = (float)(strength * (std::cos(theta) * u[c] / nu + std::sin(theta) * v[c] / nv));
  return d;
}

int64_t plant_chroma_cue(Dataset& d, const ChromaCue& cue) {
  KD_CHECK(d.channels() == 3, "the chroma cue is a colour offset and needs 3-channel images, but {} has {}",
           d.source, d.channels());
  const int64_t N = d.size(), K = d.num_classes();
  d.pixel_offset = zeros({N, 3});  // (N, 3)
  // the split is mixed into the seed, so train and test draw different images
  uint64_t seed = cue.seed * 1000003ull + (d.split == "test" ? 7919ull : 104729ull);
  Generator gen(seed);
  int64_t planted = 0;
  float* off = d.pixel_offset.data<float>();
  const int64_t* y = d.labels.data<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    if (gen.uniform() >= cue.p) continue;  // an image carries the cue with probability p
    const std::array<float, 3> delta = chroma_offset(y[i], K, cue.strength);
    for (int c = 0; c < 3; ++c) off[i * 3 + c] = delta[c];
    ++planted;
  }
  return planted;
}

}  // namespace kd::data
