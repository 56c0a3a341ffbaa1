// teacher_cache.cpp: see teacher_cache.h.
#include "distill/teacher_cache.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "train/progress.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/safetensors.h"

namespace fs = std::filesystem;

namespace kd::distill {

// ------------------------------------------------------------------ guides

Guide load_guide(const std::string& model, const std::string& weights, int64_t num_classes, const data::Dataset& like) {
  KD_CHECK(!model.empty(), "a teacher or assistant needs a model name (kdlab info --list)");
  KD_CHECK(!weights.empty(), "the {} teacher/assistant needs its weights: give the .safetensors file", model);
  KD_CHECK(fs::exists(weights), "weights file '{}' of the {} teacher/assistant not found", weights, model);
  nn::SafetensorsFile file = nn::load_safetensors(weights);
  if (file.metadata.count("num_classes")) {
    const int64_t k = std::stoll(file.metadata.at("num_classes"));
    KD_CHECK(k == num_classes, "'{}' was trained for {} classes but the data set has {}; use weights trained on this data set",
             weights, k, num_classes);
  }
  if (file.metadata.count("model"))
    KD_CHECK(file.metadata.at("model") == model, "'{}' holds a {} but the command names it a {}; give --teacher {}",
             weights, file.metadata.at("model"), model, file.metadata.at("model"));
  // the modality it was trained on: recorded by kdlab when not rgb; a kdlab file without it is rgb
  const std::string trained = file.metadata.count("input") ? file.metadata.at("input")
                              : file.metadata.count("model") ? "rgb" : "";
  KD_CHECK(trained.empty() || trained == like.modality.str(),
           "'{}' was trained on {} images but this guide is given {}; give --teacher-input {} (or MODEL:WEIGHTS:{})",
           weights, trained, like.modality.str(), trained, trained);
  Guide g;
  g.model = model;
  g.weights = weights;
  g.input = like.modality;
  g.net = nn::create_model(model, {num_classes, like.input_channels(), like.height(), 0});
  g.net->load_state_dict(file.tensors, /*strict=*/true);
  g.net->eval();
  for (auto& [name, p] : g.net->named_parameters()) p.requires_grad_(false);  // frozen
  return g;
}

Guide load_guide_spec(const std::string& spec, int64_t num_classes, const data::Dataset& like) {
  auto colon = spec.find(':');
  KD_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < spec.size(),
           "guide '{}' must look like MODEL:WEIGHTS[:MODALITY] (for example resnet20:runs/ta/model_best.safetensors)",
           spec);
  std::string weights = spec.substr(colon + 1);
  // a modality after the weights file: "...safetensors:edges" (lowres:K has a colon of its own)
  const std::string ext = ".safetensors:";
  const size_t at = weights.find(ext);
  if (at != std::string::npos) {
    const data::Modality m = data::parse_modality(weights.substr(at + ext.size()));
    return load_guide(spec.substr(0, colon), weights.substr(0, at + ext.size() - 1), num_classes,
                      data::with_modality(like, m));
  }
  return load_guide(spec.substr(0, colon), weights, num_classes, like);
}

data::TransformConfig guide_transform(const data::TransformConfig& tc, const data::Dataset& train, const Guide& guide) {
  data::TransformConfig g = tc;
  g.modality = guide.input;
  data::modality_normalization(guide.input, train.mean, train.std, g.mean, g.std);
  return g;
}

// ------------------------------------------------------------------ fingerprint

// FNV-1a, 64 bit: h = (h xor byte) * 1099511628211, from 14695981039346656037.
static uint64_t fnv1a(const void* data, size_t n, uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

uint64_t fnv1a_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KD_CHECK(f.good(), "cannot read '{}'", path);
  uint64_t h = 14695981039346656037ull;
  std::vector<char> buf(1 << 16);
  while (f) {
    f.read(buf.data(), (std::streamsize)buf.size());
    h = fnv1a(buf.data(), (size_t)f.gcount(), h);
  }
  return h;
}

static std::string fingerprint(const Guide& guide, const data::Dataset& train, const data::TransformConfig& tc,
                               int64_t views, uint64_t seed, bool with_pooled) {
  uint64_t h = 14695981039346656037ull;
  auto mix_text = [&](const std::string& s) { h = fnv1a(s.data(), s.size(), h); };
  mix_text(guide.model);
  const uint64_t w = fnv1a_file(guide.weights);
  h = fnv1a(&w, sizeof w, h);
  Tensor images = train.images.contiguous(), labels = train.labels.contiguous();
  h = fnv1a(images.data<uint8_t>(), (size_t)images.numel(), h);
  h = fnv1a(labels.data<int64_t>(), (size_t)labels.numel() * sizeof(int64_t), h);
  mix_text(fmt::format("mean {} std {} pad {} flip {} strong {} cutout {} views {} seed {}", fmt::join(tc.mean, ","),
                       fmt::join(tc.std, ","), tc.crop_padding, tc.hflip, tc.strong_ops, tc.cutout_size, views, seed));
  // cross-modal runs: the guide's modality and the planted offsets (nothing added otherwise, so the
  // caches of earlier runs keep their names)
  if (!tc.modality.is_rgb()) mix_text("modality " + tc.modality.str());
  if (train.pixel_offset.defined()) {
    Tensor off = train.pixel_offset.contiguous();
    h = fnv1a(off.data<float>(), (size_t)off.numel() * sizeof(float), h);
  }
  if (with_pooled) mix_text("pooled");  // a file that also holds the pooled features (older files do not)
  return fmt::format("{:016x}", h);
}

// The file of a guide's cache: DIR/<model>-<fingerprint>.safetensors. Every setting gets its
// own file, so caches of different teachers, data or settings live side by side and none is
// ever overwritten by another; runs with the same teacher and data share one.
static std::string guide_file(const std::string& dir, const Guide& guide, const std::string& fp) {
  if (dir.empty()) return "";
  return (fs::path(dir) / fmt::format("{}-{}.safetensors", guide.model, fp)).string();
}

// The V views of every image: drawn in image order, V per image, from one seeded generator.
static Tensor draw_views(const data::Dataset& train, const data::TransformConfig& tc, int64_t V, uint64_t seed) {
  const int64_t N = train.size();
  Tensor views = empty({N, V, 4}, DType::i64);  // (N, V, 4)
  int64_t* vp = views.data<int64_t>();
  Generator gen(seed);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t v = 0; v < V; ++v) {
      data::AugParams a = data::draw_aug_params(tc, train.height(), train.width(), gen);
      int64_t* row = vp + (i * V + v) * 4;
      row[0] = a.pad;
      row[1] = a.crop_top;
      row[2] = a.crop_left;
      row[3] = a.flipped ? 1 : 0;
    }
  return views;
}

// ------------------------------------------------------------------ build / load

// A guide's cache file loaded: its logits (N, V, K), and with `pooled` its pooled features
// (N, V, D) into *pooled; an undefined tensor when the file is absent or its fingerprint is not
// `fp` (then the caller builds the cache again).
static Tensor load_cache_file(const std::string& file, const std::string& fp, const Tensor& views, Tensor* pooled) {
  if (file.empty() || !fs::exists(file)) return Tensor();
  nn::SafetensorsFile f = nn::load_safetensors(file);
  auto it = f.metadata.find("fingerprint");
  if (it == f.metadata.end() || it->second != fp) {
    fmt::print("teacher cache: {} does not hold what its name says (a corrupt or renamed file); rebuilding it\n", file);
    return Tensor();
  }
  const int64_t N = views.size(0), V = views.size(1);
  auto m = nn::to_map(f.tensors);
  KD_CHECK(m.count("views") && m.count("logits"), "teacher cache '{}' lacks its 'views' or 'logits'; delete it", file);
  Tensor logits = m.at("logits");
  KD_CHECK(m.at("views").shape() == views.shape() && logits.dim() == 3 && logits.size(0) == N && logits.size(1) == V,
           "teacher cache '{}' has the wrong shapes ({}); delete it", file, shape_str(logits.shape()));
  KD_CHECK(max(abs(sub(m.at("views").to(DType::f32), views.to(DType::f32)))).item() == 0.0,
           "teacher cache '{}' holds other views than these; delete it", file);
  if (pooled) {
    KD_CHECK(m.count("pooled") && m.at("pooled").dim() == 3 && m.at("pooled").size(0) == N &&
                 m.at("pooled").size(1) == V,
             "teacher cache '{}' lacks its 'pooled' features (N, V, D); delete it", file);
    *pooled = m.at("pooled");
  }
  return logits;
}

// One guide's logits (N, V, K) on the views, and with `pooled` also its pooled features
// (N, V, D) into *pooled: loaded from its file when the fingerprint matches, else computed (eval
// mode, no gradient, batches of images of one view) and saved there. A run that needs only the
// logits also reads them from the file with pooled features of the same settings (a superset,
// built by RKD, PKT, CC or HCD), so KD after one of those does not run the teacher again.
static Tensor guide_logits(const Guide& guide, const data::Dataset& train, const data::TransformConfig& tc_all,
                           const Tensor& views, uint64_t seed, const std::string& dir, int64_t batch_size,
                           bool& built, Tensor* pooled = nullptr) {
  const data::TransformConfig tc = guide_transform(tc_all, train, guide);  // what this guide sees
  const int64_t N = train.size(), C = train.channels(), H = train.height(), W = train.width(), V = views.size(1);
  const int64_t C2 = data::transform_channels(tc, C);
  const std::string fp = fingerprint(guide, train, tc, V, seed, pooled != nullptr);
  const std::string file = guide_file(dir, guide, fp);
  Tensor cached = load_cache_file(file, fp, views, pooled);
  std::string from = file;
  if (!cached.defined() && !pooled) {  // the logits of a file that also holds the pooled features
    const std::string fp_pooled = fingerprint(guide, train, tc, V, seed, /*with_pooled=*/true);
    from = guide_file(dir, guide, fp_pooled);
    cached = load_cache_file(from, fp_pooled, views, nullptr);
  }
  if (cached.defined()) {
    fmt::print("teacher cache: loaded {} ({} from {}, {} views per image)\n", from, guide.model, guide.weights, V);
    return cached;
  }
  NoGradGuard no_grad;
  guide.net->eval();
  auto t0 = std::chrono::steady_clock::now();
  const Tensor images = train.images.contiguous();  // (N, C, H, W) uint8
  const uint8_t* src = images.data<uint8_t>();
  const int64_t* vp = views.data<int64_t>();
  const int64_t per = C * H * W;
  Tensor logits;  // (N, V, K)
  Tensor feats;   // (N, V, D) with `pooled`
  const int64_t batches_per_view = (N + batch_size - 1) / batch_size;
  train::Progress progress(V * batches_per_view, "teacher cache (" + guide.model + ")", 50);
  int64_t step = 0, done_images = 0;
  for (int64_t v = 0; v < V; ++v)
    for (int64_t start = 0; start < N; start += batch_size) {
      const int64_t B = std::min(batch_size, N - start);
      Tensor x = empty({B, C2, H, W});  // (B, C2, H, W): view v of images start..start+B, the guide's modality
      for (int64_t b = 0; b < B; ++b) {
        const int64_t* row = vp + ((start + b) * V + v) * 4;
        data::AugParams a;
        a.pad = (int)row[0];
        a.crop_top = (int)row[1];
        a.crop_left = (int)row[2];
        a.flipped = row[3] != 0;
        data::apply_transform(src + (start + b) * per, C, H, W, a, tc, x.data<float>() + b * C2 * H * W,
                              train.offset_of(start + b));
      }
      nn::ModelOutput out = guide.net->forward(x);
      Tensor z = out.logits.contiguous();  // (B, K)
      if (!logits.defined()) logits = empty({N, V, z.size(1)});
      if (pooled) {
        KD_CHECK(out.pooled.defined(), "teacher cache: {} has no pooled feature to store", guide.model);
        Tensor p = out.pooled.contiguous();  // (B, D)
        if (!feats.defined()) feats = empty({N, V, p.size(1)});
        const int64_t D = feats.size(2);
        for (int64_t b = 0; b < B; ++b)
          std::memcpy(feats.data<float>() + ((start + b) * V + v) * D, p.data<float>() + b * D, sizeof(float) * D);
      }
      const int64_t K = logits.size(2);
      KD_CHECK(z.size(1) == K, "teacher cache: {} gives {} classes, expected {}", guide.model, z.size(1), K);
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(logits.data<float>() + ((start + b) * V + v) * K, z.data<float>() + b * K, sizeof(float) * K);
      done_images += B;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progress.update(++step, -1.0, -1.0, done_images / std::max(secs, 1e-9));
    }
  progress.finish();
  built = true;
  if (!file.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    KD_CHECK(!ec, "cannot create the teacher cache directory '{}': {}", dir, ec.message());
    std::vector<std::pair<std::string, Tensor>> tensors{{"views", views}, {"logits", logits}};
    if (pooled) tensors.push_back({"pooled", feats});
    nn::save_safetensors(file, tensors,
                         {{"fingerprint", fp}, {"views", std::to_string(V)}, {"seed", std::to_string(seed)},
                          {"guide", guide.model + ":" + guide.weights}});
  }
  fmt::print("teacher cache: {} views x {} images of {} in {:.1f} s{}\n", V, N, guide.model,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
             file.empty() ? "" : ", saved to " + file);
  if (pooled) *pooled = feats;
  return logits;
}

TeacherCache TeacherCache::build_or_load(const std::vector<Guide>& guides, const data::Dataset& train,
                                         const data::TransformConfig& tc, int64_t V, uint64_t seed,
                                         const std::string& dir, int64_t batch_size, bool with_pooled) {
  KD_CHECK(!guides.empty(), "teacher cache: no teacher to cache");
  KD_CHECK(V >= 1, "teacher_cache_views must be >= 1, got {}", V);
  KD_CHECK(tc.strong_ops == 0 && tc.cutout_size == 0 && tc.color_jitter == 0,
           "the teacher cache stores crop + flip views only; turn off strong augmentation and color_jitter, or the cache");
  auto t0 = std::chrono::steady_clock::now();
  TeacherCache cache;
  cache.views_ = draw_views(train, tc, V, seed);  // (N, V, 4)
  std::vector<Tensor> per_guide;
  for (int64_t g = 0; g < (int64_t)guides.size(); ++g) {
    bool built = false;
    // the first guide (the teacher) also stores its pooled features when asked
    Tensor* pooled = (with_pooled && g == 0) ? &cache.pooled_ : nullptr;
    per_guide.push_back(guide_logits(guides[g], train, tc, cache.views_, seed, dir, batch_size, built, pooled));  // (N, V, K)
    cache.built_now_ = cache.built_now_ || built;
    KD_CHECK(per_guide.back().size(2) == per_guide[0].size(2), "teacher cache: {} has {} classes but the teacher has {}",
             guides[g].model, per_guide.back().size(2), per_guide[0].size(2));
  }
  cache.logits_ = stack(per_guide, 0).contiguous();  // (G, N, V, K)
  cache.build_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cache;
}

// ------------------------------------------------------------------ lookups

data::AugParams TeacherCache::view(int64_t i, int64_t v) const {
  const int64_t V = views_.size(1);
  KD_CHECK(i >= 0 && i < views_.size(0) && v >= 0 && v < V, "teacher cache: no view {} of image {}", v, i);
  const int64_t* row = views_.data<int64_t>() + (i * V + v) * 4;
  data::AugParams a;
  a.pad = (int)row[0];
  a.crop_top = (int)row[1];
  a.crop_left = (int)row[2];
  a.flipped = row[3] != 0;
  a.view = (int)v;
  return a;
}

data::AugParams TeacherCache::choose(int64_t i, Generator& gen) const {
  return view(i, gen.randint(0, views_.size(1)));
}

Tensor TeacherCache::logits(int64_t g, const data::Batch& batch) const {
  const int64_t B = batch.size(), N = logits_.size(1), V = logits_.size(2), K = logits_.size(3);
  KD_CHECK(g >= 0 && g < logits_.size(0), "teacher cache: no guide {}", g);
  KD_CHECK((int64_t)batch.aug.size() == B, "teacher cache: the batch carries no augmentation record");
  Tensor z = empty({B, K});  // (B, K)
  const int64_t* idx = batch.indices.data<int64_t>();
  const float* lp = logits_.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    const int v = batch.aug[b].view;
    KD_CHECK(v >= 0 && v < V && idx[b] >= 0 && idx[b] < N,
             "teacher cache: image {} of the batch was not augmented from the cache (view {}); the loader must use "
             "TeacherCache::choose",
             b, v);
    std::memcpy(z.data<float>() + b * K, lp + ((g * N + idx[b]) * V + v) * K, sizeof(float) * K);
  }
  return z;
}

Tensor TeacherCache::pooled(const data::Batch& batch) const {
  KD_CHECK(pooled_.defined(), "teacher cache: built without the teacher's pooled features");
  const int64_t B = batch.size(), N = pooled_.size(0), V = pooled_.size(1), D = pooled_.size(2);
  KD_CHECK((int64_t)batch.aug.size() == B, "teacher cache: the batch carries no augmentation record");
  Tensor f = empty({B, D});  // (B, D)
  const int64_t* idx = batch.indices.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int v = batch.aug[b].view;
    KD_CHECK(v >= 0 && v < V && idx[b] >= 0 && idx[b] < N,
             "teacher cache: image {} of the batch was not augmented from the cache (view {})", b, v);
    std::memcpy(f.data<float>() + b * D, pooled_.data<float>() + (idx[b] * V + v) * D, sizeof(float) * D);
  }
  return f;
}

}  // namespace kd::distill
