// fuzz_image.cpp: libFuzzer target for image decoding through stb_image (datasets/image_folder.cpp).
//
// The input is one encoded image (PNG, JPEG or BMP; stb_image picks the decoder from the
// content, whatever the file name says). It is loaded as the only image of a one-class image
// folder, which runs the loader's whole path: stbi_info for the size, the decode, the
// (H, W, C) -> (C, H, W) copy and the channel statistics.
#include "datasets/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string root = kdfuzz::scratch_dir() + "/images";
  static const bool made = kdfuzz::fs::create_directories(root + "/class0");
  (void)made;
  kdfuzz::write_file(root + "/class0/image.png", data, size);
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_image_folder(root, "train")); });
  return 0;
}
