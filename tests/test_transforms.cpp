// Transforms: crop / flip / colour / translate / cutout against torchvision semantics written
// out in plain torch (tests/reference/gen_transforms.py), rotation against hand-computed pixels,
// and the drawing of parameters (ranges, order, reproducibility).
#include <set>

#include "datasets/dataset.h"
#include "datasets/transforms.h"
#include "test_util.h"

using namespace kd;
using namespace kd::data;
using kdtest::json;

static StrongOp op_from_name(const std::string& name) {
  for (int k = 0; k < kNumStrongOps; ++k)
    if (name == strong_op_name((StrongOp)k)) return (StrongOp)k;
  throw Error("unknown strong op " + name);
}

// A uint8 image (C, H, W) with pixel (c, y, x) = (c * 100 + y * 10 + x) % 256.
static Tensor ramp_image(int64_t C, int64_t H, int64_t W) {
  std::vector<uint8_t> v;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) v.push_back((uint8_t)((c * 100 + y * 10 + x) % 256));
  return from_vector(v, {C, H, W});
}

static TransformConfig plain_config(int64_t C) {
  TransformConfig c;
  c.mean.assign(C, 0.0f);
  c.std.assign(C, 1.0f);
  return c;
}

TEST_CASE("transforms: golden values from torchvision semantics (crop, flip, colour, translate, cutout)") {
  using V = std::vector<Tensor>;
  kdtest::GoldenTable table = {
      {"augment", [](const V& x, const json& p) {
         TransformConfig cfg;
         cfg.mean = p["mean"].get<std::vector<float>>();
         cfg.std = p["std"].get<std::vector<float>>();
         AugParams a;
         a.pad = p.value("pad", 0);
         a.crop_top = p.value("top", 0);
         a.crop_left = p.value("left", 0);
         a.flipped = p.value("flip", false);
         for (const json& s : p["strong"]) a.strong.push_back({op_from_name(s[0]), s[1].get<float>()});
         a.cutout_y = p["cutout"][0];
         a.cutout_x = p["cutout"][1];
         a.cutout_size = p["cutout"][2];
         return V{apply_transform(x[0], a, cfg)};
       }}};
  CHECK(kdtest::run_golden_file("golden_transforms.json", table) >= 21);
}

TEST_CASE("transforms: crop and flip by hand") {
  Tensor img = ramp_image(1, 3, 3);  // rows 0 1 2 / 10 11 12 / 20 21 22
  TransformConfig cfg = plain_config(1);
  auto pixels = [](const Tensor& t) {
    std::vector<int> v;
    for (float f : to_float_vector(t)) v.push_back((int)std::lround(f * 255.0f));
    return v;
  };
  AugParams a;
  a.pad = 1;
  a.crop_top = 0;  // window starts one row above the image: the first row is padding
  a.crop_left = 2; // and one column to the right
  CHECK(pixels(apply_transform(img, a, cfg)) == std::vector<int>{0, 0, 0, 1, 2, 0, 11, 12, 0});
  a.flipped = true;
  CHECK(pixels(apply_transform(img, a, cfg)) == std::vector<int>{0, 0, 0, 0, 2, 1, 0, 12, 11});
  AugParams f;
  f.flipped = true;
  CHECK(pixels(apply_transform(img, f, cfg)) == std::vector<int>{2, 1, 0, 12, 11, 10, 22, 21, 20});
}

TEST_CASE("transforms: rotation by hand") {
  Tensor img = ramp_image(2, 4, 4);
  TransformConfig cfg = plain_config(2);
  auto rot = [&](float deg) {
    AugParams a;
    a.strong = {{StrongOp::rotate, deg}};
    return apply_transform(img, a, cfg);
  };
  Tensor ref = normalize_images(img, cfg.mean, cfg.std);
  CHECK(kdtest::allclose(rot(0), ref, 0, 0).ok);
  CHECK(kdtest::allclose(rot(360), ref, 0, 0).ok);
  // Counter-clockwise by 90 degrees: out(y, x) = in(x, W - 1 - y), as torch.rot90(img, 1, (1, 2)).
  Tensor r90 = rot(90);
  Tensor r180 = rot(180);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 4; ++x) {
        CHECK(r90.at({c, y, x}) == ref.at({c, x, 3 - y}));
        CHECK(r180.at({c, y, x}) == ref.at({c, 3 - y, 3 - x}));
      }
  // 45 degrees on a 5 x 5 image: the centre stays, corners go black (outside the source).
  Tensor big = ramp_image(1, 5, 5);
  AugParams a;
  a.strong = {{StrongOp::rotate, 45.0f}};
  Tensor r45 = apply_transform(big, a, plain_config(1));
  CHECK(r45.at({0, 2, 2}) == doctest::Approx(22 / 255.0));
  CHECK(r45.at({0, 0, 0}) == 0.0);
}

TEST_CASE("transforms: identity and brightness 1 leave the image alone; values are clamped") {
  Tensor img = ramp_image(3, 5, 5);
  TransformConfig cfg = plain_config(3);
  Tensor ref = normalize_images(img, cfg.mean, cfg.std);
  AugParams a;
  a.strong = {{StrongOp::identity, 0}, {StrongOp::brightness, 1.0f}, {StrongOp::contrast, 1.0f},
              {StrongOp::saturation, 1.0f}, {StrongOp::translate_x, 0}};
  CHECK(kdtest::allclose(apply_transform(img, a, cfg), ref, 0, 1e-6).ok);
  a.strong = {{StrongOp::brightness, 1.9f}};
  Tensor bright = apply_transform(img, a, cfg);
  for (float v : to_float_vector(bright)) CHECK(v <= 1.0f);
  CHECK(max(bright).item() == doctest::Approx(1.0));
}

TEST_CASE("transforms: normalize_images matches apply_transform without augmentation") {
  Tensor imgs = randint(0, 256, {4, 3, 5, 6}, *std::make_unique<Generator>(3)).to(DType::u8);
  TransformConfig cfg;
  cfg.mean = {0.4914f, 0.4822f, 0.4465f};
  cfg.std = {0.2470f, 0.2435f, 0.2616f};
  Tensor all = normalize_images(imgs, cfg.mean, cfg.std);
  CHECK(all.shape() == Shape{4, 3, 5, 6});
  for (int64_t i = 0; i < 4; ++i) {
    Tensor one = apply_transform(imgs.select(0, i), AugParams{}, cfg);
    CHECK(kdtest::allclose(one, all.select(0, i), 0, 0).ok);
  }
  // pixel 0 -> -mean/std, pixel 255 -> (1 - mean)/std
  Tensor ends = from_vector(std::vector<uint8_t>{0, 255, 0, 255, 0, 255}, {3, 1, 2});
  Tensor n = normalize_images(ends, cfg.mean, cfg.std);
  CHECK(n.at({0, 0, 0}) == doctest::Approx(-0.4914 / 0.2470).epsilon(1e-6));
  CHECK(n.at({2, 0, 1}) == doctest::Approx((1 - 0.4465) / 0.2616).epsilon(1e-6));
}

TEST_CASE("transforms: drawing parameters") {
  TransformConfig cfg = plain_config(3);
  cfg.crop_padding = 4;
  cfg.hflip = true;

  SUBCASE("torchvision's order: crop top, crop left, then flip, from the given generator") {
    Generator g(11), h(11);
    for (int k = 0; k < 20; ++k) {
      AugParams a = draw_aug_params(cfg, 32, 32, g);
      const int top = (int)h.randint(0, 9), left = (int)h.randint(0, 9);
      const bool flip = h.uniform() < 0.5f;
      CHECK(a.pad == 4);
      CHECK(a.crop_top == top);
      CHECK(a.crop_left == left);
      CHECK(a.flipped == flip);
    }
  }
  SUBCASE("ranges cover [0, 2p] and both flips") {
    Generator g(1);
    std::set<int> tops, lefts;
    int flips = 0;
    const int n = 2000;
    for (int k = 0; k < n; ++k) {
      AugParams a = draw_aug_params(cfg, 32, 32, g);
      tops.insert(a.crop_top);
      lefts.insert(a.crop_left);
      flips += a.flipped;
    }
    CHECK(tops == std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8});
    CHECK(lefts == tops);
    CHECK(flips > n * 0.45);
    CHECK(flips < n * 0.55);
  }
  SUBCASE("nothing enabled: nothing drawn") {
    Generator g(5), h(5);
    AugParams a = draw_aug_params(plain_config(3), 32, 32, g);
    CHECK(a == AugParams{});
    CHECK(a.str() == "none");
    CHECK(g.state() == h.state());
  }
  SUBCASE("strong ops: every op appears, values in range, reproducible from the seed") {
    cfg.strong_ops = 2;
    cfg.cutout_size = 16;
    Generator g(7), g2(7);
    std::set<int> ops;
    for (int k = 0; k < 500; ++k) {
      AugParams a = draw_aug_params(cfg, 32, 32, g);
      CHECK(a == draw_aug_params(cfg, 32, 32, g2));
      REQUIRE(a.strong.size() == 2);
      CHECK(a.cutout_size == 16);
      CHECK((a.cutout_y >= 0 && a.cutout_y < 32 && a.cutout_x >= 0 && a.cutout_x < 32));
      for (const StrongStep& s : a.strong) {
        ops.insert((int)s.op);
        switch (s.op) {
          case StrongOp::rotate: CHECK(std::fabs(s.value) <= 30.0f); break;
          case StrongOp::translate_x:
          case StrongOp::translate_y:
            CHECK(std::fabs(s.value) <= 10.0f);
            CHECK(s.value == std::round(s.value));
            break;
          case StrongOp::brightness:
          case StrongOp::contrast:
          case StrongOp::saturation: CHECK((s.value >= 0.1f && s.value <= 1.9f)); break;
          case StrongOp::identity: CHECK(s.value == 0.0f); break;
        }
      }
    }
    CHECK(ops.size() == (size_t)kNumStrongOps);
  }
  SUBCASE("magnitude 0 makes the strong ops no-ops") {
    cfg.strong_ops = 3;
    cfg.strong_magnitude = 0;
    Generator g(2);
    Tensor img = ramp_image(3, 8, 8);
    AugParams a = draw_aug_params(cfg, 8, 8, g);
    AugParams no_strong = a;
    no_strong.strong.clear();
    CHECK(kdtest::allclose(apply_transform(img, a, cfg), apply_transform(img, no_strong, cfg), 0, 1e-6).ok);
  }
}

TEST_CASE("transforms: recorded parameters reproduce the augmented image") {
  Dataset d = make_synthetic({.size = 8, .seed = 3}, "train");
  TransformConfig cfg = strong_transform(d);
  CHECK(cfg.crop_padding == 4);
  CHECK(cfg.hflip);
  CHECK(cfg.cutout_size == 16);
  Generator g(9);
  for (int64_t i = 0; i < d.size(); ++i) {
    AugParams a = draw_aug_params(cfg, 32, 32, g);
    Tensor first = apply_transform(d.images.select(0, i), a, cfg);
    Tensor again = apply_transform(d.images.select(0, i), a, cfg);
    CHECK(kdtest::allclose(first, again, 0, 0).ok);
    for (float v : to_float_vector(first)) CHECK(std::isfinite(v));
  }
  TransformConfig t = train_transform(d);
  CHECK(t.strong_ops == 0);
  CHECK(t.cutout_size == 0);
  TransformConfig e = eval_transform(d);
  CHECK(e.crop_padding == 0);
  CHECK(!e.hflip);
  CHECK(e.mean == d.mean);
}

TEST_CASE("transforms: errors") {
  Tensor img = ramp_image(3, 4, 4);
  TransformConfig cfg = plain_config(1);
  CHECK_THROWS_WITH_SUBSTR(apply_transform(img, AugParams{}, cfg), "1 means and 1 standard deviations for images with 3");
  cfg = plain_config(3);
  cfg.std[1] = 0;
  CHECK_THROWS_WITH_SUBSTR(apply_transform(img, AugParams{}, cfg), "standard deviations must be > 0");
  CHECK_THROWS_WITH_SUBSTR(apply_transform(img.to(DType::f32), AugParams{}, plain_config(3)),
                           "expected a uint8 image (C, H, W)");
  CHECK_THROWS_WITH_SUBSTR(normalize_images(img, {0.5f}, {0.5f}), "3 channel(s) but 1 means");
  cfg = plain_config(3);
  cfg.strong_magnitude = 11;
  CHECK_THROWS_WITH_SUBSTR(validate_transform(cfg, 3, 4, 4), "strong_magnitude 11 must be in [0, 10]");
}
