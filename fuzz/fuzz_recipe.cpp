// fuzz_recipe.cpp: libFuzzer target for the recipe format (train/recipe.h).
//
// The input is a recipe file's text (parse_recipe, what load_recipe runs on a file's content),
// and also a command-line override "key=value" (kdlab train --set, kdlab distill --set). An
// accepted configuration must serialise (to_json is written into every run's config.json).
#include "train/recipe.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kdfuzz::expect_kd_errors_only([&] {
    kd::train::TrainConfig config;
    kd::train::parse_recipe(text, config, "fuzz.json");
    (void)config.to_json().dump(2);
  });
  kdfuzz::expect_kd_errors_only([&] {
    kd::train::TrainConfig config;
    kd::train::apply_override_string(text, config);
    (void)config.to_json().dump(2);
  });
  kdfuzz::expect_kd_errors_only([&] {
    kd::train::TrainConfig config;
    kd::train::apply_distill_override(text, config);
    (void)config.to_json().dump(2);
  });
  return 0;
}
