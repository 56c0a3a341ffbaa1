// test_util.h: what every test file shares: fixture paths, closeness checks, gradcheck
// assertions, and the runner for golden-value fixtures written by tests/reference/*.py.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/generator.h"
#include "engine/gradcheck.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "nn/module.h"

namespace kdtest {

using kd::Tensor;
using json = nlohmann::json;

std::string fixture_path(const std::string& name);  // tests/fixtures/<name>
std::string shared_path(const std::string& name);   // ../shared/<name> (may not exist)
bool file_exists(const std::string& path);
std::string temp_path(const std::string& name);     // a fresh path under the temp dir

// max |a - b| and whether |a - b| <= atol + rtol |b| everywhere (shapes must match)
struct Closeness {
  bool ok = true;
  double max_abs = 0;
  std::string msg;
};
Closeness allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6);

// Tensor <-> the JSON form the reference scripts write: {"shape": [...], "dtype": "float32", "data": [...]}
Tensor tensor_from_json(const json& j);
// The case named `name` of a golden fixture file (tests/fixtures/<file>, {"cases": [{"name": ...}, ...]});
// fails the test when the file or the case is missing.
json golden_case(const std::string& file, const std::string& name);

// ---- golden fixtures
// A golden file is {"cases": [{"name", "op", "params", "inputs": [...], "outputs": [...],
// "grad_outputs": [...], "grads": [... or null], "rtol", "atol"}]}. For each case the runner
// calls table[op](inputs, params), compares every output, then backpropagates grad_outputs[0]
// from output 0 and compares the gradient of every input that has one.
using GoldenFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs, const json& params)>;
using GoldenTable = std::map<std::string, GoldenFn>;
// Runs all cases (each as a doctest SUBCASE) and returns how many ran; unknown ops fail.
int run_golden_file(const std::string& fixture_name, const GoldenTable& table);

// ---- whole-model fixtures (see tests/reference/golden.py)
uint64_t fnv1a(const std::string& s);
// n float32 values in [-1, 1), identical to golden.py's det_uniform(seed, n)
std::vector<float> det_uniform(uint64_t seed, int64_t n);
// Compare a tensor with a fingerprint {numel, sum, abs_sum, dot, samples[32]} written by
// golden.py's fingerprint(): sums and the projection within rtol * abs_sum (+ atol), samples
// within rtol * max|sample| + atol.
Closeness check_fingerprint(const Tensor& t, const json& fp, double rtol = 1e-4, double atol = 1e-5);

// Overwrite every parameter and buffer with golden.py's det_value_tensor(name, shape).
void det_fill(kd::nn::Module& m);
Tensor det_input(const kd::Shape& shape);  // golden.py's det_input

// ---- run folders
// Every float32 value of a .safetensors file, tensor after tensor (two runs' weights compare with ==).
std::vector<float> float_weights(const std::string& path);
// The lines of RUN_DIR/metrics.jsonl, parsed.
std::vector<json> metric_lines(const std::string& run_dir);

// Runs the enclosed code with backend b, restoring the previous backend on exit.
class BackendScope {
 public:
  explicit BackendScope(kd::backend::Backend b) : prev_(kd::backend::active_backend()) { kd::backend::set_backend(b); }
  ~BackendScope() { kd::backend::set_backend(prev_); }
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  kd::backend::Backend prev_;
};

}  // namespace kdtest

// CHECK_GRADCHECK(f, inputs[, opts]): gradcheck passes, with the report on failure.
#define CHECK_GRADCHECK(f, ...)                                   \
  do {                                                            \
    auto gc_result_ = ::kd::gradcheck(f, __VA_ARGS__);            \
    INFO(gc_result_.report);                                      \
    CHECK(gc_result_.ok);                                         \
  } while (0)

// CHECK_THROWS_WITH_SUBSTR(expr, "substring"): throws kd::Error whose message contains the text.
#define CHECK_THROWS_WITH_SUBSTR(expr, substr) \
  CHECK_THROWS_WITH_AS(expr, doctest::Contains(substr), ::kd::Error)
