// checker.h: what every assignment checker shares: one PASS/FAIL line per part, a summary, and
// the comparisons the parts make (values against golden numbers, gradients against finite
// differences). Header-only: each checker is one small program.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "engine/engine.h"

namespace assignment {

// Runs the parts of one assignment and prints
//   PASS  1. the gradient has the input's shape
//   FAIL  2. golden values (PyTorch), dim = 1
//         element 3: yours 0.1, expected 0.80619365 (|diff| 0.71 > 1e-05)
class Checker {
 public:
  explicit Checker(std::string title) : title_(std::move(title)) { std::printf("%s\n\n", title_.c_str()); }

  // `part` returns "" when the part passes, else what was wrong; an exception (kd::Error from a
  // failed check inside your code, for instance) is a FAIL that prints its message.
  void part(const std::string& name, const std::function<std::string()>& part) {
    ++count_;
    std::string problem;
    try {
      problem = part();
    } catch (const std::exception& e) {
      problem = std::string("it threw: ") + e.what();
    }
    if (problem.empty()) {
      ++passed_;
      std::printf("PASS  %d. %s\n", count_, name.c_str());
    } else {
      std::printf("FAIL  %d. %s\n", count_, name.c_str());
      std::string indented = "      " + problem;
      for (size_t at = indented.find('\n'); at != std::string::npos; at = indented.find('\n', at + 1))
        indented.insert(at + 1, "      ");
      std::printf("%s\n", indented.c_str());
    }
    std::fflush(stdout);
  }

  // Prints the summary; the exit status of the checker: 0 when every part passed, 1 otherwise.
  int finish() const {
    std::printf("\n%s: %d of %d parts pass%s\n", title_.c_str(), passed_, count_,
                passed_ == count_ ? " -- all done" : "");
    return passed_ == count_ ? 0 : 1;
  }

 private:
  std::string title_;
  int count_ = 0, passed_ = 0;
};

// "" when `got` has `shape` and every value is within atol + rtol * |expected|; else the first
// mismatch (element index in C order, both values).
inline std::string compare(const kd::Tensor& got, const std::vector<float>& expected, const kd::Shape& shape,
                           double rtol = 1e-4, double atol = 1e-5) {
  if (!got.defined()) return "your function returned an undefined Tensor";
  if (got.shape() != shape)
    return "shape " + kd::shape_str(got.shape()) + ", expected " + kd::shape_str(shape);
  const std::vector<float> v = kd::to_float_vector(got);
  for (size_t i = 0; i < v.size(); ++i) {
    const double diff = std::fabs((double)v[i] - (double)expected[i]);
    if (!(diff <= atol + rtol * std::fabs((double)expected[i])))  // also catches NaN
      return fmt::format("element {}: yours {:.8g}, expected {:.8g} (|diff| {:.3g})", i, v[i], expected[i], diff);
  }
  return "";
}

inline std::string compare(const kd::Tensor& got, const kd::Tensor& expected, double rtol = 1e-4, double atol = 1e-5) {
  return compare(got, kd::to_float_vector(expected), expected.shape(), rtol, atol);
}

// "" when autograd's gradient of f agrees with central finite differences (kd::gradcheck).
inline std::string gradcheck_problem(const std::function<kd::Tensor(const std::vector<kd::Tensor>&)>& f,
                                     const std::vector<kd::Tensor>& inputs) {
  kd::GradcheckResult r = kd::gradcheck(f, inputs);
  if (r.ok) return "";
  return fmt::format("analytic and finite-difference gradients differ (max |error| {:.3g}):\n{}", r.max_abs_error,
                     r.report);
}

// The value of a part of a loss breakdown by name ("nckd", "angle").
inline kd::Tensor part_of(const kd::distill::LossBreakdown& l, const std::string& name) {
  for (const auto& [n, t] : l.parts)
    if (n == name) return t;
  throw kd::Error("no part named " + name);
}

}  // namespace assignment
