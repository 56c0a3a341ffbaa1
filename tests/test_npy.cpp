// .npy reading and writing: fixtures written by NumPy (tests/reference/gen_npy.py), malformed
// files with the fault named, and save/load round trips.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/npy.h"
#include "test_util.h"

using namespace kd;

static Tensor load_fixture(const std::string& name) { return load_npy(kdtest::fixture_path("npy/" + name)); }

// A .npy image with the given header dict (version 1.0) followed by `data`.
static std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict + "\n";
  std::string out = std::string("\x93NUMPY", 6) + (char)major + (char)0;
  const uint32_t len = (uint32_t)header.size();
  for (int k = 0; k < (major == 1 ? 2 : 4); ++k) out += (char)((len >> (8 * k)) & 0xff);
  return out + header + data;
}

TEST_CASE("npy: reads every supported dtype written by NumPy") {
  SUBCASE("<f4") {
    Tensor t = load_fixture("f4.npy");
    CHECK(t.dtype() == DType::f32);
    CHECK(t.shape() == Shape{2, 3});
    CHECK(to_float_vector(t) == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  }
  SUBCASE("<f8 becomes float32") {
    Tensor t = load_fixture("f8.npy");
    CHECK(t.dtype() == DType::f32);
    CHECK(to_float_vector(t) == std::vector<float>{0.1f, -2.5f, 1e10f});
  }
  SUBCASE("<i8") {
    Tensor t = load_fixture("i8.npy");
    CHECK(t.dtype() == DType::i64);
    CHECK(t.shape() == Shape{2, 2});
    CHECK(to_int_vector(t) == std::vector<int64_t>{0, -1, int64_t(1) << 40, -(int64_t(1) << 40)});
  }
  SUBCASE("<i4 becomes int64") {
    Tensor t = load_fixture("i4.npy");
    CHECK(t.dtype() == DType::i64);
    CHECK(to_int_vector(t) == std::vector<int64_t>{7, -3, 2147483647, -2147483648LL});
  }
  SUBCASE("|u1") {
    Tensor t = load_fixture("u1.npy");
    CHECK(t.dtype() == DType::u8);
    CHECK(to_int_vector(t) == std::vector<int64_t>{0, 1, 255, 128, 7, 42});
  }
  SUBCASE("|b1 becomes uint8 0/1") {
    Tensor t = load_fixture("b1.npy");
    CHECK(t.dtype() == DType::u8);
    CHECK(to_int_vector(t) == std::vector<int64_t>{1, 0, 1, 1, 0});
  }
  SUBCASE("0-d, empty and 3-D") {
    Tensor s = load_fixture("scalar0d.npy");
    CHECK(s.dim() == 0);
    CHECK(s.item() == 3.25);
    Tensor e = load_fixture("empty.npy");
    CHECK(e.shape() == Shape{0, 3});
    Tensor t = load_fixture("f4_3d.npy");
    CHECK(t.shape() == Shape{2, 3, 4});
    CHECK(t.at({1, 2, 3}) == 23.0);
    CHECK(t.at({1, 0, 2}) == 14.0);
  }
  SUBCASE("format versions 2.0 and 3.0") {
    for (const char* name : {"v2.npy", "v3.npy"}) {
      Tensor t = load_fixture(name);
      CHECK(to_float_vector(t) == std::vector<float>{0, 1, 2, 3, 4});
    }
  }
}

TEST_CASE("npy: malformed or unsupported files name the file and the fault") {
  const std::string dir = kdtest::fixture_path("npy/");
  CHECK_THROWS_WITH_SUBSTR(load_fixture("big_endian.npy"), "big_endian.npy: big-endian");
  CHECK_THROWS_WITH_SUBSTR(load_fixture("fortran.npy"), "fortran.npy: Fortran-order");
  CHECK_THROWS_WITH_SUBSTR(load_fixture("complex.npy"), "complex.npy: unsupported .npy dtype '<c8'");
  CHECK_THROWS_WITH_SUBSTR(load_fixture("truncated.npy"), "truncated.npy: truncated .npy data");
  CHECK_THROWS_WITH_SUBSTR(load_fixture("bad_magic.npy"), "bad_magic.npy: not a .npy file");
  CHECK_THROWS_WITH_SUBSTR(load_npy(dir + "no_such_file.npy"), "no_such_file.npy: cannot open");

  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string eight(8, '\0');
  CHECK(parse_npy(npy_bytes(f4, eight), "mem").shape() == Shape{2});
  CHECK(parse_npy(npy_bytes(f4, eight, 2), "mem").shape() == Shape{2});
  SUBCASE("header length past the end") {
    std::string b = npy_bytes(f4, eight);
    b[8] = (char)0xff;
    b[9] = (char)0x7f;
    CHECK_THROWS_WITH_SUBSTR(parse_npy(b, "x.npy"), "x.npy: truncated .npy file: the header claims 32767 bytes");
    CHECK_THROWS_WITH_SUBSTR(parse_npy(b.substr(0, 9), "x.npy"), "x.npy: truncated .npy file");
  }
  SUBCASE("absurd shapes are rejected before allocating") {
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627777,), }", ""), "x.npy"),
        "x.npy: absurd .npy shape");
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000, 100000000000000000), }", ""), "x.npy"),
        "absurd .npy shape");
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 99999999999999999999), }", ""), "x.npy"),
        "absurd dimension");
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2), }", ""), "x.npy"),
        "negative dimension -2");
    // plausible but larger than the data: no allocation, a clear error
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000), }", eight), "x.npy"),
        "needs 8000000000 bytes but the file holds 8");
  }
  SUBCASE("broken headers") {
    CHECK_THROWS_WITH_SUBSTR(parse_npy(npy_bytes("{'descr': '<f4', 'shape': (2,), }", eight), "x.npy"),
                             "needs 'descr', 'fortran_order' and 'shape'");
    CHECK_THROWS_WITH_SUBSTR(parse_npy(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", eight), "x.npy"),
                             "x.npy: malformed .npy header");
    CHECK_THROWS_WITH_SUBSTR(parse_npy(npy_bytes("[1, 2]", eight), "x.npy"), "malformed .npy header");
    CHECK_THROWS_WITH_SUBSTR(
        parse_npy(npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", eight), "x.npy"),
        "structured");
    CHECK_THROWS_WITH_SUBSTR(parse_npy(npy_bytes(f4, eight, 4), "x.npy"), "unsupported .npy format version 4.0");
  }
}

TEST_CASE("npy: save then load gives the same tensor") {
  Generator gen(9);
  auto round_trip = [](const Tensor& t) {
    std::string path = kdtest::temp_path("t.npy");
    save_npy(path, t);
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
    Tensor back = load_npy(path);
    CHECK(back.dtype() == t.dtype());
    CHECK(back.shape() == t.shape());
    if (t.dtype() == DType::f32) CHECK(to_float_vector(back) == to_float_vector(t));
    else CHECK(to_int_vector(back) == to_int_vector(t));
    return back;
  };
  round_trip(randn({3, 4, 5}, gen));
  round_trip(randint(-1000, 1000, {7}, gen));
  round_trip(from_vector(std::vector<uint8_t>{0, 255, 3, 9}, {2, 2}));
  round_trip(scalar_tensor(-1.5));
  round_trip(zeros({0, 4}));
  SUBCASE("non-contiguous tensors are written in logical C order") {
    Tensor base = randn({4, 6}, gen);
    round_trip(base.t());
    round_trip(base.slice(1, 1, 6, 2));
    round_trip(base.select(1, 3));
    round_trip(from_vector(std::vector<float>{1, 2, 3}, {3, 1}).expand({3, 4}));
  }
  SUBCASE("the header is padded so the data starts at a multiple of 64 bytes") {
    std::string b = serialize_npy(randn({2, 3}, gen));
    const size_t header_len = (uint8_t)b[8] | ((size_t)(uint8_t)b[9] << 8);
    CHECK((10 + header_len) % 64 == 0);
    CHECK(b[10 + header_len - 1] == '\n');
    CHECK(b.substr(10, 60).find("'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") != std::string::npos);
    CHECK(serialize_npy(zeros({5}, DType::i64)).find("'descr': '<i8', 'fortran_order': False, 'shape': (5,), }") !=
          std::string::npos);
  }
  SUBCASE("save overwrites an existing file and fails clearly on a bad path") {
    std::string path = kdtest::temp_path("over.npy");
    save_npy(path, ones({3}));
    save_npy(path, zeros({2, 2}));
    CHECK(load_npy(path).shape() == Shape{2, 2});
    CHECK_THROWS_WITH_SUBSTR(save_npy("/nonexistent_dir_kdlab/x.npy", ones({1})), "/nonexistent_dir_kdlab/x.npy.tmp: cannot open");
  }
}
