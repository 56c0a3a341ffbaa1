// fuzz_checkpoint.cpp: libFuzzer target for training checkpoints (nn/checkpoint.h), the
// .safetensors files `kdlab train --resume` reads.
//
// The input is a whole checkpoint file, loaded into the model and optimizer of
// kdfuzz::checkpoint_model() (the ones make_corpus writes the seeds with), then used as
// train/train.cpp uses it on --resume: the generators restored; the scalars and the schedule
// must have the JSON types the format promises.
#include "fuzz_util.h"
#include "nn/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto model = kdfuzz::checkpoint_model();
  static auto optimizer = kdfuzz::checkpoint_optimizer(*model);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  kdfuzz::expect_kd_errors_only([&] {
    kd::nn::TrainingCheckpoint ck = kd::nn::parse_training_checkpoint(
        bytes, "fuzz.safetensors", kd::nn::LabeledModules{{"model", model.get()}}, optimizer.get());
    kd::Generator data_gen(0), aug_gen(0);
    kd::nn::restore_rng_states(ck, {{"data", &data_gen}, {"augment", &aug_gen}});
    if (!ck.scalars.is_object() || !ck.schedule.is_object() && !ck.schedule.is_null()) {
      std::fprintf(stderr, "fuzz_checkpoint: accepted scalars that are not an object or a schedule that is neither "
                   "an object nor null\n");
      std::abort();
    }
  });
  return 0;
}
