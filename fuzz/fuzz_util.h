// fuzz_util.h: what the libFuzzer targets in fuzz/ share.
//
// The rule every target checks: a parser may refuse an input only by throwing kd::Error (with a
// message naming the problem). Anything else is a bug that libFuzzer reports: a sanitizer error
// (out-of-bounds read, use after free, signed overflow, ...), any other exception escaping the
// target (std::bad_alloc from a size taken on trust, nlohmann::json::type_error, std::out_of_range),
// an allocation past -malloc_limit_mb, or a run slower than -timeout.
//
// Parsers that only read files (the data-set loaders: gzip is detected by zlib from the file, and
// folders are listed on disk) get their input through a scratch folder of the process, in
// /dev/shm when it exists so that a write costs a memory copy. $KDLAB_FUZZ_TMP overrides where
// (scripts/fuzz.sh points it at a folder it removes afterwards).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "engine/error.h"
#include "engine/generator.h"
#include "nn/layers.h"
#include "nn/optim.h"

namespace kdfuzz {

namespace fs = std::filesystem;

// The scratch folder of this process, created at first use and removed at normal exit. (The
// name lives on the heap, never freed, so that it outlives the exit handler that needs it.)
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    const char* env = std::getenv("KDLAB_FUZZ_TMP");
    std::string base = env && *env ? env : (fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp");
    auto* d = new std::string(base + "/kdlab-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), (std::streamsize)size);
  if (!f.good()) {
    std::fprintf(stderr, "fuzz: cannot write the scratch file '%s'\n", path.c_str());
    std::abort();
  }
}

// Runs `parse`; a kd::Error is the accepted way to refuse an input, everything else escapes.
template <typename F>
void expect_kd_errors_only(F&& parse) {
  try {
    parse();
  } catch (const kd::Error&) {
  }
}

// The model and optimizer fuzz_checkpoint loads into and make_corpus writes the seed
// checkpoints of: a conv, a batch norm (buffers, including the int64 num_batches_tracked) and a
// linear layer, with SGD + momentum in two parameter groups.
inline std::shared_ptr<kd::nn::Sequential> checkpoint_model() {
  kd::Generator gen(1);
  auto m = std::make_shared<kd::nn::Sequential>();
  m->push_back(std::make_shared<kd::nn::Conv2d>(3, 4, 3, gen, 1, 1));
  m->push_back(kd::nn::BatchNorm2d(4));
  m->push_back(std::make_shared<kd::nn::Flatten>());
  m->push_back(std::make_shared<kd::nn::Linear>(4 * 2 * 2, 3, gen));
  return m;
}

inline std::unique_ptr<kd::nn::Optimizer> checkpoint_optimizer(kd::nn::Module& model) {
  auto groups = kd::nn::split_decay_groups(model.named_parameters(), 0.1, 5e-4, 0.9);
  return std::make_unique<kd::nn::SGD>(groups, kd::nn::SGDOptions{0.0, true});
}

}  // namespace kdfuzz
