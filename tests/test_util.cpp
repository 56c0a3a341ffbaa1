#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "nn/safetensors.h"

namespace kdtest {

std::string fixture_path(const std::string& name) { return std::string(KDLAB_FIXTURES) + "/" + name; }
std::string shared_path(const std::string& name) { return std::string(KDLAB_SHARED) + "/" + name; }
bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

std::string temp_path(const std::string& name) {
  static std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("kdlab_test_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

Closeness allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  Closeness c;
  if (a.shape() != b.shape()) {
    c.ok = false;
    c.msg = fmt::format("shape {} vs expected {}", kd::shape_str(a.shape()), kd::shape_str(b.shape()));
    return c;
  }
  std::vector<float> x = kd::to_float_vector(a), y = kd::to_float_vector(b);
  int shown = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double d = std::fabs((double)x[i] - (double)y[i]);
    bool both_nan = std::isnan(x[i]) && std::isnan(y[i]);
    bool both_inf = std::isinf(x[i]) && x[i] == y[i];
    if (both_nan || both_inf) continue;
    if (!(d <= atol + rtol * std::fabs((double)y[i]))) {
      c.ok = false;
      if (shown++ < 5) c.msg += fmt::format("element {}: got {:.8g}, expected {:.8g}\n", i, x[i], y[i]);
    }
    if (std::isfinite(d)) c.max_abs = std::max(c.max_abs, d);
  }
  if (!c.ok) c.msg = fmt::format("max |diff| {:.3g} (rtol {}, atol {})\n", c.max_abs, rtol, atol) + c.msg;
  return c;
}

static double json_number(const json& v) {
  if (v.is_string()) {  // the reference scripts write non-finite values as strings
    std::string s = v.get<std::string>();
    if (s == "nan") return NAN;
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
  }
  return v.get<double>();
}

Tensor tensor_from_json(const json& j) {
  kd::Shape shape = j.at("shape").get<kd::Shape>();
  std::string dt = j.value("dtype", "float32");
  const json& data = j.at("data");
  if (dt == "float32") {
    std::vector<float> v;
    for (const auto& x : data) v.push_back((float)json_number(x));
    return kd::from_vector(v, shape);
  }
  if (dt == "int64") return kd::from_vector(data.get<std::vector<int64_t>>(), shape);
  if (dt == "uint8" || dt == "bool") {
    std::vector<uint8_t> v;
    for (const auto& x : data) v.push_back(x.is_boolean() ? (uint8_t)x.get<bool>() : x.get<uint8_t>());
    return kd::from_vector(v, shape);
  }
  throw kd::Error("tensor_from_json: unknown dtype " + dt);
}

int run_golden_file(const std::string& fixture_name, const GoldenTable& table) {
  std::string path = fixture_path(fixture_name);
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << path << " (regenerate with tests/reference/generate_all.sh)");
  json doc = json::parse(f);
  int ran = 0;
  for (const json& c : doc.at("cases")) {
    const std::string name = c.at("name"), op = c.at("op");
    INFO("golden case " << name << " (op " << op << ")");
    auto it = table.find(op);
    REQUIRE_MESSAGE(it != table.end(), "no C++ entry for op '" << op << "' in the golden table");
    double rtol = c.value("rtol", 1e-5), atol = c.value("atol", 1e-6);
    std::vector<Tensor> inputs;
    for (const json& ij : c.at("inputs")) {
      if (ij.is_null()) { inputs.emplace_back(); continue; }
      Tensor t = tensor_from_json(ij);
      if (ij.value("requires_grad", false)) t.requires_grad_();
      inputs.push_back(t);
    }
    json params = c.value("params", json::object());
    std::vector<Tensor> outputs = it->second(inputs, params);
    const json& expected = c.at("outputs");
    REQUIRE(outputs.size() == expected.size());
    for (size_t k = 0; k < outputs.size(); ++k) {
      Tensor e = tensor_from_json(expected[k]);
      Tensor got = outputs[k];
      if (e.dtype() != kd::DType::f32) {
        CHECK_MESSAGE(kd::to_int_vector(got) == kd::to_int_vector(e), "output " << k << " (integer) differs");
        CHECK(got.shape() == e.shape());
        continue;
      }
      Closeness cl = allclose(got, e, rtol, atol);
      CHECK_MESSAGE(cl.ok, "output " << k << ": " << cl.msg);
    }
    if (c.contains("grad_outputs") && outputs[0].requires_grad()) {
      Tensor go = tensor_from_json(c.at("grad_outputs")[0]);
      outputs[0].backward(go);
      const json& grads = c.at("grads");
      for (size_t k = 0; k < inputs.size(); ++k) {
        if (k >= grads.size() || grads[k].is_null()) continue;
        REQUIRE_MESSAGE(inputs[k].grad().defined(), "input " << k << " got no gradient");
        Closeness cl = allclose(inputs[k].grad(), tensor_from_json(grads[k]), c.value("grad_rtol", rtol),
                                c.value("grad_atol", atol));
        CHECK_MESSAGE(cl.ok, "gradient of input " << k << ": " << cl.msg);
      }
    }
    ++ran;
  }
  return ran;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char b : s) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

static uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<float> det_uniform(uint64_t seed, int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i)
    v[i] = (float)((double)(splitmix64(seed ^ (uint64_t)i) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
  return v;
}

Closeness check_fingerprint(const Tensor& t, const json& fp, double rtol, double atol) {
  Closeness c;
  std::vector<float> x = kd::to_float_vector(t);
  const int64_t n = (int64_t)x.size();
  if (n != fp.at("numel").get<int64_t>()) {
    c.ok = false;
    c.msg = fmt::format("numel {} vs expected {}", n, fp.at("numel").get<int64_t>());
    return c;
  }
  std::vector<float> r = det_uniform(12345, n);
  double sum = 0, abs_sum = 0, dot = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += x[i];
    abs_sum += std::fabs(x[i]);
    dot += (double)x[i] * r[i];
  }
  const double scale = fp.at("abs_sum").get<double>();
  auto cmp = [&](const char* what, double got, double want) {
    double d = std::fabs(got - want);
    c.max_abs = std::max(c.max_abs, d);
    if (!(d <= rtol * scale + atol)) {
      c.ok = false;
      c.msg += fmt::format("{}: got {:.8g}, expected {:.8g} (allowed {:.3g})\n", what, got, want, rtol * scale + atol);
    }
  };
  cmp("sum", sum, fp.at("sum").get<double>());
  cmp("abs_sum", abs_sum, scale);
  cmp("dot", dot, fp.at("dot").get<double>());
  const json& samples = fp.at("samples");
  double smax = 0;
  for (const auto& s : samples) smax = std::max(smax, std::fabs(s.get<double>()));
  for (size_t k = 0; k < samples.size(); ++k) {
    int64_t i = ((int64_t)k * n) / 32;
    double want = samples[k].get<double>(), d = std::fabs(x[i] - want);
    if (!(d <= rtol * smax + atol)) {
      c.ok = false;
      c.msg += fmt::format("sample at {}: got {:.8g}, expected {:.8g}\n", i, x[i], want);
    }
  }
  return c;
}

static Tensor det_value_tensor(const std::string& name, const kd::Shape& shape) {
  const int64_t n = kd::shape_numel(shape);
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends("num_batches_tracked")) return kd::zeros(shape, kd::DType::i64);
  std::vector<float> u = det_uniform(fnv1a(name), n);
  // same float32 arithmetic order as golden.py: torch does these ops in float32
  if (ends("running_var")) for (auto& x : u) x = 0.75f + 0.25f * x;
  else if (shape.size() >= 2) {
    int64_t fan_in = 1;
    for (size_t d = 1; d < shape.size(); ++d) fan_in *= shape[d];
    const float s = (float)std::sqrt(3.0 / (double)fan_in);
    for (auto& x : u) x = x * s;
  } else if (ends("weight")) for (auto& x : u) x = 1.0f + 0.1f * x;
  else for (auto& x : u) x = 0.1f * x;
  return kd::from_vector(u, shape);
}

void det_fill(kd::nn::Module& m) {
  kd::NoGradGuard no_grad;
  for (auto& [name, t] : m.state_dict()) t.copy_(det_value_tensor(name, t.shape()));
}

Tensor det_input(const kd::Shape& shape) { return kd::from_vector(det_uniform(fnv1a("input"), kd::shape_numel(shape)), shape); }

json golden_case(const std::string& file, const std::string& name) {
  std::ifstream f(fixture_path(file));
  REQUIRE_MESSAGE(f.good(), "missing fixture " << fixture_path(file));
  const json doc = json::parse(f);
  for (const json& c : doc.at("cases"))
    if (c.at("name") == name) return c;
  FAIL("fixture " << file << " has no case named " << name);
  return json();
}

std::vector<float> float_weights(const std::string& path) {
  std::vector<float> all;
  for (auto& [n, t] : kd::nn::load_safetensors(path).tensors)
    if (t.dtype() == kd::DType::f32) {
      auto v = kd::to_float_vector(t);
      all.insert(all.end(), v.begin(), v.end());
    }
  return all;
}

std::vector<json> metric_lines(const std::string& run_dir) {
  std::ifstream f(run_dir + "/metrics.jsonl");
  std::vector<json> out;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) out.push_back(json::parse(l));
  return out;
}

}  // namespace kdtest
