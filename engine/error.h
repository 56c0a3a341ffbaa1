// error.h: the one error type of kdlab and the check macro that raises it.
//
// Every failed check throws kd::Error with a message that says what was wrong
// and, where it can, how to fix it. Nothing in kdlab calls abort() on bad input.
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdexcept>
#include <string>

namespace kd {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// KD_CHECK(cond, "fmt string {}", args...): throw kd::Error(formatted message) when cond is false.
#define KD_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::kd::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

}  // namespace kd
