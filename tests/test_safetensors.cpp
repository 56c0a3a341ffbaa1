// safetensors: round trips, files laid out as the Python library writes them
// (tests/reference/gen_safetensors.py), every kind of malformed file, and the shared teacher.
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
using namespace kd::nn;
using kdtest::json;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}

// A file from a header text and a data buffer of `data_size` zero bytes.
std::string make_file(const std::string& header, size_t data_size) {
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + std::string(data_size, '\0');
}

// Same dtype, shape, and bit-identical values (NaN equal to NaN).
void check_identical(const Tensor& got, const Tensor& want, const std::string& name) {
  INFO("tensor " << name);
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  if (want.dtype() == DType::f32) {
    auto a = to_float_vector(got), b = to_float_vector(want);
    for (size_t i = 0; i < a.size(); ++i) {
      INFO("element " << i << ": " << a[i] << " vs " << b[i]);
      CHECK(((std::isnan(a[i]) && std::isnan(b[i])) || std::memcmp(&a[i], &b[i], 4) == 0));
    }
  } else {
    CHECK(to_int_vector(got) == to_int_vector(want));
  }
}

}  // namespace

TEST_CASE("safetensors: round trip of every written dtype and layout") {
  Generator gen(3);
  Tensor a = randn({3, 4}, gen);
  NamedTensors tensors = {
      {"layer.weight", a},
      {"transposed", a.t()},                  // non-contiguous: written in C order
      {"sliced", a.slice(1, 1, 4, 2)},        // strided view
      {"labels", from_vector(std::vector<int64_t>{3, -1, 1LL << 50}, {3})},
      {"mask", from_vector(std::vector<uint8_t>{0, 1, 255, 7}, {2, 2})},
      {"bn.num_batches_tracked", scalar_tensor(17, DType::i64)},  // 0-d
      {"scalar", scalar_tensor(-0.5)},
      {"nothing", zeros({0, 5})},
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "hello \"world\"\n"}};
  std::string path = kdtest::temp_path("round.safetensors");
  save_safetensors(path, tensors, meta);
  CHECK_FALSE(kdtest::file_exists(path + ".tmp"));

  SafetensorsFile f = load_safetensors(path);
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(f.tensors[i].first == tensors[i].first);  // data order = the given order
    check_identical(f.tensors[i].second, tensors[i].second.contiguous(), tensors[i].first);
  }
  // Loaded tensors own their memory and are plain contiguous leaves.
  CHECK(f.tensors[1].second.is_contiguous());
  CHECK_FALSE(f.tensors[0].second.requires_grad());

  // The layout the Python library writes: header length a multiple of 8, padded with spaces,
  // "__metadata__" first, keys in the given order.
  std::string bytes = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  std::string header = bytes.substr(8, n);
  CHECK(header.rfind("{\"__metadata__\":", 0) == 0);
  CHECK(header.find("layer.weight") < header.find("transposed"));
  CHECK(header.find_last_not_of(' ') == header.find_last_of('}'));
  CHECK(bytes == serialize_safetensors(tensors, meta));
  CHECK(parse_safetensors(bytes, "memory").tensors.size() == tensors.size());

  // No metadata: no "__metadata__" key at all.
  std::string plain = serialize_safetensors({{"x", a}});
  CHECK(plain.find("__metadata__") == std::string::npos);
  CHECK(parse_safetensors(plain, "plain").metadata.empty());

  // to_map
  auto m = to_map(f.tensors);
  CHECK(m.size() == tensors.size());
  CHECK(m.at("labels").at({2}) == (double)(1LL << 50));
  CHECK_THROWS_WITH_SUBSTR(to_map({{"a", a}, {"a", a}}), "appears twice");
}

TEST_CASE("safetensors: files laid out by the Python library, all readable dtypes") {
  std::string dir = kdtest::fixture_path("safetensors");
  std::ifstream ef(dir + "/expected.json");
  REQUIRE_MESSAGE(ef.good(), "missing fixture " << dir << " (run tests/reference/gen_safetensors.py)");
  json expected = json::parse(ef);

  SafetensorsFile f = load_safetensors(dir + "/all_dtypes.safetensors");
  CHECK(f.metadata == expected["metadata"].get<std::map<std::string, std::string>>());
  REQUIRE(f.tensors.size() == expected["order"].size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& [name, t] = f.tensors[i];
    CHECK(name == expected["order"][i].get<std::string>());  // in the file's data order
    check_identical(t, kdtest::tensor_from_json(expected["tensors"][name]), name);
  }
  auto m = to_map(f.tensors);
  // Spot checks of the conversions: F16 / BF16 / F64 -> f32, I32 / I16 / I8 -> i64, BOOL -> u8.
  CHECK(m.at("f16.values").dtype() == DType::f32);
  CHECK(m.at("f16.values").at({4}) == 65504.0);
  CHECK(std::isinf(m.at("bf16.values").at({7})));
  CHECK(std::isnan(m.at("f16.values").at({9})));
  CHECK(m.at("f16.values").at({5}) == doctest::Approx(5.96e-8).epsilon(0.01));  // an F16 subnormal
  CHECK(std::signbit(m.at("f16.values").at({1})));                             // -0 stays -0
  CHECK(m.at("i32.values").dtype() == DType::i64);
  CHECK(m.at("i32.values").at({3}) == -2147483648.0);
  CHECK(m.at("i8.values").at({3}) == -128.0);
  CHECK(m.at("bool.mask").dtype() == DType::u8);
  CHECK(m.at("bn.num_batches_tracked").dim() == 0);
  CHECK(m.at("bn.num_batches_tracked").item() == 391.0);
  CHECK(m.at("empty").shape() == Shape{0, 3});

  // What was read writes back and reads again unchanged (now as F32 / I64 / U8).
  std::string path = kdtest::temp_path("rewritten.safetensors");
  save_safetensors(path, f.tensors, f.metadata);
  SafetensorsFile g = load_safetensors(path);
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (size_t i = 0; i < g.tensors.size(); ++i) check_identical(g.tensors[i].second, f.tensors[i].second, g.tensors[i].first);

  // An empty file ("{}" padded to 8 bytes) holds no tensors.
  SafetensorsFile e = load_safetensors(dir + "/empty.safetensors");
  CHECK(e.tensors.empty());
  CHECK(e.metadata.empty());
}

TEST_CASE("safetensors: malformed files are rejected with the file and the fault named") {
  const std::string src = "bad.safetensors";
  auto parse = [&](const std::string& bytes) { return parse_safetensors(bytes, src); };
  auto one = [](const std::string& info) { return "{\"t\":" + info + "}"; };

  SUBCASE("too short") {
    CHECK_THROWS_WITH_SUBSTR(parse(""), "bad.safetensors: 0 bytes is too short");
    CHECK_THROWS_WITH_SUBSTR(parse("1234567"), "too short for a safetensors file");
  }
  SUBCASE("header length beyond the file") {
    std::string b = make_file("{}      ", 0);
    b[0] = 100;  // claims 100 bytes of header, 8 present
    CHECK_THROWS_WITH_SUBSTR(parse(b), "header length 100 runs past the end of the file");
  }
  SUBCASE("header length over 100 MB") {
    std::string b = make_file("{}      ", 0);
    uint64_t huge = 200'000'000;
    std::memcpy(b.data(), &huge, 8);
    CHECK_THROWS_WITH_SUBSTR(parse(b), "exceeds the limit of 100000000 bytes");
    uint64_t max = ~0ull;
    std::memcpy(b.data(), &max, 8);
    CHECK_THROWS_WITH_SUBSTR(parse(b), "exceeds the limit");
  }
  SUBCASE("invalid JSON") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("{\"t\": {\"dtype\": ", 0)), "bad.safetensors: the safetensors header is not valid JSON");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("[1, 2]  ", 0)), "must be a JSON object, got a JSON array");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("[1]"), 0)), "tensor 't' must be described by an object");
  }
  SUBCASE("duplicate keys") {
    std::string t = "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("{\"t\":" + t + ",\"t\":" + t + "}", 4)), "has the key 't' twice");
    CHECK_THROWS_WITH_SUBSTR(
        parse(make_file(one("{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}"), 4)),
        "has the key 'dtype' twice");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0)),
                             "has the key 'a' twice");
    // The same key in two different objects is fine.
    std::string two = "{\"a\":" + t + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    CHECK(parse(make_file(two, 8)).tensors.size() == 2);
  }
  SUBCASE("dtypes") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}"), 4)),
                             "tensor 't' has the unknown dtype 'Q7'");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[0,2]}"), 2)),
                             "the unsupported dtype 'U16'");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}"), 4)),
                             "dtype must be a string");
  }
  SUBCASE("missing fields") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}"), 4)),
                             "tensor 't' has no 'shape' field");
  }
  SUBCASE("shapes") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}"), 4)),
                             "shape has the negative value -3");
    CHECK_THROWS_WITH_SUBSTR(
        parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}"), 4)),
        "more elements than fit in 64 bits");
    CHECK_THROWS_WITH_SUBSTR(
        parse(make_file(one("{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}"), 8)),
        "byte count overflows");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}"), 4)),
                             "shape must hold integers, got 2.5");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}"), 4)),
                             "shape must be an array");
  }
  SUBCASE("data_offsets") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}"), 20)),
                             "data_offsets [0, 20] span 20 bytes but shape [2,3] of F32 needs 24 bytes");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 4)),
                             "run past the end of the data buffer (4 bytes)");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}"), 8)),
                             "end before they begin");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}"), 4)),
                             "data_offsets must be [begin, end]");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}"), 4)),
                             "negative value -4");
  }
  SUBCASE("regions must tile the buffer") {
    auto two = [](int a0, int a1, int b0, int b1) {
      return fmt::format(
          "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{},{}]}},"
          "\"b\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{},{}]}}}}",
          a0, a1, b0, b1);
    };
    CHECK(parse(make_file(two(8, 16, 0, 8), 16)).tensors[0].first == "b");  // any header order is fine
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(two(0, 8, 12, 20), 20)),
                             "a hole of 4 bytes in the data buffer between tensor 'a' (ends at byte 8) and tensor 'b'");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(two(4, 12, 12, 20), 20)), "a hole of 4 bytes");  // hole at the start
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(two(0, 8, 4, 12), 12)), "the data of tensor 'b' [4, 12) overlaps tensor 'a'");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(two(0, 8, 0, 8), 8)), "overlaps");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file(two(0, 8, 8, 16), 20)),
                             "the data buffer has 20 bytes but the tensors cover only the first 16");
  }
  SUBCASE("metadata") {
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("{\"__metadata__\":{\"epoch\":3}}", 0)),
                             "__metadata__ value of 'epoch' must be a string");
    CHECK_THROWS_WITH_SUBSTR(parse(make_file("{\"__metadata__\":[1]}", 0)), "__metadata__ must be an object");
    CHECK(parse(make_file("{\"__metadata__\":{\"k\":\"v\"}}", 0)).metadata.at("k") == "v");
  }
  SUBCASE("files on disk name their path") {
    std::string missing = kdtest::temp_path("absent.safetensors");
    CHECK_THROWS_WITH_SUBSTR(load_safetensors(missing), ("cannot open safetensors file '" + missing).c_str());
    // A truncated copy of a valid file.
    std::string good = serialize_safetensors({{"x", ones({4, 4})}});
    std::string cut = kdtest::temp_path("cut.safetensors");
    write_bytes(cut, good.substr(0, good.size() - 10));
    CHECK_THROWS_WITH_SUBSTR(load_safetensors(cut), (cut + ": tensor 'x': data_offsets [0, 64] run past the end").c_str());
    write_bytes(cut, good.substr(0, 5));
    CHECK_THROWS_WITH_SUBSTR(load_safetensors(cut), (cut + ": 5 bytes is too short").c_str());
    write_bytes(cut, good.substr(0, 30));
    CHECK_THROWS_WITH_SUBSTR(load_safetensors(cut), "runs past the end of the file (30 bytes)");
  }
}

TEST_CASE("safetensors: writing fails cleanly and leaves the old file intact") {
  Tensor x = ones({16, 16});
  SUBCASE("bad names and tensors") {
    std::string path = kdtest::temp_path("names.safetensors");
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"a", x}, {"a", x}}), "the name 'a' appears twice");
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"__metadata__", x}}), "invalid tensor name");
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"u", Tensor()}}), "tensor 'u' is undefined");
    CHECK_FALSE(kdtest::file_exists(path));
    CHECK_FALSE(kdtest::file_exists(path + ".tmp"));
  }
  SUBCASE("a directory that does not exist") {
    std::string path = kdtest::temp_path("nodir") + "/sub/w.safetensors";
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"x", x}}), ("cannot write '" + path).c_str());
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"x", x}}), "writable?");
  }
  SUBCASE("a read-only directory") {
    std::string dir = kdtest::temp_path("readonly");
    std::filesystem::create_directories(dir);
    std::string path = dir + "/w.safetensors";
    save_safetensors(path, {{"x", x}});
    std::string before = read_bytes(path);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    if (::geteuid() == 0) {
      MESSAGE("running as root: directory permissions do not stop writes, read-only check skipped");
    } else {
      CHECK_THROWS_WITH_SUBSTR(save_safetensors(path, {{"x", zeros({3})}}), ("cannot write '" + path).c_str());
      CHECK(read_bytes(path) == before);
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  }
  SUBCASE("a write that fails half way (file size limit) removes the temporary file") {
    std::string path = kdtest::temp_path("limited.safetensors");
    save_safetensors(path, {{"small", ones({2})}});
    std::string before = read_bytes(path);
    // Writes past RLIMIT_FSIZE fail with EFBIG (SIGXFSZ ignored).
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old_limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    rlimit small = old_limit;
    small.rlim_cur = 512;
    setrlimit(RLIMIT_FSIZE, &small);
    bool threw = false;
    std::string msg;
    try {
      save_safetensors(path, {{"big", ones({64, 64})}});
    } catch (const Error& e) {
      threw = true;
      msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CHECK(threw);
    CHECK(msg.find("write failed") != std::string::npos);
    CHECK(read_bytes(path) == before);
    CHECK_FALSE(kdtest::file_exists(path + ".tmp"));
  }
  SUBCASE("the target is a directory: rename fails, nothing left behind") {
    std::string dir = kdtest::temp_path("target_dir");
    std::filesystem::create_directories(dir + "/inside");
    CHECK_THROWS_WITH_SUBSTR(save_safetensors(dir, {{"x", x}}), "rename failed");
    CHECK_FALSE(kdtest::file_exists(dir + ".tmp"));
    CHECK(std::filesystem::is_directory(dir + "/inside"));
  }
}

TEST_CASE("safetensors: the shared CIFAR-10 ResNet-56 teacher") {
  std::string path = kdtest::shared_path("teachers/cifar10_resnet56.safetensors");
  if (!kdtest::file_exists(path)) {
    MESSAGE("skipped: " << path << " is absent");
    return;
  }
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.tensors.size() == 344);
  auto m = to_map(f.tensors);
  CHECK(m.size() == 344);
  struct Want {
    const char* name;
    Shape shape;
    DType dtype;
  };
  for (const Want& w : std::vector<Want>{{"conv1.weight", {16, 3, 3, 3}, DType::f32},
                                         {"bn1.weight", {16}, DType::f32},
                                         {"bn1.running_var", {16}, DType::f32},
                                         {"bn1.num_batches_tracked", {}, DType::i64},
                                         {"layer1.0.conv1.weight", {16, 16, 3, 3}, DType::f32},
                                         {"layer2.0.downsample.0.weight", {32, 16, 1, 1}, DType::f32},
                                         {"layer3.0.downsample.1.running_mean", {64}, DType::f32},
                                         {"layer3.8.conv2.weight", {64, 64, 3, 3}, DType::f32},
                                         {"fc.weight", {10, 64}, DType::f32},
                                         {"fc.bias", {10}, DType::f32}}) {
    INFO(w.name);
    REQUIRE(m.count(w.name));
    CHECK(m.at(w.name).shape() == w.shape);
    CHECK(m.at(w.name).dtype() == w.dtype);
  }
  int64_t n_float = 0, n_not_finite = 0;
  for (auto& [name, t] : f.tensors) {
    if (t.dtype() != DType::f32) continue;
    n_float += t.numel();
    for (float v : to_float_vector(t)) n_not_finite += !std::isfinite(v);
  }
  CHECK(n_float > 850000);  // ~0.86 M parameters plus BN statistics
  CHECK(n_not_finite == 0);
  for (float v : to_float_vector(m.at("bn1.running_var"))) CHECK(v > 0);
  CHECK(m.at("bn1.num_batches_tracked").item() > 0);
}
