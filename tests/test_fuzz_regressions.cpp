// Reliability of the file parsers (docs/RELIABILITY.md):
//   1. every input the fuzzers of fuzz/ found crashing a parser (committed under
//      tests/fixtures/fuzz/) is now refused with a kd::Error that names the problem;
//   2. the limits of issue #11: a header claiming 10^12 elements, negative or overflowing sizes,
//      offsets past the end of the file, duplicate keys, a 100 MB JSON header, JSON nested a
//      million deep: each refused with a clear error before anything of that size is allocated
//      (a replaced operator new records the largest request made while parsing);
//   3. the seed corpora fuzz/corpus/<target>/ are valid inputs that the parsers accept, so the
//      fuzzers start from files that reach deep into each format.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>

#include "datasets/archive.h"
#include "datasets/dataset.h"
#include "train/recipe.h"
#include "engine/npy.h"
#include "fuzz/fuzz_util.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"
#include "test_util.h"

// ---------------------------------------------------------------- the largest allocation
// Every operator new of this test program goes through here (std::string, std::vector,
// nlohmann::json, ...); tensors' storage uses aligned_alloc, whose failure is a kd::Error saying
// "out of memory", which the tests below tell apart from the parsers' own messages.
static std::atomic<size_t> g_largest_new{0};

// (noinline: GCC 12 otherwise inlines these and warns about free() on memory from new.)
__attribute__((noinline)) void* operator new(size_t n) {
  size_t seen = g_largest_new.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_new.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void* operator new[](size_t n) { return operator new(n); }
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p, size_t) noexcept { std::free(p); }

using namespace kd;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr size_t kSmall = 16 << 20;  // 16 MiB: more than any of these inputs needs to be refused

// Runs `parse`, which must throw kd::Error containing `substr`, and returns the largest single
// operator new request made meanwhile.
template <typename F>
size_t refused_with(F&& parse, const std::string& substr) {
  g_largest_new = 0;
  std::string message;
  try {
    parse();
  } catch (const Error& e) {
    message = e.what();
  }
  const size_t largest = g_largest_new.load();
  INFO("error message: " << message);
  CHECK_MESSAGE(message.find(substr) != std::string::npos, "expected an error containing: " << substr);
  return largest;
}

#define CHECK_REFUSED_SMALL(expr, substr) CHECK(refused_with([&] { (void)(expr); }, substr) < kSmall)

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot read " << path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), (std::streamsize)bytes.size());
  REQUIRE(f.good());
}

std::string fuzz_fixture(const std::string& name) { return kdtest::fixture_path("fuzz/" + name); }

// A safetensors file: the 8-byte little-endian header length, the header, `data_bytes` zeros.
std::string safetensors_file(const std::string& header, size_t data_bytes = 0) {
  const uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + std::string(data_bytes, '\0');
}

std::string one_tensor(const std::string& fields) { return "{\"t\":{" + fields + "}}"; }

// A .npy file (version 1.0) with the given header dict and `data_bytes` zeros.
std::string npy_file(const std::string& dict, size_t data_bytes = 0) {
  std::string header = dict + "\n";
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += (char)(header.size() & 0xff);
  out += (char)(header.size() >> 8);
  return out + header + std::string(data_bytes, '\0');
}

// One ustar header (512 bytes) with a raw 12-byte size field and a correct checksum.
std::string tar_header(const std::string& name, const std::string& size_field, char type = '0') {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::memcpy(&h[100], "0000644", 7);
  std::memcpy(&h[124], size_field.data(), std::min<size_t>(size_field.size(), 12));
  std::memset(&h[148], ' ', 8);
  h[156] = type;
  std::memcpy(&h[257], "ustar", 6);
  unsigned sum = 0;
  for (char c : h) sum += (uint8_t)c;
  std::snprintf(&h[148], 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

// GNU base-256 size field: 0x80, then the value big-endian in the remaining 11 bytes.
std::string base256(uint64_t v, uint8_t top = 0) {
  std::string f(12, '\0');
  f[0] = (char)(0x80 | top);
  for (int i = 11; i >= 4; --i, v >>= 8) f[i] = (char)(v & 0xff);
  return f;
}

void read_all(const std::string& tar) {
  data::read_tar(tar, [](const std::string&) { return true; }, [](data::TarEntry&) {});
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

}  // namespace

// ================================================================ 1. what the fuzzers found

TEST_CASE("fuzz regressions: every input a fuzzer crashed a parser with is refused with a clear error") {
  SUBCASE("npy: a zero dimension beside huge ones overflowed the strides (UBSan, fuzz_npy)") {
    // shape (0, 2, 2, 220, 73, 2, 220, 222, 25220, 222, 252, 2): no element, but the strides
    // multiply past 2^63.
    CHECK_THROWS_WITH_SUBSTR(parse_npy(slurp(fuzz_fixture("npy_zero_dim_stride_overflow.npy")), "x.npy"),
                             "x.npy: absurd .npy shape (0, 2, 2, 220");
  }
  SUBCASE("image: a JPEG huffman table with more than 256 codes overflowed stb_image's table (fuzz_image)") {
    const std::string root = kdtest::temp_path("dht");
    write(root + "/cls/a.jpg", slurp(fuzz_fixture("image_jpeg_dht_overflow.jpg")));
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "a JPEG huffman table declares");
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "a.jpg");
  }
  SUBCASE("image: FF fill bytes before the JPEG's SOI hid a 257-code huffman table from the check (fuzz_image)") {
    const std::string root = kdtest::temp_path("dht_fill");
    const std::string bytes = slurp(fuzz_fixture("image_jpeg_fill_before_soi.jpg"));  // FF FF FF FF FF FF D8 ...
    REQUIRE(bytes.substr(0, 7) == std::string("\xFF\xFF\xFF\xFF\xFF\xFF\xD8", 7));
    write(root + "/cls/a.jpg", bytes);
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "a JPEG huffman table declares");
    // and a valid JPEG with fill bytes before its SOI is still read (stb_image accepts it)
    const std::string ok = kdtest::temp_path("dht_fill_ok");
    write(ok + "/cls/a.jpg", "\xFF\xFF" + slurp((fs::path(KDLAB_SOURCE_DIR) / "fuzz/corpus/image/rgb_8x8.jpg").string()));
    CHECK(data::load_image_folder(ok, "train").size() == 1);
  }
  SUBCASE("recipe: an override that is not UTF-8 escaped as json::type_error when printed (fuzz_recipe)") {
    const std::string kv = slurp(fuzz_fixture("recipe_override_invalid_utf8.txt"));  // "lr=\xd3.05"
    train::TrainConfig config;
    CHECK_THROWS_WITH_SUBSTR(train::apply_override_string(kv, config), "is not valid UTF-8 text");
    CHECK_THROWS_WITH_SUBSTR(train::apply_distill_override(kv, config), "is not valid UTF-8 text");
    CHECK(config.lr == train::TrainConfig{}.lr);  // unchanged
  }
  SUBCASE("recipe: a milestone of 7e108 was cast to int64 (UBSan: outside the range of 'long') (fuzz_recipe)") {
    const std::string kv = slurp(fuzz_fixture("recipe_milestone_out_of_range.txt"));  // "milestones=[7411...1,1820...0]"
    train::TrainConfig config;
    CHECK_THROWS_WITH_SUBSTR(train::apply_override_string(kv, config), "setting 'milestones' must be a whole number");
    CHECK(config.milestones.empty());  // unchanged
    // the same rule for every integer setting; whole numbers written as floats still pass
    CHECK_THROWS_WITH_SUBSTR(train::apply_override_string("epochs=1e300", config), "'epochs' must be a whole number");
    CHECK_THROWS_WITH_SUBSTR(train::apply_override_string("epochs=2.5", config), "'epochs' must be a whole number");
    CHECK_THROWS_WITH_SUBSTR(train::apply_override_string("seed=-1", config), "'seed' must be a whole number >= 0");
    CHECK_THROWS_WITH_SUBSTR(train::parse_recipe(R"({"batch_size": 1e19})", config, "r.json"), "'batch_size' must be");
    train::apply_override_string("epochs=3.0", config);
    CHECK(config.epochs == 3);
    train::apply_override_string("milestones=[5.0,8]", config);
    CHECK(config.milestones == std::vector<int64_t>{5, 8});
  }
  SUBCASE("recipe: a number too large for a double (1e4150) escaped as json::out_of_range (fuzz_recipe)") {
    const std::string text = slurp(fuzz_fixture("recipe_number_out_of_range.txt"));  // "150e4150,18d resnet110..."
    train::TrainConfig config;
    CHECK_THROWS_WITH_SUBSTR(train::parse_recipe(text, config, "r.json"), "recipe 'r.json' is not valid JSON");
    CHECK_THROWS_WITH_SUBSTR(train::parse_recipe("{\"lr\": 1e999}", config, "r.json"), "number overflow");
    CHECK(config.lr == train::TrainConfig{}.lr);  // unchanged
  }
  SUBCASE("checkpoint: an optimizer group without 'weight_decay' hit json's assertion (fuzz_checkpoint)") {
    auto model = kdfuzz::checkpoint_model();
    auto optimizer = kdfuzz::checkpoint_optimizer(*model);
    const std::vector<float> before = to_float_vector(model->parameters()[0]);
    CHECK_THROWS_WITH_SUBSTR(
        nn::parse_training_checkpoint(slurp(fuzz_fixture("checkpoint_optim_group_missing_key.safetensors")), "c",
                                      {{"model", model.get()}}, optimizer.get()),
        "c: the optimizer state in the checkpoint does not have the layout this optimizer writes: at '/groups/1' it "
        "expected an object with the key 'weight_decay'");
    CHECK(to_float_vector(model->parameters()[0]) == before);  // nothing was loaded
  }
  SUBCASE("checkpoint: an optimizer step count of Inf was cast to int64 (UBSan, fuzz_checkpoint)") {
    auto model = kdfuzz::checkpoint_model();
    auto optimizer = kdfuzz::checkpoint_optimizer(*model);
    const std::vector<float> before = to_float_vector(model->parameters()[0]);
    CHECK_THROWS_WITH_SUBSTR(
        nn::parse_training_checkpoint(slurp(fuzz_fixture("checkpoint_step_f64_inf.safetensors")), "c",
                                      {{"model", model.get()}}, optimizer.get()),
        "must be a whole, non-negative step count, got inf");
    CHECK(to_float_vector(model->parameters()[0]) == before);  // nothing was loaded
  }
  SUBCASE("image: a PNG chunk declaring 1.6 GB made stb_image allocate it before reading (fuzz_image)") {
    const std::string root = kdtest::temp_path("png_chunk");
    write(root + "/cls/a.png", slurp(fuzz_fixture("image_png_chunk_length.png")));
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "a PNG chunk at byte");
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "only");
  }
  SUBCASE("image: an empty first IDAT chunk made stb_image call memcpy(NULL, ..., 0) (UBSan) (fuzz_image)") {
    const std::string root = kdtest::temp_path("png_empty_idat");
    write(root + "/cls/a.png", slurp(fuzz_fixture("image_png_empty_idat.png")));  // 52 bytes: IHDR, IDAT of length 0
    CHECK_THROWS_WITH_SUBSTR(data::load_image_folder(root, "train"), "first image-data chunk (IDAT, at byte 33) is empty");
  }
}

// ================================================================ 2. the limits

TEST_CASE("parser limits: safetensors") {
  auto parse = [](const std::string& bytes) { return nn::parse_safetensors(bytes, "s"); };
  SUBCASE("a header claiming 10^12 elements") {
    CHECK_REFUSED_SMALL(
        parse(safetensors_file(one_tensor(R"("dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000])"))),
        "run past the end of the data buffer");
  }
  SUBCASE("negative sizes and offsets") {
    CHECK_REFUSED_SMALL(parse(safetensors_file(one_tensor(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])"), 4)),
                        "shape has the negative value -1");
    CHECK_REFUSED_SMALL(parse(safetensors_file(one_tensor(R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])"), 4)),
                        "data_offsets has the negative value -4");
  }
  SUBCASE("overflowing sizes") {
    CHECK_REFUSED_SMALL(
        parse(safetensors_file(one_tensor(R"("dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4])"))),
        "multiply past 2^63");
    // No element, but the strides would overflow (the bug fuzz_npy found, in safetensors).
    CHECK_REFUSED_SMALL(
        parse(safetensors_file(
            one_tensor(R"("dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0])"))),
        "multiply past 2^63");
    CHECK_REFUSED_SMALL(
        parse(safetensors_file(one_tensor(R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8])"), 8)),
        "byte count overflows");
  }
  SUBCASE("offsets past the end of the file") {
    CHECK_REFUSED_SMALL(parse(safetensors_file(one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,8])"), 4)),
                        "run past the end of the data buffer (4 bytes)");
    CHECK_REFUSED_SMALL(
        parse(safetensors_file(
            one_tensor(R"("dtype":"U8","shape":[4],"data_offsets":[18446744073709551610,18446744073709551614])"))),
        "run past the end");
  }
  SUBCASE("duplicate keys") {
    CHECK_REFUSED_SMALL(parse(safetensors_file(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                               R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                               2)),
                        "the safetensors header has the key 't' twice");
    CHECK_REFUSED_SMALL(parse(safetensors_file(one_tensor(R"("dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1])"), 1)),
                        "has the key 'dtype' twice");
  }
  SUBCASE("a 100 MB JSON header") {
    // A header length of 100 MiB in a 16-byte file: refused from the length prefix alone, from
    // memory and from disk, before the header is read.
    std::string bytes = safetensors_file("{}", 6);
    const uint64_t n = 100ull << 20;
    std::memcpy(bytes.data(), &n, 8);
    CHECK_REFUSED_SMALL(parse(bytes), "header length 104857600 exceeds the limit of 100000000 bytes");
    const std::string path = kdtest::temp_path("big_header.safetensors");
    write(path, bytes);
    CHECK_REFUSED_SMALL(nn::load_safetensors(path), "header length 104857600 exceeds the limit");
    // A length within the limit that runs past the end of the file.
    const uint64_t m = 99'000'000;
    std::memcpy(bytes.data(), &m, 8);
    write(path, bytes);
    CHECK_REFUSED_SMALL(nn::load_safetensors(path), "runs past the end of the file (16 bytes)");
  }
  SUBCASE("JSON nested a million deep (printing it would overflow the stack)") {
    CHECK_REFUSED_SMALL(parse(safetensors_file("{\"__metadata__\":{\"k\":" + nested(1'000'000) + "}}")),
                        "the safetensors header nests deeper than 16 levels");
  }
}

TEST_CASE("parser limits: npy") {
  auto parse = [](const std::string& bytes) { return parse_npy(bytes, "n.npy"); };
  SUBCASE("a header claiming 10^12 elements") {
    CHECK_REFUSED_SMALL(parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }")),
                        "truncated .npy data: shape (1000000, 1000000) of <f4 needs 4000000000000 bytes");
    CHECK_REFUSED_SMALL(parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4194304, 4194304), }")),
                        "absurd .npy shape");
  }
  SUBCASE("negative and overflowing sizes") {
    CHECK_REFUSED_SMALL(parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }")),
                        "negative dimension -1");
    CHECK_REFUSED_SMALL(
        parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 999999999999, 999999999999), }")),
        "absurd .npy shape");
    CHECK_REFUSED_SMALL(
        parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 999999999999, 999999999999), }")),
        "absurd .npy shape");
    CHECK_REFUSED_SMALL(parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1234567890123456789012,), }")),
                        "absurd dimension");
  }
  SUBCASE("a header length past the end of the file") {
    std::string bytes = std::string("\x93NUMPY\x02\x00", 8) + std::string("\xff\xff\xff\x7f", 4) + "{}";
    CHECK_REFUSED_SMALL(parse(bytes), "the header claims 2147483647 bytes but only 2 follow");
  }
  SUBCASE("duplicate keys") {
    CHECK_REFUSED_SMALL(
        parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'descr': '<f8', }", 8)),
        "the key 'descr' appears twice");
  }
}

TEST_CASE("parser limits: IDX") {
  const std::string dir = fs::path(kdtest::temp_path("idx")).string();
  fs::create_directories(dir);
  auto images = [](uint32_t n, uint32_t rows, uint32_t cols) {
    std::string b = {0, 0, 8, 3};
    for (uint32_t v : {n, rows, cols})
      for (int s = 24; s >= 0; s -= 8) b += (char)((v >> s) & 0xff);
    return b;
  };
  write(dir + "/train-labels-idx1-ubyte", std::string({0, 0, 8, 1, 0, 0, 0, 1, 3}));
  SUBCASE("a header claiming 2^32 - 1 images of 4096 x 4096 (7 x 10^16 pixels) in a 16-byte file") {
    write(dir + "/train-images-idx3-ubyte", images(0xffffffffu, 4096, 4096));
    CHECK_REFUSED_SMALL(data::load_idx("mnist", dir, "train"),
                        "but its header announces 4294967295 images of 4096 x 4096");
  }
  SUBCASE("image sizes of 0 or past 4096") {
    write(dir + "/train-images-idx3-ubyte", images(1, 0xffffffffu, 28));
    CHECK_REFUSED_SMALL(data::load_idx("mnist", dir, "train"), "implausible image size 4294967295 x 28");
  }
}

TEST_CASE("parser limits: tar") {
  const std::string dir = fs::path(kdtest::temp_path("tar")).string();
  fs::create_directories(dir);
  const std::string path = dir + "/a.tar";
  SUBCASE("a member claiming 512 GiB in a 2 KB archive is read as its bytes arrive") {
    write(path, tar_header("big.bin", base256(512ull << 30)) + std::string(1536, 'x'));
    CHECK_REFUSED_SMALL(read_all(path), "'" + path + "' is truncated: the archive ends inside member 'big.bin'");
  }
  SUBCASE("sizes past 1 TiB, and base-256 sizes past 64 bits") {
    write(path, tar_header("big.bin", base256(2ull << 40)) + std::string(1024, '\0'));
    CHECK_REFUSED_SMALL(read_all(path), "claims a member of 2199023255552 bytes, more than the 1099511627776");
    write(path, tar_header("big.bin", base256(1, 0x3f)) + std::string(1024, '\0'));  // 0x3f << 88
    CHECK_REFUSED_SMALL(read_all(path), "claims a member of 18446744073709551615 bytes");
  }
  SUBCASE("a GNU long name claiming 100 MB") {
    write(path, tar_header("././@LongLink", "00620000000", 'L') + std::string(1024, '\0'));  // octal: 100 MiB
    CHECK_REFUSED_SMALL(read_all(path), "claims a long-name / pax record of 104857600 bytes");
  }
}

TEST_CASE("parser limits: images") {
  // A PNG whose header claims W x H RGB pixels, and nothing else (stb_image does not check CRCs).
  auto be32 = [](uint32_t v) {
    return std::string{(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
  };
  auto png = [&](uint32_t w, uint32_t h) {
    return "\x89PNG\r\n\x1a\n" + be32(13) + "IHDR" + be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5) +
           be32(0) + be32(0) + "IEND" + be32(0);
  };
  const std::string root = kdtest::temp_path("huge_png");
  // The control: with a sane size the header is read (the decode then fails for want of pixels).
  write(root + "/cls/a.png", png(2, 2));
  std::string control;
  try {
    data::load_image_folder(root, "train");
  } catch (const Error& e) {
    control = e.what();
  }
  CHECK(control.find("Image not of any known type") == std::string::npos);
  // 100000 x 100000 (30 GB of pixels) and 8193 x 1 (one past kdlab's 8192 a side): refused from
  // the header, which stb_image then reports as not a readable image.
  for (auto [w, h] : {std::pair<uint32_t, uint32_t>{100000, 100000}, {8193, 1}, {1, 8193}}) {
    INFO(w << " x " << h);
    write(root + "/cls/a.png", png(w, h));
    CHECK_REFUSED_SMALL(data::load_image_folder(root, "train"), "Image not of any known type, or corrupt");
  }
  write(root + "/cls/a.png", png(8192, 1));
  CHECK(refused_with([&] { data::load_image_folder(root, "train"); }, "cannot decode image") < kSmall);
}

TEST_CASE("parser limits: recipes and checkpoints refuse JSON nested a million deep") {
  train::TrainConfig config;
  CHECK_REFUSED_SMALL(train::parse_recipe("{\"method_params\": {\"x\": " + nested(1'000'000) + "}}", config, "r.json"),
                      "r.json: the JSON nests deeper than 64 levels");
  CHECK_REFUSED_SMALL(train::apply_distill_override("x=" + nested(1'000'000), config), "nests deeper than 64 levels");
  CHECK_NOTHROW(train::parse_recipe("{\"method_params\": {\"x\": " + nested(20) + "}}", config, "r.json"));

  // A real checkpoint whose 'scalars' are replaced.
  auto model = kdfuzz::checkpoint_model();
  auto optimizer = kdfuzz::checkpoint_optimizer(*model);
  auto with_scalars = [&](const std::string& scalars) {
    nn::TrainingCheckpoint info;
    info.scalars = nlohmann::json::object();
    const std::string path = kdtest::temp_path("c.safetensors");
    nn::save_training_checkpoint(path, *model, *optimizer, info);
    nn::SafetensorsFile f = nn::load_safetensors(path);
    f.metadata["scalars"] = scalars;
    return nn::serialize_safetensors(f.tensors, f.metadata);
  };
  auto load = [&](const std::string& bytes) {
    return nn::parse_training_checkpoint(bytes, "c", {{"model", model.get()}}, optimizer.get());
  };
  CHECK_REFUSED_SMALL(load(with_scalars(nested(1'000'000))), "c: checkpoint metadata 'scalars' nests deeper than 64");
  CHECK_REFUSED_SMALL(load(with_scalars("[1, 2]")), "'scalars' must be a JSON object, got a JSON array");
  CHECK(load(with_scalars("{\"best_accuracy\": 50}")).scalars.value("best_accuracy", 0) == 50);
}

// ================================================================ 3. the seed corpora

TEST_CASE("fuzz seed corpora: every seed is a valid input its parser accepts") {
  const fs::path corpus = fs::path(KDLAB_SOURCE_DIR) / "fuzz" / "corpus";
  auto seeds = [&](const std::string& target) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(corpus / target)) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    REQUIRE_MESSAGE(!files.empty(), "no seeds in fuzz/corpus/" << target);
    return files;
  };
  const std::string scratch = fs::path(kdtest::temp_path("seeds")).string();
  for (const std::string& f : seeds("safetensors")) {
    INFO(f);
    CHECK_NOTHROW(nn::parse_safetensors(slurp(f), f));
  }
  for (const std::string& f : seeds("npy")) {
    INFO(f);
    CHECK_NOTHROW(parse_npy(slurp(f), f));
  }
  for (const std::string& f : seeds("cifar")) {
    INFO(f);
    const std::string copy = scratch + "/" + fs::path(f).filename().string();
    write(copy, slurp(f));
    if (f.find("cifar100") != std::string::npos) CHECK(data::load_cifar100(copy, "train").size() == 2);
    else CHECK(data::load_cifar10(copy, "train").size() == 2);
  }
  for (const std::string& f : seeds("idx")) {
    INFO(f);
    const std::string bytes = slurp(f);
    uint32_t n = 0;
    std::memcpy(&n, bytes.data(), 4);
    const std::string dir = scratch + "/idx_" + fs::path(f).stem().string();
    write(dir + "/train-images-idx3-ubyte", bytes.substr(4, n));
    write(dir + "/train-labels-idx1-ubyte", bytes.substr(4 + n));
    CHECK(data::load_idx("mnist", dir, "train").size() == 3);
  }
  for (const std::string& f : seeds("image")) {
    INFO(f);
    const std::string root = scratch + "/img_" + fs::path(f).stem().string();
    write(root + "/cls/" + fs::path(f).filename().string(), slurp(f));
    CHECK(data::load_image_folder(root, "train").size() == 1);
  }
  for (const std::string& f : seeds("tar")) {
    INFO(f);
    CHECK_NOTHROW(read_all(f));
    if (f.find("cifar10") != std::string::npos) CHECK(data::load_cifar10(f, "test").size() == 1);
    else CHECK(data::load_image_folder(f, "train").size() == 3);
  }
  for (const std::string& f : seeds("recipe")) {
    INFO(f << " (after a change of the recipe format, regenerate the seeds: fuzz/make_corpus.cpp)");
    train::TrainConfig config;
    if (f.ends_with(".json")) CHECK_NOTHROW(train::parse_recipe(slurp(f), config, f));
    else CHECK_NOTHROW(train::apply_distill_override(slurp(f), config));
  }
  for (const std::string& f : seeds("checkpoint")) {
    INFO(f);
    auto model = kdfuzz::checkpoint_model();
    auto optimizer = kdfuzz::checkpoint_optimizer(*model);
    nn::TrainingCheckpoint ck =
        nn::parse_training_checkpoint(slurp(f), f, {{"model", model.get()}}, optimizer.get());
    CHECK(ck.epoch == 2);
    CHECK(ck.rng_states.size() == 2);
  }
}
