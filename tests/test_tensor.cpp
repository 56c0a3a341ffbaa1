#include "test_util.h"

using namespace kd;

TEST_CASE("tensor basics: shape, strides, element access") {
  Tensor t = arange(0, 24, 1, DType::i64).to(DType::f32).reshape({2, 3, 4});
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.strides() == Shape{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK(t.at({1, 2, 3}) == 23);
  CHECK(t.at({-1, 0, -1}) == 15);
  CHECK(t.numel() == 24);
  CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
  CHECK_THROWS_WITH_SUBSTR(t.at({2, 0, 0}), "out of range");
}

TEST_CASE("views share storage") {
  Tensor t = arange(0, 12, 1, DType::i64).to(DType::f32).reshape({3, 4});
  Tensor tt = t.t();
  CHECK(tt.shape() == Shape{4, 3});
  CHECK(!tt.is_contiguous());
  CHECK(tt.at({3, 2}) == 11);
  Tensor s = t.slice(1, 1, 4, 2);  // columns 1 and 3
  CHECK(s.shape() == Shape{3, 2});
  CHECK(s.at({2, 1}) == 11);
  s.set({0, 0}, 100);
  CHECK(t.at({0, 1}) == 100);
  Tensor e = t.select(0, 1).unsqueeze(0).expand({5, 4});
  CHECK(e.shape() == Shape{5, 4});
  CHECK(e.strides()[0] == 0);
  CHECK(e.at({4, 2}) == 6);
  Tensor c = tt.contiguous();
  CHECK(c.is_contiguous());
  CHECK(to_float_vector(c) == to_float_vector(tt));
}

TEST_CASE("printing shows shape, dtype, values and truncates") {
  Tensor t = arange(0, 100, 1, DType::i64);
  std::string s = to_string(t);
  CHECK(s.find("...") != std::string::npos);
  CHECK(s.find("shape=(100,)") != std::string::npos);
  CHECK(s.find("int64") != std::string::npos);
  std::string small = to_string(from_vector(std::vector<float>{1.5f, -2}, {2}));
  CHECK(small.find("1.5000") != std::string::npos);
}

TEST_CASE("fmt formats a tensor like to_string") {
  Tensor t = from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  CHECK(fmt::format("{}", t) == to_string(t));
  CHECK(fmt::format("{}", t).find("shape=(2, 2)") != std::string::npos);
}
