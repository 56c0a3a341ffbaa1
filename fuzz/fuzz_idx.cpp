// fuzz_idx.cpp: libFuzzer target for the IDX reader of MNIST / Fashion-MNIST (datasets/idx.cpp).
//
// Input layout: a 4-byte little-endian length L, then L bytes of the image file, then the label
// file (L is clamped to what is there). Either file may be plain or gzip-compressed (the reader
// detects gzip from the content). The loader reads a folder, so both go to scratch files.
#include <cstring>

#include "datasets/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = kdfuzz::scratch_dir() + "/idx";
  static const bool made = kdfuzz::fs::create_directories(dir);
  (void)made;
  if (size < 4) return 0;
  uint32_t image_len = 0;
  std::memcpy(&image_len, data, 4);
  data += 4;
  size -= 4;
  const size_t n = std::min<size_t>(image_len, size);
  kdfuzz::write_file(dir + "/train-images-idx3-ubyte", data, n);
  kdfuzz::write_file(dir + "/train-labels-idx1-ubyte", data + n, size - n);
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_idx("mnist", dir, "train")); });
  return 0;
}
