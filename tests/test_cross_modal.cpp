// Cross-modal distillation (issue #30): the modality transforms (golden values from
// tests/reference/gen_cross_modal.py), paired views that share their geometry exactly, the chroma
// cue that luminance cannot see, supervision transfer (golden values and invariants), the teacher
// cache keyed by the teacher's modality, and cross-modal runs end to end.
#include <filesystem>
#include <fstream>

#include "datasets/loader.h"
#include "datasets/modality.h"
#include "distill/cross_modal/supervision_transfer.h"
#include "distill/teacher_cache.h"
#include "distill_run_test_util.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "test_util.h"
#include "nn/safetensors.h"
#include "train/run_recorder.h"

using namespace kd;
using namespace kd::data;
namespace fs = std::filesystem;
using V = std::vector<Tensor>;
using nlohmann::json;

namespace {

V golden_modality(const V& in, const json& p) {
  std::string kind = p["kind"].get<std::string>();
  if (kind == "lowres") kind += ":" + std::to_string(p["k"].get<int64_t>());
  return {apply_modality(in[0], parse_modality(kind))};
}

V golden_st(const V& in, const json& p) {
  const std::string side = p["side"].get<std::string>();
  distill::SupervisionTransferOptions o;
  o.connector = side;
  o.feat_weight = p["w"].get<double>();
  if (side == "identity") return {distill::supervision_transfer_loss(in[0], in[1], nullptr, false, o).total};
  Generator gen(0);
  nn::Conv2d conv(in[2].size(1), in[2].size(0), 1, gen);
  conv.weight = in[2];  // the fixture's tensors themselves, so their gradients are compared
  conv.bias = in[3];
  return {distill::supervision_transfer_loss(in[0], in[1], &conv, side == "teacher", o).total};
}

// A 3-channel data set of n random images (uint8), one class per image mod K.
Dataset random_images(int64_t n, int64_t K, int64_t H, int64_t W, uint64_t seed) {
  Dataset d;
  d.name = "random";
  d.split = "train";
  d.source = "test";
  d.images = empty({n, 3, H, W}, DType::u8);
  d.labels = empty({n}, DType::i64);
  Generator gen(seed);
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data<uint8_t>()[i] = (uint8_t)gen.randint(0, 256);
  for (int64_t i = 0; i < n; ++i) d.labels.data<int64_t>()[i] = i % K;
  for (int64_t k = 0; k < K; ++k) d.class_names.push_back("c" + std::to_string(k));
  d.mean = {0.5f, 0.4f, 0.3f};
  d.std = {0.25f, 0.2f, 0.3f};
  validate(d);
  return d;
}

// Normalised values back to pixel units: x * 255 * std + 255 * mean, per channel.
Tensor to_pixels(const Tensor& x, const TransformConfig& tc) {
  Tensor out = x.contiguous().clone();
  const int64_t C = x.size(x.dim() - 3), hw = x.size(x.dim() - 2) * x.size(x.dim() - 1);
  const int64_t n = x.numel() / (C * hw);
  float* p = out.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < hw; ++k) {
        float& v = p[(i * C + c) * hw + k];
        v = (v * tc.std[c] + tc.mean[c]) * 255.0f;
      }
  return out;
}

}  // namespace

TEST_CASE("modalities: golden values from the reference (gray, Sobel edges, lowres, rgb+edges) and supervision transfer") {
  kdtest::GoldenTable table = {{"modality", golden_modality}, {"st", golden_st}};
  CHECK(kdtest::run_golden_file("cross_modal.json", table) == 12);
}

TEST_CASE("modalities: names, channels, normalisation and the errors") {
  CHECK(parse_modality("").is_rgb());
  CHECK(parse_modality("lowres:8").size == 8);
  CHECK(parse_modality("lowres:8").str() == "lowres:8");
  CHECK(parse_modality("rgb+edges").str() == "rgb+edges");
  CHECK(modality_channels(parse_modality("gray"), 3) == 1);
  CHECK(modality_channels(parse_modality("rgb+edges"), 3) == 4);
  CHECK(modality_channels(parse_modality("lowres:4"), 3) == 3);
  CHECK(modality_channels(parse_modality("edges"), 1) == 1);
  CHECK_THROWS_WITH_SUBSTR(parse_modality("depth"), "known modalities are");
  CHECK_THROWS_WITH_SUBSTR(parse_modality("lowres:x"), "lowres:K");
  CHECK_THROWS_WITH_SUBSTR(modality_channels(parse_modality("gray"), 4), "1- or 3-channel");
  std::vector<float> m, s;
  modality_normalization(parse_modality("gray"), {0.5f, 0.4f, 0.3f}, {0.2f, 0.2f, 0.1f}, m, s);
  REQUIRE(m.size() == 1);
  CHECK(m[0] == doctest::Approx(0.299 * 0.5 + 0.587 * 0.4 + 0.114 * 0.3));
  CHECK(s[0] == doctest::Approx(0.299 * 0.2 + 0.587 * 0.2 + 0.114 * 0.1));
  modality_normalization(parse_modality("rgb+edges"), {0.5f, 0.4f, 0.3f}, {0.2f, 0.2f, 0.1f}, m, s);
  REQUIRE(m.size() == 4);
  CHECK(m[3] == 0.0f);
  CHECK(s[3] == doctest::Approx(s[0] * 0 + (0.299 * 0.2 + 0.587 * 0.2 + 0.114 * 0.1)));
  // a modality the images cannot give is refused when the data set is given it
  Dataset d = random_images(4, 2, 8, 8, 1);
  CHECK(with_modality(d, parse_modality("gray")).input_channels() == 1);
  CHECK(eval_images(with_modality(d, parse_modality("rgb+edges"))).shape() == Shape{4, 4, 8, 8});
}

TEST_CASE("paired views share their geometry exactly: the gray view is the luminance of the rgb view, pixel for pixel") {
  Dataset d = random_images(48, 3, 12, 10, 2);
  const Dataset gray = with_modality(d, parse_modality("gray"));
  LoaderOptions lo;
  lo.batch_size = 16;
  lo.seed = 5;
  lo.prefetch = false;
  lo.transform = train_transform(gray);  // the student: gray, crop (padding 1) + flip
  lo.transform.crop_padding = 3;
  TransformConfig rgb_view = train_transform(d);  // the teacher's view: rgb
  lo.views = {rgb_view};
  DataLoader loader(gray, lo);
  int flipped = 0, shifted = 0;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    Batch b;
    while (loader.next(b)) {
      REQUIRE(b.views.size() == 1);
      REQUIRE(b.images.shape() == Shape{b.size(), 1, 12, 10});
      REQUIRE(b.views[0].shape() == Shape{b.size(), 3, 12, 10});
      const Tensor g = to_pixels(b.images, lo.transform);    // (B, 1, H, W) pixel units
      const Tensor c = to_pixels(b.views[0], rgb_view);      // (B, 3, H, W)
      Tensor y = apply_modality(c, parse_modality("gray"));  // Y of the rgb view
      CHECK(max(abs(sub(y, g))).item() < 2e-3);  // float rounding of the normalisation only
      for (const AugParams& a : b.aug) {
        flipped += a.flipped;
        shifted += (a.crop_top != 3 || a.crop_left != 3);
      }
    }
  }
  CHECK(flipped > 10);  // the test saw flips and shifted crops (the draws the views share)
  CHECK(shifted > 20);
}

TEST_CASE("paired views with independent photometric jitter: the colours differ, the geometry does not") {
  Dataset d = random_images(8, 2, 9, 9, 3);
  // one bright marker pixel per image at a position of its own, the rest dark
  uint8_t* px = d.images.data<uint8_t>();
  std::fill(px, px + d.images.numel(), (uint8_t)20);
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t c = 0; c < 3; ++c) px[((i * 3 + c) * 9 + (i % 9)) * 9 + (2 * i) % 9] = 250;
  LoaderOptions lo;
  lo.batch_size = 8;
  lo.prefetch = false;
  lo.transform = train_transform(d);
  lo.transform.crop_padding = 2;
  lo.transform.color_jitter = 0.4f;
  TransformConfig edges = train_transform(with_modality(d, parse_modality("gray")));
  edges.color_jitter = 0.4f;
  lo.views = {edges};
  lo.independent_photometric = true;
  DataLoader loader(d, lo);
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  int differs = 0;
  for (int64_t i = 0; i < b.size(); ++i) {
    const Tensor rgb = to_pixels(b.images.slice(0, i, i + 1), lo.transform);  // (1, 3, H, W)
    const Tensor gray = to_pixels(b.views[0].slice(0, i, i + 1), edges);     // (1, 1, H, W)
    const Tensor y = apply_modality(rgb, parse_modality("gray"));
    // the marker lands on the same pixel in both views
    CHECK(argmax(y.reshape({y.numel()}), 0).item() == argmax(gray.reshape({gray.numel()}), 0).item());
    differs += max(abs(sub(y, gray))).item() > 1.0;  // the jitter was drawn again for the view
  }
  CHECK(differs >= 6);
}

TEST_CASE("the chroma cue: invisible in luminance to float precision, visible in colour, class by class") {
  Dataset d = random_images(60, 6, 8, 8, 4);
  CHECK(plant_chroma_cue(d, parse_chroma_cue("1:40")) == 60);
  for (int64_t k = 0; k < 6; ++k) {
    const auto delta = chroma_offset(k, 6, 40.0f);
    CHECK(std::abs(kLumaR * delta[0] + kLumaG * delta[1] + kLumaB * delta[2]) < 1e-5);
    CHECK(std::sqrt(delta[0] * delta[0] + delta[1] * delta[1] + delta[2] * delta[2]) == doctest::Approx(40.0).epsilon(1e-5));
  }
  CHECK(chroma_offset(1, 6, 40.0f) != chroma_offset(2, 6, 40.0f));  // one colour per class
  // through the whole transform: the gray view of a cued image equals that of the clean image
  Dataset clean = d;
  clean.pixel_offset = Tensor();
  const Dataset g_cued = with_modality(d, parse_modality("gray")), g_clean = with_modality(clean, parse_modality("gray"));
  const TransformConfig tg = eval_transform(g_cued);
  const Tensor a = to_pixels(eval_images(g_cued), tg), b = to_pixels(eval_images(g_clean), tg);
  CHECK(max(abs(sub(a, b))).item() < 1e-4);  // pixel units in [0, 255]: float precision
  // ... and the rgb view carries the class's offset
  const TransformConfig tc = eval_transform(d);
  const Tensor ca = to_pixels(eval_images(d), tc), cb = to_pixels(eval_images(clean), tc);
  const auto delta3 = chroma_offset(d.labels.data<int64_t>()[3], 6, 40.0f);
  for (int64_t c = 0; c < 3; ++c)
    CHECK(sub(ca, cb).at({3, c, 4, 4}) == doctest::Approx(delta3[c]).epsilon(1e-3));
  // p = 0.5: about half the images, the same ones every time (seeded), refusals
  Dataset half = random_images(400, 4, 4, 4, 5);
  const int64_t n = plant_chroma_cue(half, parse_chroma_cue("0.5"));
  CHECK(n > 150);
  CHECK(n < 250);
  Dataset again = random_images(400, 4, 4, 4, 5);
  plant_chroma_cue(again, parse_chroma_cue("0.5"));
  CHECK(max(abs(sub(half.pixel_offset, again.pixel_offset))).item() == 0.0);
  CHECK_THROWS_WITH_SUBSTR(parse_chroma_cue("1.5"), "[0, 1]");
  CHECK_THROWS_WITH_SUBSTR(parse_chroma_cue("0.5:-3"), "positive");
  // subsets keep each image's offset
  const Dataset sub3 = subset(half, {7, 3});
  CHECK(sub3.offset_of(1)[0] == half.offset_of(3)[0]);
}

TEST_CASE("supervision transfer: connectors, invariants and errors") {
  Generator gen(1);
  const Tensor ft = randn({2, 4, 3, 3}, gen);
  distill::SupervisionTransferOptions o;
  // identity: zero exactly when the student reproduces the teacher's map, and w scales it
  CHECK(distill::supervision_transfer_loss(ft.clone(), ft, nullptr, false, o).total.item() == 0.0);
  const Tensor fs = randn({2, 4, 3, 3}, gen);
  o.feat_weight = 3.0;
  const double l3 = distill::supervision_transfer_loss(fs, ft, nullptr, false, o).total.item();
  o.feat_weight = 1.0;
  CHECK(l3 == doctest::Approx(3.0 * distill::supervision_transfer_loss(fs, ft, nullptr, false, o).total.item()));
  // the distiller: auto picks identity for equal shapes, the teacher-side connector otherwise
  distill::SupervisionTransferDistiller same(o, {1, 4, 3, 3}, {1, 4, 3, 3}, 0);
  CHECK(same.connector_side() == "identity");
  CHECK(same.named_parameters().empty());
  distill::SupervisionTransferDistiller wider(o, {1, 4, 3, 3}, {1, 6, 3, 3}, 0);
  CHECK(wider.connector_side() == "teacher");
  CHECK(wider.connector()->weight.shape() == Shape{4, 6, 1, 1});
  // no CE by default (the unlabelled stage), CE with a weight when asked
  distill::BatchInfo info;
  CHECK_FALSE(wider.ce_weight(info).has_value());
  o.ce_weight = 0.5;
  distill::SupervisionTransferDistiller labelled(o, {1, 4, 3, 3}, {1, 6, 3, 3}, 0);
  CHECK(labelled.ce_weight(info).value() == 0.5);
  o.connector = "identity";
  CHECK_THROWS_WITH_SUBSTR(distill::SupervisionTransferDistiller(o, {1, 4, 3, 3}, {1, 6, 3, 3}, 0), "connector=teacher or student");
  o.connector = "auto";
  CHECK_THROWS_WITH_SUBSTR(distill::SupervisionTransferDistiller(o, {1, 4, 3, 3}, {1, 4, 6, 6}, 0), "same spatial size");
  o.connector = "sideways";
  CHECK_THROWS_WITH_SUBSTR(distill::SupervisionTransferDistiller(o, {1, 4, 3, 3}, {1, 4, 3, 3}, 0), "auto, teacher, student, identity");
}

TEST_CASE("cross-modal runs: a gray student from an rgb teacher, the teacher cache keyed by modality, ST end to end") {
  set_num_threads(1);
  const std::string rgb_teacher = kdtest::tiny_teacher("resnet8");
  train::TrainConfig c = kdtest::tiny_config();
  c.epochs = 1;
  c.method = "kd";
  c.teacher = "resnet8";
  c.teacher_weights = rgb_teacher;
  c.input = "gray";
  c.teacher_input = "rgb";

  SUBCASE("the student sees gray, the teacher rgb, on the same crops; cached logits are the teacher's on rgb") {
    {  // without the cache, every batch carries the teacher's rgb view for it
      distill::DistillSetup plain;
      train::Run r = distill::prepare_distill_run(c, kdtest::temp_path("xm_plain"), "test", plain);
      CHECK(plain.guide_view[0] == 0);
      REQUIRE(r.views.size() == 1);
      CHECK(r.views[0].is_rgb());
    }
    const std::string cache_dir = kdtest::temp_path("xm_cache");
    fs::remove_all(cache_dir);
    c.teacher_cache = true;
    c.teacher_cache_dir = cache_dir;
    c.teacher_cache_views = 2;
    distill::DistillSetup setup;
    const std::string run_dir = kdtest::temp_path("xm_kd");
    train::Run run = distill::prepare_distill_run(c, run_dir, "test", setup);
    CHECK(run.train_set.input_channels() == 1);
    CHECK(setup.guides[0].input.is_rgb());
    // the cache serves the teacher's logits on its rgb view: the batches carry no paired view
    CHECK(setup.guide_view[0] == -1);
    CHECK(run.views.empty());
    // the cache's logits of a batch are the teacher's forward pass on the rgb view of those crops
    data::LoaderOptions lo;
    lo.batch_size = 16;
    lo.prefetch = false;
    lo.transform = train::training_transform(c, run.train_set);
    lo.views = {train::training_transform(c, data::with_modality(run.train_set, setup.guides[0].input))};
    lo.choose_aug = run.choose_aug;
    data::DataLoader loader(run.train_set, lo);
    loader.start_epoch(0);
    data::Batch b;
    REQUIRE(loader.next(b));
    {
      NoGradGuard ng;
      const Tensor direct = setup.guides[0].net->forward(b.views[0]).logits;
      CHECK(max(abs(sub(direct, setup.cache->logits(0, b)))).item() < 1e-4);
    }
    // a gray teacher's cache is another file: the modality is part of the key
    const size_t files = std::distance(fs::directory_iterator(cache_dir), fs::directory_iterator{});
    CHECK(files == 1);
    const train::RunSummary s = train::run_training(run, false);
    CHECK_FALSE(s.interrupted);
    CHECK(s.best_epoch == 1);
    const json cfg = json::parse(std::ifstream(run_dir + "/config.json"));
    CHECK(cfg["distillation"]["guides"][0]["input"] == "rgb");
    CHECK(cfg["input"] == "gray");
  }

  SUBCASE("weights trained on gray record it, and a guide given another modality is refused with the fix") {
    train::TrainConfig t = kdtest::tiny_config();
    t.model = "resnet8";
    t.epochs = 1;
    t.input = "gray";
    const std::string dir = kdtest::temp_path("xm_gray_teacher");
    train::Run run = train::prepare_run(t, dir, "test");
    CHECK(run.model->forward(data::eval_images(run.test_set, 2)).logits.size(0) == 2);
    train::run_training(run, false);
    const nn::SafetensorsFile f = nn::load_safetensors(dir + "/model_last.safetensors");
    CHECK(f.metadata.at("input") == "gray");
    c.teacher_weights = dir + "/model_last.safetensors";
    c.teacher_input = "rgb";
    distill::DistillSetup setup;
    CHECK_THROWS_WITH_SUBSTR(distill::prepare_distill_run(c, kdtest::temp_path("xm_bad"), "test", setup), "--teacher-input gray");
    c.teacher_input = "gray";  // the same modality as the student: no paired view needed
    train::Run ok = distill::prepare_distill_run(c, kdtest::temp_path("xm_same"), "test", setup);
    CHECK(ok.views.empty());
    CHECK(setup.guide_view[0] == -1);
  }

  SUBCASE("supervision transfer trains the student and its connector from the rgb teacher's map, without labels") {
    c.method = "supervision_transfer";
    c.method_params = {{"layer", "f2"}};
    c.model = "resnet8";
    distill::DistillSetup setup;
    train::Run run = distill::prepare_distill_run(c, kdtest::temp_path("xm_st"), "test", setup);
    auto* st = dynamic_cast<distill::SupervisionTransferDistiller*>(setup.distiller.get());
    REQUIRE(st);
    CHECK(st->connector_side() == "identity");  // resnet8 -> resnet8: the same maps
    // a different label on every image changes nothing: the loss reads no labels
    data::Batch b;
    data::LoaderOptions lo;
    lo.batch_size = 8;
    lo.prefetch = false;
    lo.transform = data::eval_transform(run.train_set);
    lo.views = {data::eval_transform(data::with_modality(run.train_set, run.views[0]))};
    data::DataLoader loader(run.train_set, lo);
    loader.start_epoch(0);
    REQUIRE(loader.next(b));
    NoGradGuard ng;
    run.model->eval();
    const nn::ModelOutput out = run.model->forward(b.images);
    const double l1 = run.loss->compute(out, b, 0).total.item();
    b.labels = b.labels.clone();
    for (int64_t i = 0; i < b.size(); ++i) b.labels.data<int64_t>()[i] = (b.labels.data<int64_t>()[i] + 1) % 4;
    CHECK(run.loss->compute(out, b, 0).total.item() == l1);
  }
}

// ---- the command line: kdlab train --input, kdlab distill --teacher-input / --student-input,
// kdlab eval reading the modality from the weights, recipe keys

static int run_cli(const std::string& args, std::string* out = nullptr) {
  const std::string log = kdtest::temp_path("xm_cli") + ".log";
  const int rc = std::system((std::string(KDLAB_BIN) + " " + args + " > " + log + " 2>&1").c_str());
  if (out) {
    std::ifstream f(log);
    *out = std::string(std::istreambuf_iterator<char>(f), {});
  }
  return rc;
}

TEST_CASE("kdlab train --input edges, distill --teacher-input edges --student-input gray, eval reads the modality") {
  const std::string dir = kdtest::temp_path("xm_cli_runs");
  const std::string data = " --dataset synthetic --train-limit 96 --test-limit 48 --threads 1 --epochs 1 --batch-size 32";
  std::string log;
  REQUIRE(run_cli("train --model resnet8" + data + " --input edges --out " + dir + "/t", &log) == 0);
  CHECK(log.find("seen as edges (1 channels)") != std::string::npos);
  // eval: the weights say edges; --json reports it; another modality is refused with the fix
  REQUIRE(run_cli("eval --model resnet8 --weights " + dir + "/t/model_last.safetensors --dataset synthetic --limit 48 "
                  "--json", &log) == 0);
  CHECK(log.find("\"input\":\"edges\"") != std::string::npos);
  CHECK(run_cli("eval --model resnet8 --weights " + dir + "/t/model_last.safetensors --dataset synthetic --input rgb",
                &log) != 0);
  CHECK(log.find("drop --input (or give --input edges)") != std::string::npos);
  // distill: the edges teacher on its own view of every batch, a gray student
  REQUIRE(run_cli("distill --student resnet8 --teacher resnet8 --teacher-weights " + dir + "/t/model_last.safetensors" +
                  data + " --teacher-input edges --student-input gray --method kd --teacher-cache --out " + dir + "/s",
                  &log) == 0);
  const json cfg = json::parse(std::ifstream(dir + "/s/config.json"));
  CHECK(cfg["config"]["input"] == "gray");
  CHECK(cfg["config"]["teacher_input"] == "edges");
  CHECK(cfg["distillation"]["guides"][0]["input"] == "edges");
  // an rgb teacher name for edges weights: refused with the fix
  CHECK(run_cli("distill --student resnet8 --teacher resnet8 --teacher-weights " + dir + "/t/model_last.safetensors" +
                data + " --student-input gray --method kd --out " + dir + "/bad", &log) != 0);
  CHECK(log.find("--teacher-input edges") != std::string::npos);
  // unknown modality on the command line
  CHECK(run_cli("train --model resnet8" + data + " --input depth --out " + dir + "/x", &log) != 0);
  CHECK(log.find("known modalities are") != std::string::npos);
}

TEST_CASE("recipe keys: input, teacher_input, chroma_cue, color_jitter, paired_photometric") {
  train::TrainConfig c;
  train::parse_recipe(R"({"input": "lowres:8", "teacher_input": "rgb+edges", "chroma_cue": "0.5:20",
                          "color_jitter": 0.3, "paired_photometric": "independent"})", c, "test");
  CHECK(c.input == "lowres:8");
  CHECK(c.teacher_input == "rgb+edges");
  CHECK(c.chroma_cue == "0.5:20");
  CHECK(c.color_jitter == 0.3);
  CHECK(c.paired_photometric == "independent");
  CHECK(c.to_json()["teacher_input"] == "rgb+edges");
}
