// gradcheck.h: compare autograd gradients with central finite differences.
//
// For f: inputs -> output, draw a fixed random projection r (same shape as the output) and
// check d(sum(f(x) * r))/dx. Analytic: backward(r). Numeric, per input element x_i:
//   (L(x_i + eps) - L(x_i - eps)) / (2 eps), with L accumulated in double.
// Inputs are float32, so the defaults are float32-sized: eps = 1e-3, and an element passes when
// |analytic - numeric| <= atol + rtol * |numeric| with atol = rtol = 1e-2. Test inputs keep away
// from kinks (relu at 0, ties in max, |x| at 0), where finite differences are meaningless.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace kd {

struct GradcheckOptions {
  double eps = 1e-3;
  double atol = 1e-2;
  double rtol = 1e-2;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string report;  // the first few mismatches: input, element, analytic, numeric
};

// Checks every float32 input that requires grad (set requires_grad_() on those to check).
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

}  // namespace kd
