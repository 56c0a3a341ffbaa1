// make_corpus.cpp: writes the seed corpora of the fuzz targets, fuzz/corpus/<target>/, from small
// valid files made by kdlab's own writers (and, for formats kdlab only reads, by hand here).
//
//   build-fuzz/fuzz/fuzz_make_corpus fuzz/corpus
//
// libFuzzer mutates these, so a seed is worth most when it is small and reaches a different part
// of the parser: each dtype, gzip and plain, each image format, each tar header kind. The whole
// corpus stays well under 200 KB. Run it again after changing a format; the output is
// deterministic (fixed seeds, no time stamps).
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "datasets/dataset.h"
#include "train/recipe.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "fuzz_util.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using namespace kd;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

std::string out_root;

void put(const std::string& target, const std::string& name, const Bytes& bytes) {
  const fs::path dir = fs::path(out_root) / target;
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
  KD_CHECK(f.good(), "cannot write {}", (dir / name).string());
}

void put(const std::string& target, const std::string& name, const std::string& text) {
  put(target, name, Bytes(text.begin(), text.end()));
}

// gzip of `data` in memory (deflate with the gzip wrapper; no name, no time stamp).
Bytes gzip(const Bytes& data) {
  z_stream z{};
  KD_CHECK(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
  Bytes out(deflateBound(&z, (uLong)data.size()) + 32);
  z.next_in = const_cast<uint8_t*>(data.data());
  z.avail_in = (uInt)data.size();
  z.next_out = out.data();
  z.avail_out = (uInt)out.size();
  KD_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// ---------------------------------------------------------------- images

Bytes encode_image(const std::string& format, int w, int h, int c) {
  std::vector<uint8_t> hwc((size_t)(w * h * c));
  for (size_t i = 0; i < hwc.size(); ++i) hwc[i] = (uint8_t)(i * 37 + 11);
  Bytes out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* o = static_cast<Bytes*>(ctx);
    o->insert(o->end(), (uint8_t*)data, (uint8_t*)data + size);
  };
  int ok = 0;
  if (format == "png") ok = stbi_write_png_to_func(sink, &out, w, h, c, hwc.data(), w * c);
  else if (format == "bmp") ok = stbi_write_bmp_to_func(sink, &out, w, h, c, hwc.data());
  else ok = stbi_write_jpg_to_func(sink, &out, w, h, c, hwc.data(), 90);
  KD_CHECK(ok, "stb_image_write failed for {}", format);
  return out;
}

// ---------------------------------------------------------------- tar (ustar, as GNU tar writes it)

void tar_header(Bytes& out, const std::string& name, uint64_t size, char type) {
  uint8_t h[512] = {};
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf((char*)h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
  std::snprintf((char*)h + 108, 8, "%07o", 0);
  std::snprintf((char*)h + 116, 8, "%07o", 0);
  std::snprintf((char*)h + 124, 12, "%011llo", (unsigned long long)size);
  std::snprintf((char*)h + 136, 12, "%011o", 0);
  std::memset(h + 148, ' ', 8);
  h[156] = (uint8_t)type;
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf((char*)h + 148, 8, "%06o", sum);
  h[155] = ' ';
  out.insert(out.end(), h, h + 512);
}

void tar_member(Bytes& out, const std::string& name, const Bytes& data, char type = '0') {
  tar_header(out, name, data.size(), type);
  out.insert(out.end(), data.begin(), data.end());
  out.resize((out.size() + 511) / 512 * 512, 0);
}

void tar_end(Bytes& out) { out.resize(out.size() + 1024, 0); }

// ---------------------------------------------------------------- the targets

void safetensors_seeds() {
  Generator gen(3);
  put("safetensors", "f32_i64_u8.safetensors",
      nn::serialize_safetensors({{"w", randn({2, 3}, gen)},
                                 {"idx", from_vector(std::vector<int64_t>{4, -1}, {2})},
                                 {"mask", from_vector(std::vector<uint8_t>{0, 1, 1}, {3})}},
                                {{"format", "pt"}}));
  put("safetensors", "scalar_and_empty.safetensors",
      nn::serialize_safetensors({{"s", full({}, 2.5f)}, {"e", zeros({0, 4})}}));
  put("safetensors", "no_tensors.safetensors", nn::serialize_safetensors({}, {{"k", "v"}}));
  // The other dtypes the reader converts (F16, BF16, F64, I32, I16, I8, BOOL) come from the test
  // fixture tests/fixtures/safetensors/all_dtypes.safetensors, which scripts/fuzz.sh adds.
}

void npy_seeds() {
  Generator gen(4);
  put("npy", "f4_2x3.npy", to_bytes(serialize_npy(randn({2, 3}, gen))));
  put("npy", "i8_4.npy", to_bytes(serialize_npy(from_vector(std::vector<int64_t>{1, -2, 3, 1LL << 40}, {4}))));
  put("npy", "u1_2x2x2.npy", to_bytes(serialize_npy(from_vector(std::vector<uint8_t>{0, 1, 2, 3, 4, 5, 6, 7}, {2, 2, 2}))));
  put("npy", "f4_0d.npy", to_bytes(serialize_npy(full({}, 1.5f))));
  // Other dtypes and versions (<f8, <i4, |b1, 2.0, 3.0): tests/fixtures/npy, added by fuzz.sh.
}

void cifar_seeds() {
  Bytes c10, c100;
  for (int r = 0; r < 2; ++r) {
    c10.push_back((uint8_t)(7 + r));
    c100.push_back((uint8_t)(3 + r));   // coarse
    c100.push_back((uint8_t)(42 + r));  // fine
    for (int p = 0; p < 3072; ++p) {
      c10.push_back((uint8_t)(p * 7 + r));
      c100.push_back((uint8_t)(p * 5 + r));
    }
  }
  put("cifar", "cifar10_2_records.bin", c10);
  put("cifar", "cifar100_2_records.bin", c100);
  put("cifar", "cifar10_2_records.bin.gz", gzip(c10));
}

void idx_seeds() {
  // Three 4 x 5 images and their labels: [u32 LE image length][images][labels].
  Bytes images = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
  for (int p = 0; p < 3 * 4 * 5; ++p) images.push_back((uint8_t)(p * 13));
  const Bytes labels = {0, 0, 8, 1, 0, 0, 0, 3, 2, 9, 0};
  auto pack = [](const Bytes& img, const Bytes& lab) {
    Bytes out(4);
    const uint32_t n = (uint32_t)img.size();
    std::memcpy(out.data(), &n, 4);
    out.insert(out.end(), img.begin(), img.end());
    out.insert(out.end(), lab.begin(), lab.end());
    return out;
  };
  put("idx", "plain.idx", pack(images, labels));
  put("idx", "gzip.idx", pack(gzip(images), gzip(labels)));
  put("idx", "gzip_images_plain_labels.idx", pack(gzip(images), labels));
}

void image_seeds() {
  put("image", "rgb_5x4.png", encode_image("png", 5, 4, 3));
  put("image", "gray_3x3.png", encode_image("png", 3, 3, 1));
  put("image", "rgba_4x2.png", encode_image("png", 4, 2, 4));
  put("image", "rgb_8x8.jpg", encode_image("jpg", 8, 8, 3));
  put("image", "gray_8x8.jpg", encode_image("jpg", 8, 8, 1));
  put("image", "rgb_3x2.bmp", encode_image("bmp", 3, 2, 3));
  put("image", "rgba_2x2.bmp", encode_image("bmp", 2, 2, 4));
}

void tar_seeds() {
  // An image folder: root/<class>/<image>, with a directory member, a GNU long name and a pax path.
  Bytes folder;
  tar_member(folder, "pets/", {}, '5');
  tar_member(folder, "pets/cat/a.png", encode_image("png", 3, 2, 3));
  const std::string long_name = "pets/dog/" + std::string(120, 'x') + ".png";
  Bytes gnu(long_name.begin(), long_name.end());
  gnu.push_back(0);
  tar_member(folder, "././@LongLink", gnu, 'L');
  tar_member(folder, long_name.substr(0, 99), encode_image("png", 3, 2, 3));
  const std::string record = "path=pets/dog/b.png\n";
  const std::string pax = std::to_string(record.size() + 3) + " " + record;  // "23 path=...\n"
  tar_member(folder, "pax_header", to_bytes(pax), 'x');
  tar_member(folder, "ignored_name", encode_image("bmp", 3, 2, 3));
  tar_end(folder);
  put("tar", "image_folder.tar", folder);
  put("tar", "image_folder.tar.gz", gzip(folder));

  // The official CIFAR-10 layout with one test record.
  Bytes record_bytes = {3};
  for (int p = 0; p < 3072; ++p) record_bytes.push_back((uint8_t)p);
  Bytes cifar;
  tar_member(cifar, "cifar-10-batches-bin/", {}, '5');
  tar_member(cifar, "cifar-10-batches-bin/test_batch.bin", record_bytes);
  tar_end(cifar);
  put("tar", "cifar10_test.tar.gz", gzip(cifar));
}

void recipe_seeds() {
  put("recipe", "defaults.json", train::TrainConfig{}.to_json().dump(1));
  put("recipe", "small.json",
      R"({"_comment": "a quick run", "model": "resnet8", "dataset": "cifar10", "epochs": 2, "lr": 0.05,)"
      R"( "milestones": [1, 2], "method": "kd", "method_params": {"T": 4, "alpha": 0.9}, "seed": 7})");
  put("recipe", "override_number.txt", "lr=0.05");
  put("recipe", "override_list.txt", "milestones=[150,180,210]");
  put("recipe", "override_string.txt", "model=resnet32x4");
  put("recipe", "override_method_param.txt", "T=4");
}

void checkpoint_seeds() {
  auto model = kdfuzz::checkpoint_model();
  auto optimizer = kdfuzz::checkpoint_optimizer(*model);
  Generator grads(5), data_gen(11), aug_gen(12);
  for (auto& p : model->parameters()) p.set_grad(randn(p.shape(), grads));
  optimizer->step();
  nn::TrainingCheckpoint info;
  info.epoch = 2;
  info.step = 1;
  info.schedule = nn::cosine_schedule(0.1, 10, 1).to_json();
  info.rng_states = nn::rng_states({{"data", &data_gen}, {"augment", &aug_gen}});
  info.scalars = {{"batch_in_epoch", 0}, {"best_accuracy", 12.5}, {"best_epoch", 1}};
  const std::string path = (fs::path(out_root) / "checkpoint" / "sgd_momentum.safetensors").string();
  fs::create_directories(fs::path(path).parent_path());
  nn::save_training_checkpoint(path, *model, *optimizer, info);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR   (writes OUT_DIR/<target>/ seed files; normally fuzz/corpus)\n", argv[0]);
    return 2;
  }
  out_root = argv[1];
  try {
    safetensors_seeds();
    npy_seeds();
    cifar_seeds();
    idx_seeds();
    image_seeds();
    tar_seeds();
    recipe_seeds();
    checkpoint_seeds();
  } catch (const kd::Error& e) {
    std::fprintf(stderr, "make_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
