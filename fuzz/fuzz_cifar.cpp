// fuzz_cifar.cpp: libFuzzer target for the CIFAR binary reader (datasets/cifar.cpp).
//
// The input is one .bin file (plain or gzip-compressed: the reader detects gzip from the
// content), read as CIFAR-10 (1 label byte + 3072 pixel bytes a record) and as CIFAR-100
// (2 label bytes + 3072). The loader only reads files, so the input goes through a scratch file.
#include "datasets/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = kdfuzz::scratch_dir() + "/fuzz.bin";
  kdfuzz::write_file(path, data, size);
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_cifar10(path, "train")); });
  kdfuzz::expect_kd_errors_only([&] { kd::data::validate(kd::data::load_cifar100(path, "test", true)); });
  return 0;
}
