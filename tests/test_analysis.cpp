// kdlab analyze's measures (analysis/analysis.h) against an independent float64 PyTorch reference
// (tests/reference/gen_analysis.py), their invariants, the image transforms of the invariance
// test, and the command end to end on the synthetic set.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "analysis/analysis.h"
#include "train/train.h"
#include "engine/ops.h"
#include "test_util.h"

using namespace kd;
using V = std::vector<Tensor>;
using json = nlohmann::json;

TEST_CASE("analysis measures match the reference") {
  kdtest::GoldenTable table = {
      {"agreement", [](const V& x, const json&) { return V{scalar_tensor(analysis::top1_agreement(x[0], x[1]))}; }},
      {"kl", [](const V& x, const json&) { return V{scalar_tensor(analysis::mean_kl(x[0], x[1]))}; }},
      {"js", [](const V& x, const json&) { return V{scalar_tensor(analysis::mean_js(x[0], x[1]))}; }},
      {"ece", [](const V& x, const json&) { return V{scalar_tensor(analysis::expected_calibration_error(x[0], x[1], 15))}; }},
      {"linear_cka", [](const V& x, const json&) { return V{scalar_tensor(analysis::linear_cka(x[0], x[1]))}; }},
      {"debiased_cka", [](const V& x, const json&) { return V{scalar_tensor(analysis::debiased_linear_cka(x[0], x[1]))}; }},
      {"rbf_cka", [](const V& x, const json&) { return V{scalar_tensor(analysis::rbf_cka(x[0], x[1]))}; }},
  };
  CHECK(kdtest::run_golden_file("analysis.json", table) == 21);
}

TEST_CASE("analysis invariants") {
  Generator g(3);
  Tensor a = randn({64, 10}, g), b = randn({64, 10}, g);
  CHECK(analysis::top1_agreement(a, a) == 1.0);
  CHECK(analysis::mean_kl(a, a) == doctest::Approx(0.0).epsilon(1e-12));
  CHECK(analysis::mean_js(a, a) == doctest::Approx(0.0).epsilon(1e-12));
  const double js = analysis::mean_js(a, b);
  CHECK(js > 0);
  CHECK(js <= std::log(2.0));
  CHECK(analysis::mean_js(a, b) == doctest::Approx(analysis::mean_js(b, a)));
  CHECK(analysis::linear_cka(a, a) == doctest::Approx(1.0));
  CHECK(analysis::linear_cka(a, mul(a, 3.0)) == doctest::Approx(1.0));  // scale invariant
  CHECK(analysis::debiased_linear_cka(a, a) == doctest::Approx(1.0));
  CHECK_THROWS_WITH_SUBSTR(analysis::top1_agreement(a, randn({3, 10}, g)), "same N");
  // the Gram form of linear CKA equals the feature-space form
  Tensor X = randn({30, 7}, g), Y = randn({30, 5}, g);
  CHECK(analysis::linear_cka_gram(X, Y) == doctest::Approx(analysis::linear_cka(X, Y)).epsilon(1e-4));
  CHECK(analysis::rbf_cka(X, X) == doctest::Approx(1.0));
  // CAM agreement: a stack with itself, with its negative, disjoint top regions
  Tensor m = rand({4, 6, 6}, g);
  CHECK(analysis::cam_correlation(m, m) == doctest::Approx(1.0));
  CHECK(analysis::cam_correlation(m, neg(m)) == doctest::Approx(-1.0));
  CHECK(analysis::cam_top_iou(m, m, 0.2) == doctest::Approx(1.0));
  Tensor left = zeros({1, 2, 4}), right = zeros({1, 2, 4});
  for (int64_t y = 0; y < 2; ++y) left.data<float>()[y * 4 + 0] = 1, right.data<float>()[y * 4 + 3] = 1;
  CHECK(analysis::cam_top_iou(left, right, 0.25) == doctest::Approx(0.0));
  CHECK(analysis::cam_top_iou(left, left, 0.25) == doctest::Approx(1.0));
  // a coarser map is compared at the finer size
  Tensor coarse = zeros({1, 1, 2}), fine = zeros({1, 2, 4});
  coarse.data<float>()[0] = 1;
  for (int64_t y = 0; y < 2; ++y) fine.data<float>()[y * 4 + 0] = fine.data<float>()[y * 4 + 1] = 1;
  CHECK(analysis::cam_correlation(coarse, fine) == doctest::Approx(1.0));
}

// A two-pixel, two-class linear model: z0 = a - 2b, z1 = -a + 2b for the image (a, b).
struct TwoPixelModel : nn::Classifier {
  nn::ModelOutput forward(const Tensor& x) override {
    Tensor w = from_vector(std::vector<float>{1, -1, -2, 2}, {2, 2});  // (pixels, classes)
    nn::ModelOutput out;
    out.logits = matmul(x.reshape({x.size(0), 2}), w);  // (B, 2)
    return out;
  }
  std::string classifier_name() const override { return ""; }  // no layer (never asked: FGSM needs none)
};

TEST_CASE("FGSM against a hand-computed case") {
  // For label 0, dCE/dz = (p0 - 1, p1) = (-p1, p1), so dCE/da = -p1 - p1 = -2 p1 < 0 and
  // dCE/db = 2 p1 + 2 p1 = 4 p1 > 0: FGSM moves a down and b up by eps / std.
  // Normalisation mean 0.5, std 0.25: eps = 0.1 pixel is 0.4 normalised, and pixels in [0, 1]
  // are [-2, 2] normalised.
  TwoPixelModel model;
  Tensor x = from_vector(std::vector<float>{0.0f, 0.0f,    // pixels (0.5, 0.5)
                                            0.0f, 1.8f},   // pixels (0.5, 0.95): b would leave [0, 1]
                         {2, 1, 1, 2});
  Tensor y = from_vector(std::vector<int64_t>{0, 0}, {2});
  Generator gen(0);
  Tensor adv = analysis::adversarial_images(model, x, y, {0.5f}, {0.25f}, 0.1, 1, gen);
  REQUIRE(adv.shape() == Shape({2, 1, 1, 2}));
  CHECK(adv.data<float>()[0] == doctest::Approx(-0.4));
  CHECK(adv.data<float>()[1] == doctest::Approx(0.4));
  CHECK(adv.data<float>()[2] == doctest::Approx(-0.4));
  CHECK(adv.data<float>()[3] == doctest::Approx(2.0));  // 1.8 + 0.4 clipped to pixel 1.0
  // label 1 flips every sign
  Tensor y1 = from_vector(std::vector<int64_t>{1, 1}, {2});
  Tensor adv1 = analysis::adversarial_images(model, x, y1, {0.5f}, {0.25f}, 0.1, 1, gen);
  CHECK(adv1.data<float>()[0] == doctest::Approx(0.4));
  CHECK(adv1.data<float>()[1] == doctest::Approx(-0.4));
  CHECK(adv1.data<float>()[3] == doctest::Approx(1.4));
  // PGD: 10 steps of 0.25 eps from a random start stay in the eps-ball and the pixel range, and
  // on this linear model end at the same corner as FGSM (every step pushes the same way)
  Tensor pgd = analysis::adversarial_images(model, x, y, {0.5f}, {0.25f}, 0.1, 10, gen);
  CHECK(pgd.data<float>()[0] == doctest::Approx(-0.4));
  CHECK(pgd.data<float>()[1] == doctest::Approx(0.4));
  CHECK(pgd.data<float>()[3] == doctest::Approx(2.0));
  CHECK_THROWS_WITH_SUBSTR(analysis::adversarial_images(model, x, y, {0.5f}, {0.25f}, 0.0, 1, gen), "eps > 0");
}

TEST_CASE("the invariance transforms and kdlab analyze end to end") {
  data::SyntheticOptions so;
  so.size = 48;
  so.num_classes = 4;
  data::Dataset ds = data::make_synthetic(so, "test");
  auto model = nn::create_model("resnet8", {4, 3, 32, 1});
  analysis::Outputs plain = analysis::predict(*model, ds, 16);
  CHECK(plain.logits.shape() == Shape({48, 4}));
  CHECK(plain.pooled.shape() == Shape({48, 64}));
  analysis::Outputs again = analysis::predict(*model, ds, 16);
  CHECK(analysis::top1_agreement(plain.logits, again.logits) == 1.0);  // deterministic, eval mode
  for (std::string t : {"hflip", "shift", "noise"}) {
    analysis::Outputs moved = analysis::predict(*model, ds, 16, t);
    CHECK(max(abs(sub(moved.logits, plain.logits))).item() > 0);  // the images did change
  }
  CHECK_THROWS_WITH_SUBSTR(analysis::predict(*model, ds, 16, "rotate"), "unknown transform");
  // CAMs: one min-max scaled map per image; a model agrees with itself
  Tensor cams = analysis::class_activation_maps(*model, ds, 10);
  CHECK(cams.shape() == Shape({10, 8, 8}));
  CHECK(max(cams).item() == doctest::Approx(1.0));
  CHECK(analysis::cam_correlation(cams, cams) == doctest::Approx(1.0));
  // layer CKA: (taps x taps), the diagonal of a model with itself is 1
  auto taps = analysis::feature_taps(*model, ds, 24);
  Tensor lm = analysis::layer_cka_matrix(taps, taps);
  REQUIRE(lm.size(0) == (int64_t)taps.size());
  for (int64_t i = 0; i < lm.size(0); ++i) CHECK(lm.at({i, i}) == doctest::Approx(1.0).epsilon(1e-3));
  // adversarial images crafted on the model fool the model itself more as eps grows
  auto other = nn::create_model("resnet8", {4, 3, 32, 2});
  analysis::Transfer small = analysis::adversarial_transfer(*model, *other, ds, 48, 1e-4, 1);
  analysis::Transfer large = analysis::adversarial_transfer(*model, *other, ds, 48, 0.3, 5);
  CHECK(small.teacher_fooled <= large.teacher_fooled);
  for (double v : {large.teacher_fooled, large.student_fooling_rate, large.same_wrong_label}) {
    CHECK(v >= 0.0);
    CHECK(v <= 1.0);
  }
  analysis::Transfer self = analysis::adversarial_transfer(*model, *model, ds, 48, 0.3, 5);
  CHECK(self.student_fooling_rate == doctest::Approx(self.teacher_fooled));  // the same network
  if (self.student_fooling_rate > 0) CHECK(self.same_wrong_label == doctest::Approx(1.0));
  analysis::Cost c = analysis::measure_cost(*model, 3, 32, 2);
  CHECK(c.parameters == model->num_parameters());
  CHECK(c.macs_per_image > 0);
  CHECK(c.images_per_s > 0);

  // the command: a teacher and a student trained briefly, report files written
  const std::string dir = kdtest::temp_path("analyze");
  const std::string bin = KDLAB_BIN;
  auto sh = [&](const std::string& args) { return std::system((bin + " " + args + " > /dev/null 2>&1").c_str()); };
  REQUIRE(sh("train --model resnet14 --dataset synthetic --epochs 1 --train-limit 64 --test-limit 32 --threads 1 --out " + dir + "/t") == 0);
  REQUIRE(sh("train --model resnet8 --dataset synthetic --epochs 1 --train-limit 64 --test-limit 32 --threads 1 --out " + dir + "/s") == 0);
  REQUIRE(sh("analyze --teacher resnet14:" + dir + "/t/model_last.safetensors --student resnet8:" + dir +
             "/s/model_last.safetensors --dataset synthetic --limit 64 --cka-samples 32 --layer-samples 16 --cam-samples 16 "
             "--adv-samples 16 --pgd-steps 2 --threads 1 --out " + dir + "/a") == 0);
  auto j = json::parse(std::ifstream(dir + "/a/analysis.json"));
  CHECK(j["images"] == 64);
  REQUIRE(j["students"].size() == 1);
  const double agree = j["students"][0]["vs_teacher"]["top1_agreement"].get<double>();
  CHECK(agree >= 0.0);
  CHECK(agree <= 1.0);
  CHECK(std::filesystem::exists(dir + "/a/report.md"));
  CHECK(std::filesystem::exists(dir + "/a/layer_cka_student1.png"));
  CHECK(std::filesystem::exists(dir + "/a/cams_student1.png"));
  CHECK(j["students"][0]["adversarial"]["pgd"]["steps"] == 2);
  CHECK(j["students"][0]["localisation"].contains("cam_top20_iou"));
}
