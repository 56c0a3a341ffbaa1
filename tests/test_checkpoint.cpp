// Training checkpoints: model + optimizer + generator state round trip, and atomic writes.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
using namespace kd::nn;
using kdtest::json;

namespace {

std::shared_ptr<Sequential> small_model(uint64_t seed) {
  Generator gen(seed);
  auto m = std::make_shared<Sequential>();
  m->push_back(std::make_shared<Conv2d>(3, 4, 3, gen, 1, 1));
  m->push_back(BatchNorm2d(4));
  m->push_back(std::make_shared<Flatten>());
  m->push_back(std::make_shared<Linear>(4 * 4 * 4, 3, gen));
  return m;
}

// One optimizer step with gradients drawn from `gen` (no forward pass needed).
void fake_step(Module& m, Optimizer& opt, Generator& gen) {
  for (auto& p : m.parameters()) p.set_grad(randn(p.shape(), gen));
  opt.step();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void check_same_state(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.dtype() == b[i].second.dtype());
    if (a[i].second.dtype() == DType::f32) CHECK(to_float_vector(a[i].second) == to_float_vector(b[i].second));
    else CHECK(to_int_vector(a[i].second) == to_int_vector(b[i].second));
  }
}

TrainingCheckpoint make_info(Generator& data_gen, Generator& aug_gen) {
  TrainingCheckpoint info;
  info.epoch = 7;
  info.step = 3;
  info.schedule = cosine_schedule(0.3, 57, 1).to_json();
  info.rng_states = rng_states({{"data", &data_gen}, {"augment", &aug_gen}});
  info.scalars = {{"best_acc", 71.25}, {"config", {{"method", "kd"}, {"T", 4.0}}}};
  return info;
}

}  // namespace

TEST_CASE("checkpoint: model, optimizer, generators and scalars round trip") {
  for (std::string type : {"SGD", "AdamW"}) {
    SUBCASE(type.c_str()) {
      auto model = small_model(1);
      auto make_opt = [&](Module& m) -> std::unique_ptr<Optimizer> {
        auto groups = split_decay_groups(m.named_parameters(), 0.1, 5e-4, 0.9);
        if (type == "SGD") return std::make_unique<SGD>(groups, SGDOptions{0.0, true});
        return std::make_unique<AdamW>(groups);
      };
      auto opt = make_opt(*model);
      Generator grads(5), data_gen(11), aug_gen(12);
      for (int k = 0; k < 3; ++k) fake_step(*model, *opt, grads);
      model->named_buffers()[0].second.fill_(0.25);  // running_mean: buffers are saved too
      opt->scale_lr(0.5);
      for (int k = 0; k < 4; ++k) data_gen.next_u64();  // generators mid-stream
      TrainingCheckpoint info = make_info(data_gen, aug_gen);

      std::string path = kdtest::temp_path("ckpt.safetensors");
      save_training_checkpoint(path, *model, *opt, info);
      CHECK_FALSE(kdtest::file_exists(path + ".tmp"));

      // A plain safetensors file with prefixed names and the metadata.
      SafetensorsFile raw = load_safetensors(path);
      CHECK(raw.metadata.at("format") == "kdlab.training_checkpoint");
      CHECK(raw.metadata.at("epoch") == "7");
      CHECK(raw.tensors[0].first == "model.0.weight");
      bool has_optim = false;
      for (auto& [n, t] : raw.tensors) has_optim |= n.rfind("optim.", 0) == 0;
      CHECK(has_optim);

      // Load into a differently initialised model and a fresh optimizer.
      auto model2 = small_model(99);
      auto opt2 = make_opt(*model2);
      Generator data2(0), aug2(0);
      TrainingCheckpoint back = load_training_checkpoint(path, *model2, *opt2);
      restore_rng_states(back, {{"data", &data2}, {"augment", &aug2}});

      check_same_state(model2->state_dict(), model->state_dict());
      check_same_state(opt2->state_dict().tensors, opt->state_dict().tensors);
      CHECK(opt2->state_dict().scalars == opt->state_dict().scalars);
      CHECK(opt2->lr(0) == 0.05);
      CHECK(opt2->steps_taken() == 3);
      CHECK(back.epoch == 7);
      CHECK(back.step == 3);
      CHECK(back.scalars == info.scalars);
      CHECK(Schedule::from_json(back.schedule).describe() == cosine_schedule(0.3, 57, 1).describe());
      for (int k = 0; k < 5; ++k) {
        CHECK(data2.next_u64() == data_gen.next_u64());
        CHECK(aug2.next_u64() == aug_gen.next_u64());
      }
      // The resumed run continues exactly as the original.
      Generator g1(77), g2(77);
      fake_step(*model, *opt, g1);
      fake_step(*model2, *opt2, g2);
      check_same_state(model2->state_dict(), model->state_dict());
    }
  }
}

TEST_CASE("checkpoint: several labelled modules (student and distiller helpers)") {
  auto student = small_model(1);
  Generator gen(3);
  Linear helper(3, 5, gen);
  auto groups = training_param_groups(student->named_parameters(), helper.named_parameters(), 0.05, 0.1, 5e-4, 0.9,
                                      false);
  SGD opt(groups);
  Generator grads(4);
  fake_step(*student, opt, grads);
  for (auto& p : helper.parameters()) p.set_grad(ones(p.shape()));
  opt.step();
  std::string path = kdtest::temp_path("kd.safetensors");
  save_training_checkpoint(path, {{"model", student.get()}, {"helpers", &helper}}, &opt, TrainingCheckpoint{});

  auto student2 = small_model(8);
  Generator gen2(9);
  Linear helper2(3, 5, gen2);
  SGD opt2(training_param_groups(student2->named_parameters(), helper2.named_parameters(), 0.05, 0.1, 5e-4, 0.9,
                                 false));
  load_training_checkpoint(path, {{"model", student2.get()}, {"helpers", &helper2}}, &opt2);
  check_same_state(helper2.state_dict(), helper.state_dict());
  check_same_state(student2->state_dict(), student->state_dict());
  check_same_state(opt2.state_dict().tensors, opt.state_dict().tensors);

  // Weights only: no optimizer.
  auto student3 = small_model(10);
  Linear helper3(3, 5, gen2);
  load_training_checkpoint(path, {{"model", student3.get()}, {"helpers", &helper3}}, nullptr);
  check_same_state(student3->state_dict(), student->state_dict());

  SUBCASE("a module the file has but the caller did not give") {
    auto s4 = small_model(10);
    CHECK_THROWS_WITH_SUBSTR(load_training_checkpoint(path, {{"model", s4.get()}}, nullptr),
                             "holds module 'helpers' but it was not given");
  }
  SUBCASE("a module the file lacks") {
    auto s4 = small_model(10);
    CHECK_THROWS_WITH_SUBSTR(
        load_training_checkpoint(path, {{"model", s4.get()}, {"helpers", &helper3}, {"extra", &helper3}}, nullptr),
        "holds no module 'extra'");
  }
  SUBCASE("bad labels") {
    CHECK_THROWS_WITH_SUBSTR(save_training_checkpoint(path, {{"optim", &helper}}, nullptr, {}), "not be 'optim'");
    CHECK_THROWS_WITH_SUBSTR(save_training_checkpoint(path, {{"a", &helper}, {"a", &helper}}, nullptr, {}),
                             "used twice");
  }
}

TEST_CASE("checkpoint: mismatches are reported and change nothing") {
  auto model = small_model(1);
  SGD opt(model->named_parameters(), 0.1, 0.9);
  Generator grads(5);
  fake_step(*model, opt, grads);
  std::string path = kdtest::temp_path("ckpt.safetensors");
  save_training_checkpoint(path, *model, opt, TrainingCheckpoint{});

  SUBCASE("a different architecture") {
    Generator gen(2);
    Sequential other;
    other.push_back(std::make_shared<Conv2d>(3, 8, 3, gen, 1, 1));
    SGD other_opt(other.named_parameters(), 0.1, 0.9);
    auto before = to_float_vector(other.parameter("0.weight"));
    CHECK_THROWS_WITH_SUBSTR(load_training_checkpoint(path, other, other_opt), "does not match the checkpoint");
    CHECK(to_float_vector(other.parameter("0.weight")) == before);
    CHECK(other_opt.state_dict().tensors.empty());
  }
  SUBCASE("another optimizer type: the model is left untouched") {
    auto model2 = small_model(2);
    Adam adam(model2->named_parameters(), 0.1);
    auto before = to_float_vector(model2->parameter("0.weight"));
    CHECK_THROWS_WITH_SUBSTR(load_training_checkpoint(path, *model2, adam), "saved by SGD but this optimizer is Adam");
    CHECK(to_float_vector(model2->parameter("0.weight")) == before);
  }
  SUBCASE("plain weights are not a training checkpoint") {
    std::string plain = kdtest::temp_path("weights.safetensors");
    save_safetensors(plain, model->state_dict());
    auto model2 = small_model(2);
    SGD opt2(model2->named_parameters(), 0.1, 0.9);
    CHECK_THROWS_WITH_SUBSTR(load_training_checkpoint(plain, *model2, opt2), "not a kdlab training checkpoint");
  }
  SUBCASE("no optimizer state in the file") {
    std::string weights_only = kdtest::temp_path("noopt.safetensors");
    save_training_checkpoint(weights_only, {{"model", model.get()}}, nullptr, TrainingCheckpoint{});
    auto model2 = small_model(2);
    SGD opt2(model2->named_parameters(), 0.1, 0.9);
    CHECK_THROWS_WITH_SUBSTR(load_training_checkpoint(weights_only, *model2, opt2), "holds no optimizer state");
  }
  SUBCASE("missing generator") {
    TrainingCheckpoint ck;
    Generator g(1);
    CHECK_THROWS_WITH_SUBSTR(restore_rng_states(ck, {{"data", &g}}), "no state for the generator 'data'");
  }
}

TEST_CASE("checkpoint: a failed write leaves the previous checkpoint intact") {
  auto model = small_model(1);
  SGD opt(model->named_parameters(), 0.1, 0.9);
  Generator grads(5);
  fake_step(*model, opt, grads);

  SUBCASE("the write fails half way") {
    std::string path = kdtest::temp_path("ckpt.safetensors");
    TrainingCheckpoint info;
    info.epoch = 1;
    save_training_checkpoint(path, *model, opt, info);
    std::string before = read_bytes(path);
    // Make the next write fail after 1 KiB (the checkpoint is larger): EFBIG, SIGXFSZ ignored.
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old_limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    rlimit small = old_limit;
    small.rlim_cur = 1024;
    setrlimit(RLIMIT_FSIZE, &small);
    info.epoch = 2;
    bool threw = false;
    try {
      save_training_checkpoint(path, *model, opt, info);
    } catch (const Error&) {
      threw = true;
    }
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CHECK(threw);
    CHECK(read_bytes(path) == before);
    CHECK_FALSE(kdtest::file_exists(path + ".tmp"));
    auto model2 = small_model(3);
    SGD opt2(model2->named_parameters(), 0.1, 0.9);
    CHECK(load_training_checkpoint(path, *model2, opt2).epoch == 1);
  }
  SUBCASE("a read-only directory") {
    std::string dir = kdtest::temp_path("ro");
    std::filesystem::create_directories(dir);
    std::string path = dir + "/ckpt.safetensors";
    save_training_checkpoint(path, *model, opt, TrainingCheckpoint{});
    std::string before = read_bytes(path);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    if (::geteuid() == 0) {
      MESSAGE("running as root: directory permissions do not stop writes, read-only check skipped");
    } else {
      CHECK_THROWS_WITH_SUBSTR(save_training_checkpoint(path, *model, opt, TrainingCheckpoint{}), "writable?");
      CHECK(read_bytes(path) == before);
      CHECK_FALSE(kdtest::file_exists(path + ".tmp"));
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  }
  SUBCASE("a directory that does not exist") {
    std::string path = kdtest::temp_path("gone") + "/no/such/dir/ckpt.safetensors";
    CHECK_THROWS_WITH_SUBSTR(save_training_checkpoint(path, *model, opt, TrainingCheckpoint{}), "writable?");
  }
}
