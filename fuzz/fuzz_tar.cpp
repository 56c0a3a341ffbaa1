// fuzz_tar.cpp: libFuzzer target for the tar reader (datasets/archive.cpp read_tar), which the
// CIFAR loader (the official .tar.gz) and the image-folder loader (a .tar.gz of a folder) use.
//
// The input is one archive, plain or gzip-compressed. It is walked member by member, then
// loaded as an image folder (split "train") and as the CIFAR-10 test split.
#include "datasets/archive.h"
#include "datasets/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = kdfuzz::scratch_dir() + "/fuzz.tar";
  kdfuzz::write_file(path, data, size);
  kdfuzz::expect_kd_errors_only([&] {
    kd::data::read_tar(path, [](const std::string&) { return true; }, [](kd::data::TarEntry&) {});
  });
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_image_folder(path, "train")); });
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_cifar10(path, "test")); });
  return 0;
}
