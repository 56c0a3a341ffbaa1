// ACD-U (distill/output/acd_u.h) and its parts: label noise (datasets/label_noise.h), the
// two-component GMM (distill/gmm.h), the forget-set selection, the unlearning step, the DivideMix
// helpers, and a short end-to-end run on synthetic data.
#include <filesystem>
#include <fstream>
#include <functional>

#include "datasets/dataset.h"
#include "datasets/label_noise.h"
#include "distill/gmm.h"
#include "distill/output/acd_u.h"
#include "train/train.h"
#include "nn/models/model.h"
#include "nn/optim.h"
#include "test_util.h"

using namespace kd;
namespace fs = std::filesystem;

// The message of the kd::Error `f` throws ("" when it does not throw).
static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kd::Error& e) {
    return e.what();
  }
  return "";
}

static Tensor balanced_labels(int64_t n_per_class, int64_t K) {
  std::vector<int64_t> y;
  for (int64_t i = 0; i < n_per_class * K; ++i) y.push_back(i % K);
  return from_vector(y, {(int64_t)y.size()});
}

// ============================================================================ label noise

TEST_CASE("label noise: the asymmetric maps") {
  // CIFAR-10: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog, the rest fixed
  const int64_t expected10[10] = {0, 1, 0, 5, 7, 3, 6, 7, 8, 1};
  for (int64_t c = 0; c < 10; ++c) CHECK(data::asymmetric_noise_target(c, 10) == expected10[c]);
  // CIFAR-100: the next class in each block of five, cyclic
  CHECK(data::asymmetric_noise_target(0, 100) == 1);
  CHECK(data::asymmetric_noise_target(3, 100) == 4);
  CHECK(data::asymmetric_noise_target(4, 100) == 0);
  CHECK(data::asymmetric_noise_target(5, 100) == 6);
  CHECK(data::asymmetric_noise_target(9, 100) == 5);
  CHECK(data::asymmetric_noise_target(99, 100) == 95);
  for (int64_t c = 0; c < 100; ++c) CHECK(data::asymmetric_noise_target(c, 100) / 5 == c / 5);
  // other K: the next class
  CHECK(data::asymmetric_noise_target(2, 7) == 3);
  CHECK(data::asymmetric_noise_target(6, 7) == 0);
}

TEST_CASE("label noise: symmetric rates") {
  const int64_t K = 10;
  Tensor clean = balanced_labels(1000, K);  // N = 10000
  Tensor noisy = data::inject_label_noise(clean, K, "sym:0.5", 1);
  CHECK(noisy.shape() == clean.shape());
  CHECK(noisy.dtype() == DType::i64);
  // floor(0.5 N) samples get a uniform label over all K classes: 0.5 * 9/10 change
  const double rate = data::label_noise_rate(clean, noisy);
  CHECK(rate == doctest::Approx(0.45).epsilon(0.05));
  CHECK(rate <= 0.5);
  for (int64_t v : to_int_vector(noisy)) CHECK((v >= 0 && v < K));
  // 80% noise, and a 2-class problem (half of the redrawn labels stay)
  CHECK(data::label_noise_rate(clean, data::inject_label_noise(clean, K, "sym:0.8", 2)) ==
        doctest::Approx(0.72).epsilon(0.04));
  Tensor two = balanced_labels(2000, 2);
  CHECK(data::label_noise_rate(two, data::inject_label_noise(two, 2, "sym:1", 3)) == doctest::Approx(0.5).epsilon(0.05));
  // zero noise and "none" keep every label
  CHECK(to_int_vector(data::inject_label_noise(clean, K, "sym:0", 4)) == to_int_vector(clean));
  CHECK(to_int_vector(data::inject_label_noise(clean, K, "none", 4)) == to_int_vector(clean));
  CHECK(to_int_vector(data::inject_label_noise(clean, K, "", 4)) == to_int_vector(clean));
  // the input is not modified
  CHECK(to_int_vector(clean) == to_int_vector(balanced_labels(1000, K)));
}

TEST_CASE("label noise: asymmetric follows the map exactly") {
  const int64_t K = 10;
  Tensor clean = balanced_labels(1000, K);
  Tensor noisy = data::inject_label_noise(clean, K, "asym:0.4", 5);
  const auto c = to_int_vector(clean), n = to_int_vector(noisy);
  int64_t changed = 0;
  std::vector<int64_t> changed_per_class(K, 0);
  for (size_t i = 0; i < c.size(); ++i) {
    if (c[i] == n[i]) continue;
    ++changed;
    ++changed_per_class[c[i]];
    CHECK(n[i] == data::asymmetric_noise_target(c[i], K));  // every change is the map
  }
  // 4000 chosen samples, about half of them in the five classes the map moves
  CHECK(changed == doctest::Approx(2000).epsilon(0.08));
  for (int64_t cls : {0, 1, 6, 7, 8}) CHECK(changed_per_class[cls] == 0);
  for (int64_t cls : {2, 3, 4, 5, 9}) CHECK(changed_per_class[cls] == doctest::Approx(400).epsilon(0.2));
  // rate 1 on CIFAR-100: every label moves to the next class in its block
  Tensor c100 = balanced_labels(10, 100);
  const auto n100 = to_int_vector(data::inject_label_noise(c100, 100, "asym:1.0", 6));
  const auto c100v = to_int_vector(c100);
  for (size_t i = 0; i < c100v.size(); ++i) CHECK(n100[i] == data::asymmetric_noise_target(c100v[i], 100));
  CHECK(data::label_noise_rate(c100, from_vector(n100, {(int64_t)n100.size()})) == 1.0);
}

TEST_CASE("label noise: determinism by seed, and errors") {
  Tensor clean = balanced_labels(100, 10);
  const auto a = to_int_vector(data::inject_label_noise(clean, 10, "sym:0.5", 42));
  const auto b = to_int_vector(data::inject_label_noise(clean, 10, "sym:0.5", 42));
  const auto c = to_int_vector(data::inject_label_noise(clean, 10, "sym:0.5", 43));
  CHECK(a == b);
  CHECK(a != c);
  CHECK(to_int_vector(data::inject_label_noise(clean, 10, "asym:0.3", 7)) ==
        to_int_vector(data::inject_label_noise(clean, 10, "asym:0.3", 7)));

  CHECK(error_of([&] { data::inject_label_noise(clean, 10, "sym:1.5", 0); }).find("[0, 1]") != std::string::npos);
  CHECK(error_of([&] { data::inject_label_noise(clean, 10, "asym:-0.1", 0); }).find("[0, 1]") != std::string::npos);
  CHECK(error_of([&] { data::inject_label_noise(clean, 10, "foo:0.2", 0); }).find("unknown kind 'foo'") !=
        std::string::npos);
  CHECK(error_of([&] { data::inject_label_noise(clean, 10, "sym", 0); }).find("KIND:RATE") != std::string::npos);
  CHECK(error_of([&] { data::inject_label_noise(clean, 10, "sym:abc", 0); }).find("not a number") != std::string::npos);
  CHECK(error_of([&] { data::inject_label_noise(clean, 5, "sym:0.1", 0); }).find("not in [0, 5)") !=
        std::string::npos);
  CHECK(data::parse_label_noise("asym:0.4").kind == "asym");
  CHECK(data::parse_label_noise("asym:0.4").rate == 0.4);
  CHECK(data::label_noise_rate(from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4}),
                               from_vector(std::vector<int64_t>{0, 2, 2, 0}, {4})) == 0.5);
}

// ============================================================================ GMM

TEST_CASE("GMM: recovers a planted noisy subset") {
  Generator gen(11);
  std::vector<double> loss;
  std::vector<uint8_t> truly_clean;
  for (int i = 0; i < 1000; ++i) {
    const bool clean = i % 10 < 7;  // 70% clean
    loss.push_back(clean ? 0.1 + 0.05 * gen.normal() : 0.7 + 0.1 * gen.normal());
    truly_clean.push_back(clean);
  }
  distill::Gmm1d g = distill::fit_gmm_1d(loss);
  const int64_t lo = g.low_component(), hi = 1 - lo;
  CHECK(g.mean[lo] == doctest::Approx(0.1).epsilon(0.3));
  CHECK(g.mean[hi] == doctest::Approx(0.7).epsilon(0.1));
  CHECK(g.weight[lo] == doctest::Approx(0.7).epsilon(0.05));
  CHECK(g.var[lo] == doctest::Approx(0.05 * 0.05 + 5e-4).epsilon(0.3));  // reg_covar included
  CHECK(g.iterations >= 1);
  CHECK(g.iterations <= 10);

  for (bool normalise : {false, true}) {
    CAPTURE(normalise);
    const std::vector<double> input = normalise ? distill::minmax_normalize(loss) : loss;
    const std::vector<double> w = distill::gmm_clean_probability(input);
    double tp = 0, predicted = 0, actual = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      CHECK((w[i] >= 0 && w[i] <= 1));
      const bool p = w[i] > 0.5;
      tp += p && truly_clean[i];
      predicted += p;
      actual += truly_clean[i];
    }
    CHECK(tp / predicted > 0.9);  // precision
    CHECK(tp / actual > 0.9);     // recall
  }
  // posteriors of the two components add up to 1
  const auto p0 = distill::gmm_posterior(g, {0.1, 0.4, 0.9}, 0), p1 = distill::gmm_posterior(g, {0.1, 0.4, 0.9}, 1);
  for (int i = 0; i < 3; ++i) CHECK(p0[i] + p1[i] == doctest::Approx(1.0));
  // nothing to separate: every sample is clean
  CHECK(distill::gmm_clean_probability({0.3, 0.3, 0.3}) == std::vector<double>{1.0, 1.0, 1.0});
  CHECK_THROWS_AS(distill::fit_gmm_1d({0.5}), kd::Error);
}

// ============================================================================ selection

TEST_CASE("selection: quantiles and the forget rule on a hand-made history") {
  CHECK(distill::quantile_linear({4, 1, 3, 2}, 0.5) == doctest::Approx(2.5));
  CHECK(distill::quantile_linear({4, 1, 3, 2}, 0.0) == 1.0);
  CHECK(distill::quantile_linear({4, 1, 3, 2}, 1.0) == 4.0);
  CHECK(distill::quantile_linear({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 0.2) == doctest::Approx(1.8));
  CHECK(distill::minmax_normalize({2, 4, 3}) == std::vector<double>{0.0, 1.0, 0.5});

  // three epochs of normalised losses, period 2: d = now - before
  const std::vector<double> before = {0.9, 0.8, 0.5, 0.5, 0.6, 0.7, 0.3, 0.4, 0.9, 0.2};
  const std::vector<double> middle(10, 0.5);
  const std::vector<double> now = {0.1, 0.7, 0.45, 0.5, 0.0, 0.65, 0.35, 0.4, 0.2, 0.25};
  // d = -0.8 -0.1 -0.05 0 -0.6 -0.05 0.05 0 -0.7 0.05; q_0.2(d) = -0.7 + 0.8 * 0.1 = -0.62 -> samples 0, 8
  // q_0.05(now) = 0 + 0.45 * 0.1 = 0.045 -> sample 4
  const std::vector<int64_t> labels = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1};
  std::vector<int64_t> predicted = {1, 1, 2, 3, 1, 1, 2, 3, 0, 1};  // sample 8: the label agrees -> kept
  const std::vector<std::vector<double>> history = {before, middle, now};
  distill::ForgetSelection s = distill::select_forget_set(history, 2, labels, predicted, 0.2, 0.05);
  CHECK(s.change_threshold == doctest::Approx(-0.62));
  CHECK(s.loss_threshold == doctest::Approx(0.045));
  CHECK(s.by_change == 2);
  CHECK(s.by_loss == 1);
  CHECK(s.mask == std::vector<uint8_t>{1, 0, 0, 0, 1, 0, 0, 0, 0, 0});
  CHECK(s.count == 2);
  // no label condition: sample 8 too
  s = distill::select_forget_set(history, 2, labels, {}, 0.2, 0.05);
  CHECK(s.mask == std::vector<uint8_t>{1, 0, 0, 0, 1, 0, 0, 0, 1, 0});
  // the loss-change condition off: only the tiny loss
  s = distill::select_forget_set(history, 2, labels, {}, 0.0, 0.05);
  CHECK(s.mask == std::vector<uint8_t>{0, 0, 0, 0, 1, 0, 0, 0, 0, 0});
  // period 1 compares with the middle epoch: d = now - 0.5, the two smallest d are 4 (-0.5) and 0 (-0.4)
  s = distill::select_forget_set(history, 1, labels, {}, 0.2, 0.0);
  CHECK(s.mask == std::vector<uint8_t>{1, 0, 0, 0, 1, 0, 0, 0, 0, 0});
  // too little history
  CHECK(error_of([&] { distill::select_forget_set({before, now}, 2, labels, {}, 0.2, 0.05); })
            .find("needs more than 2 epochs") != std::string::npos);
}

// ============================================================================ unlearning and DivideMix helpers

TEST_CASE("helpers: unlearning KL, sharpen, prior penalty, ramp-up, head") {
  // KL(softmax([ln 3, 0]) || softmax([0, 0])) = 0.75 ln 1.5 + 0.25 ln 0.5
  Tensor zs = from_vector(std::vector<float>{0, 0}, {1, 2});
  Tensor zt = from_vector(std::vector<float>{(float)std::log(3.0), 0}, {1, 2});
  CHECK(distill::unlearning_kl(zs, zt, 1.0).item() ==
        doctest::Approx(0.75 * std::log(1.5) + 0.25 * std::log(0.5)).epsilon(1e-5));
  CHECK(distill::unlearning_kl(zt, zt, 0.05).item() == doctest::Approx(0.0));
  // T^2 scaling: T = 2 on logits doubled is 4 times T = 1
  CHECK(distill::unlearning_kl(mul(zs, 2.0), mul(zt, 2.0), 2.0).item() ==
        doctest::Approx(4 * distill::unlearning_kl(zs, zt, 1.0).item()).epsilon(1e-5));

  Tensor p = from_vector(std::vector<float>{0.6f, 0.4f}, {1, 2});
  auto sp = to_float_vector(distill::sharpen(p, 0.5));
  CHECK(sp[0] == doctest::Approx(0.36 / 0.52).epsilon(1e-5));
  CHECK(sp[1] == doctest::Approx(0.16 / 0.52).epsilon(1e-5));

  CHECK(distill::prior_penalty(zeros({4, 10})).item() == doctest::Approx(0.0).epsilon(1e-6));
  Tensor skewed = from_vector(std::vector<float>{3, 0, 0, 3, 0, 0}, {2, 3});  // mean prediction leans to class 0
  CHECK(distill::prior_penalty(skewed).item() > 0.05);

  CHECK(distill::linear_rampup(25, 12, 10, 16) == doctest::Approx(25.0 * 2 / 16));
  CHECK(distill::linear_rampup(25, 5, 10, 16) == 0.0);
  CHECK(distill::linear_rampup(25, 40, 10, 16) == 25.0);

  // freeze_encoder trains the declared classifier alone
  CHECK(nn::create_model("resnet8", {5, 3, 32, 0})->classifier_head().name == "fc");
  CHECK(nn::create_model("vgg8", {5, 3, 32, 0})->classifier_head().name == "classifier");
}

// A tiny synthetic problem: 1 x 12 x 12 images, 4 classes.
static data::Dataset tiny_set(int64_t n, const std::string& split) {
  data::LoadOptions lo;
  lo.synthetic.size = n;
  lo.synthetic.num_classes = 4;
  lo.synthetic.channels = 1;
  lo.synthetic.height = lo.synthetic.width = 12;
  lo.synthetic.seed = 5;
  return data::load_dataset("synthetic", "", split, lo);
}

// Mean unlearning KL of the model against its snapshot on `idx`, both in evaluation mode.
static double eval_kl(nn::Classifier& model, nn::Classifier& snapshot, const data::Dataset& set, double T) {
  train::EvalResult a = train::evaluate(model, set, 256, true), b = train::evaluate(snapshot, set, 256, true);
  NoGradGuard ng;
  return distill::unlearning_kl(a.logits, b.logits, T).item();
}

TEST_CASE("unlearning: gradient ascent moves the network away from its snapshot on the forgotten samples") {
  train::set_threads(1);
  data::Dataset train_set = tiny_set(64, "train");
  auto model = nn::create_model("resnet8", {4, 1, 12, 3});
  nn::SGD opt(model->named_parameters(), 0.05, 0.9, 5e-4);
  // a few CE steps first, so the network is not at its initialisation
  {
    data::LoaderOptions lo;
    lo.batch_size = 32;
    lo.transform = data::eval_transform(train_set);
    data::DataLoader loader(train_set, lo);
    loader.start_epoch(0);
    data::Batch b;
    while (loader.next(b)) {
      Tensor loss = cross_entropy(model->forward(b.images).logits, b.labels);
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
  }
  nn::ModelConfig mc{4, 1, 12, 3};
  auto snapshot = distill::frozen_copy(*model, mc);
  CHECK(!snapshot->is_training());
  for (auto& [n, t] : snapshot->named_parameters()) CHECK(!t.requires_grad());
  std::vector<int64_t> forget;
  for (int64_t i = 0; i < 32; ++i) forget.push_back(i);
  data::Dataset forget_set = data::subset(train_set, forget);
  const double T = 0.05;
  const double kl_before = eval_kl(*model, *snapshot, forget_set, T);
  CHECK(kl_before == doctest::Approx(0.0).epsilon(1e-6));  // the copy is exact

  distill::UnlearnStats st1 = distill::unlearn_epoch(*model, *snapshot, opt, train_set, forget, 16, T, 1.0, 9);
  CHECK(st1.steps == 2);
  CHECK(st1.images == 32);
  const double kl_after1 = eval_kl(*model, *snapshot, forget_set, T);
  distill::UnlearnStats st2 = distill::unlearn_epoch(*model, *snapshot, opt, train_set, forget, 16, T, 1.0, 10);
  const double kl_after2 = eval_kl(*model, *snapshot, forget_set, T);
  MESSAGE("unlearning KL (eval mode): before ", kl_before, ", after 1 epoch ", kl_after1, ", after 2 ", kl_after2,
          "; training-mode KL per epoch ", st1.mean_kl, ", ", st2.mean_kl);
  CHECK(kl_after1 > kl_before + 1e-4);
  CHECK(kl_after2 > kl_after1);
  CHECK(st2.mean_kl > st1.mean_kl);
}

// ============================================================================ options

TEST_CASE("options: defaults, parameters and validation") {
  distill::AcdUOptions d = distill::acd_u_options({});
  CHECK(d.warmup == 10);
  CHECK(d.select_start == 50);
  CHECK(d.select_every == 10);
  CHECK(d.forget_epochs == 4);
  CHECK(d.forget_change_q == 0.2);
  CHECK(d.forget_loss_q == 0.05);
  CHECK(d.unlearn_T == 0.05);
  CHECK(d.p_threshold == 0.5);
  CHECK(d.gmm.max_iter == 10);
  distill::AcdUOptions o = distill::acd_u_options({{"warmup", "3"}, {"select_start", "5"}, {"select_every", "3"},
                                                   {"forget_epochs", "1"}, {"freeze_encoder", "true"},
                                                   {"label_condition", "off"}});
  CHECK(o.warmup == 3);
  CHECK(o.freeze_encoder);
  CHECK(distill::acd_u_params(distill::acd_u_options(distill::acd_u_params(o))) == distill::acd_u_params(o));
  CHECK_NOTHROW(distill::validate_acd_u_options(o, 15));
  CHECK_NOTHROW(distill::validate_acd_u_options(d, 300));
  CHECK(error_of([] { distill::acd_u_options({{"warm_up", "3"}}); }).find("unknown parameter warm_up") !=
        std::string::npos);
  o.select_start = 2;  // first selection at epoch 3, only 1 epoch after warmup=3
  CHECK(error_of([&] { distill::validate_acd_u_options(o, 15); }).find("raise select_start") != std::string::npos);
  o.select_start = 5;
  o.forget_epochs = 4;  // more than select_every
  CHECK(error_of([&] { distill::validate_acd_u_options(o, 15); }).find("forget_epochs") != std::string::npos);
}

// ============================================================================ end to end

static std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST_CASE("end to end: a short ACD-U run on noisy synthetic labels") {
  train::TrainConfig c;
  c.model = "resnet8";
  c.dataset = "synthetic";
  c.epochs = 8;
  c.batch_size = 32;
  c.lr = 0.1;
  c.schedule = "cosine";
  c.threads = 1;
  c.log_every = 100000;
  c.seed = 3;
  c.label_noise = "sym:0.3";

  train::Run run;
  run.config = c;
  run.out_dir = kdtest::temp_path("acd_u_run");
  run.train_set = tiny_set(512, "train");
  run.test_set = tiny_set(256, "test");
  const Tensor clean = run.train_set.labels;
  run.train_set.labels = data::inject_label_noise(clean, 4, c.label_noise, c.seed);
  CHECK(data::label_noise_rate(clean, run.train_set.labels) == doctest::Approx(0.225).epsilon(0.2));
  run.model = nn::create_model("resnet8", {4, 1, 12, 3});

  // network 2: "pretrained" (4 epochs of CE on the clean labels), then its encoder frozen
  std::shared_ptr<nn::Classifier> second = nn::create_model("resnet8", {4, 1, 12, 7});
  {
    train::Run pre;
    pre.config = c;
    pre.config.epochs = 4;
    pre.config.batch_size = 64;
    pre.out_dir = kdtest::temp_path("acd_u_pretrain");
    pre.train_set = run.train_set;
    pre.train_set.labels = clean;
    pre.test_set = run.test_set;
    pre.model = second;
    train::run_training(pre, false);
  }
  distill::AcdUOptions o = distill::acd_u_options({{"warmup", "3"}, {"select_start", "4"}, {"select_every", "2"},
                                                   {"forget_epochs", "1"}, {"rampup", "2"},
                                                   {"freeze_encoder", "true"}, {"unfreeze_epoch", "-1"}});
  const nn::NamedTensors second_before = [&] {
    nn::NamedTensors copy;
    for (auto& [n, t] : second->state_dict()) copy.emplace_back(n, t.clone());
    return copy;
  }();

  train::RunSummary s = distill::run_acd_u(run, second, o, clean);

  // the run record
  for (const char* f : {"config.json", "metrics.jsonl", "model_last.safetensors", "model_best.safetensors",
                        "second_last.safetensors"})
    CHECK_MESSAGE(fs::exists(run.out_dir + "/" + f), f);
  std::vector<nlohmann::json> lines = read_lines(run.out_dir + "/metrics.jsonl");
  REQUIRE(lines.size() == 8);
  CHECK(lines[2]["phase"] == "warmup");
  CHECK(lines[3]["phase"] == "cotrain");
  for (const char* key : {"loss_ce1", "loss_ce2", "test_acc", "test_acc2", "test_acc_ensemble", "images_per_s"})
    CHECK_MESSAGE(lines[0].contains(key), key);
  for (const char* key : {"clean1", "clean2", "clean1_precision", "clean1_recall", "clean2_precision", "loss_lx1",
                          "loss_lu1", "loss_lx2", "labelled1", "labelled2", "train_loss", "lambda_u"})
    CHECK_MESSAGE(lines[3].contains(key), key);
  // the selection at epoch 6 (from 0): selected sets, unlearning, and the excluded samples
  CHECK(!lines[5].contains("selected1"));
  CHECK(lines[6].contains("selected1"));
  CHECK(lines[6].contains("loss_unlearn_kl1"));
  CHECK(lines[6]["excluded"].get<int64_t>() > 0);
  CHECK(lines[7]["excluded"] == lines[6]["excluded"]);  // kept until the next selection
  CHECK(!lines[7].contains("loss_unlearn_kl1"));        // forget_epochs = 1
  for (auto& l : lines) {
    CHECK(std::isfinite(l["train_loss"].get<double>()));
    CHECK(l["images_per_s"].get<double>() > 0);
  }
  std::ifstream cf(run.out_dir + "/config.json");
  nlohmann::json cfg = nlohmann::json::parse(cf);
  CHECK(cfg["method"] == "acd_u");
  CHECK(cfg["acd_u"]["warmup"] == "3");
  CHECK(cfg["second_head"] == "fc");
  CHECK(cfg["label_noise_rate"].get<double>() > 0.1);

  // network 1 learned: the warm-up CE and the (clean) test loss went down, accuracy well above chance,
  // and the GMM split of the co-training epochs is cleaner than the labels
  MESSAGE("warm-up CE ", lines[0]["loss_ce1"], " -> ", lines[2]["loss_ce1"], "; test loss ", lines[0]["test_loss"],
          " -> ", lines[7]["test_loss"], "; best test acc ", s.best_accuracy, " at epoch ", s.best_epoch,
          "; split precision of network 1 at the last epoch ", lines[7]["clean1_precision"]);
  CHECK(lines[2]["loss_ce1"].get<double>() < lines[0]["loss_ce1"].get<double>());
  CHECK(lines[7]["test_loss"].get<double>() < lines[0]["test_loss"].get<double>());
  CHECK(s.best_accuracy > 0.6);
  CHECK(s.best_epoch >= 1);
  CHECK(lines[7]["clean1_precision"].get<double>() > 1.0 - cfg["label_noise_rate"].get<double>());

  // network 2's frozen encoder did not move (weights and BatchNorm statistics); its head did
  const nn::NamedTensors second_after = second->state_dict();
  REQUIRE(second_after.size() == second_before.size());
  bool head_moved = false;
  for (size_t i = 0; i < second_after.size(); ++i) {
    const auto& [name, t] = second_after[i];
    const bool same = to_float_vector(t.to(DType::f32)) == to_float_vector(second_before[i].second.to(DType::f32));
    if (name.rfind("fc.", 0) == 0) head_moved = head_moved || !same;
    else if (!same) FAIL_CHECK("the frozen encoder changed: ", name);
  }
  CHECK(head_moved);
}
