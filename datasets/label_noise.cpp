// label_noise.cpp: symmetric and asymmetric label noise (the conventions are in label_noise.h).
#include "datasets/label_noise.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "engine/generator.h"

namespace kd::data {

LabelNoiseSpec parse_label_noise(const std::string& spec) {
  if (spec.empty() || spec == "none") return {"none", 0.0};
  const size_t colon = spec.find(':');
  KD_CHECK(colon != std::string::npos,
           "label noise '{}': expected KIND:RATE, e.g. \"sym:0.5\" (symmetric) or \"asym:0.4\" (asymmetric), or "
           "\"none\"",
           spec);
  LabelNoiseSpec out;
  out.kind = spec.substr(0, colon);
  KD_CHECK(out.kind == "sym" || out.kind == "asym",
           "label noise '{}': unknown kind '{}'; known kinds: sym (uniform over all classes), asym (class map); "
           "write it like \"sym:0.5\"",
           spec, out.kind);
  const std::string rate = spec.substr(colon + 1);
  char* end = nullptr;
  errno = 0;
  out.rate = std::strtod(rate.c_str(), &end);
  KD_CHECK(!rate.empty() && end == rate.c_str() + rate.size() && errno != ERANGE && std::isfinite(out.rate),
           "label noise '{}': the rate '{}' is not a number; write it like \"{}:0.5\"", spec, rate, out.kind);
  KD_CHECK(out.rate >= 0.0 && out.rate <= 1.0,
           "label noise '{}': the rate must be a fraction in [0, 1], got {} (for 50% write {}:0.5)", spec, out.rate,
           out.kind);
  return out;
}

int64_t asymmetric_noise_target(int64_t label, int64_t num_classes) {
  KD_CHECK(num_classes >= 2 && label >= 0 && label < num_classes,
           "asymmetric label noise: label {} is not in [0, {}) (or fewer than 2 classes)", label, num_classes);
  if (num_classes == 10) {
    // airplane automobile bird cat deer dog frog horse ship truck
    static const int64_t cifar10_map[10] = {0, 1, 0, 5, 7, 3, 6, 7, 8, 1};
    return cifar10_map[label];
  }
  if (num_classes == 100) {
    const int64_t block = label / 5;  // Co-teaching's "superclass": five consecutive indices
    return block * 5 + (label % 5 + 1) % 5;
  }
  return (label + 1) % num_classes;
}

Tensor inject_label_noise(const Tensor& labels, int64_t num_classes, const std::string& spec, uint64_t seed) {
  KD_CHECK(labels.defined() && labels.dim() == 1 && labels.dtype() == DType::i64,
           "inject_label_noise: labels must be a 1-D int64 tensor (N), got {}",
           labels.defined() ? fmt::format("{} {}", dtype_name(labels.dtype()), shape_str(labels.shape())) : "undefined");
  KD_CHECK(num_classes >= 2, "inject_label_noise: need at least 2 classes, got {}", num_classes);
  const LabelNoiseSpec s = parse_label_noise(spec);
  std::vector<int64_t> y = to_int_vector(labels);
  const int64_t N = (int64_t)y.size();
  for (int64_t i = 0; i < N; ++i)
    KD_CHECK(y[i] >= 0 && y[i] < num_classes, "inject_label_noise: label {} of sample {} is not in [0, {})", y[i], i,
             num_classes);
  if (s.kind == "none" || N == 0) return from_vector(y, {N});

  // the noisy set: the first floor(R N) indices of a seeded shuffle (DivideMix: int(r * 50000));
  // the 1e-9 keeps 0.3 * 10 from rounding down to 2
  Generator gen(seed);
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  gen.shuffle(order);
  const int64_t num_noisy = std::min<int64_t>(N, (int64_t)std::floor(s.rate * (double)N + 1e-9));
  std::vector<uint8_t> chosen(N, 0);
  for (int64_t i = 0; i < num_noisy; ++i) chosen[order[i]] = 1;

  // new labels, in sample order
  for (int64_t i = 0; i < N; ++i) {
    if (!chosen[i]) continue;
    y[i] = s.kind == "sym" ? gen.randint(0, num_classes)  // uniform over all K (may equal y)
                           : asymmetric_noise_target(y[i], num_classes);
  }
  return from_vector(y, {N});
}

double label_noise_rate(const Tensor& clean, const Tensor& noisy) {
  KD_CHECK(clean.defined() && noisy.defined() && clean.dim() == 1 && clean.shape() == noisy.shape(),
           "label_noise_rate: clean and noisy labels must be 1-D tensors of the same length, got {} and {}",
           clean.defined() ? shape_str(clean.shape()) : "undefined",
           noisy.defined() ? shape_str(noisy.shape()) : "undefined");
  const std::vector<int64_t> a = to_int_vector(clean), b = to_int_vector(noisy);
  if (a.empty()) return 0.0;
  int64_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  return (double)differ / (double)a.size();
}

}  // namespace kd::data
