// common.cpp: feature taps by name and mdistiller's ConvReg. See common.h.
#include "distill/feature/common.h"

#include <cctype>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/ops.h"

namespace kd::distill {

namespace {

// "f2" -> ('f', 2), "pre3" -> ('p', 3), "pooled" -> ('o', 0); ('?', -1) when malformed.
std::pair<char, int64_t> parse_tap(const std::string& tap) {
  if (tap == "pooled") return {'o', 0};
  std::string digits;
  char kind = '?';
  if (tap.size() >= 2 && tap[0] == 'f') {
    kind = 'f';
    digits = tap.substr(1);
  } else if (tap.size() >= 4 && tap.compare(0, 3, "pre") == 0) {
    kind = 'p';
    digits = tap.substr(3);
  }
  if (kind == '?' || digits.empty() || digits.size() > 3) return {'?', -1};
  for (char c : digits)
    if (!std::isdigit((unsigned char)c)) return {'?', -1};
  return {kind, std::stoll(digits)};
}

std::string available_taps(const nn::ModelOutput& out) {
  std::vector<std::string> names;
  for (size_t i = 0; i < out.feats.size(); ++i) names.push_back(fmt::format("f{}", i));
  for (size_t i = 0; i < out.preact_feats.size(); ++i) names.push_back(fmt::format("pre{}", i));
  if (out.pooled.defined()) names.push_back("pooled");
  return names.empty() ? std::string("none (logits only)") : fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

void check_tap_name(const std::string& tap, const std::string& method) {
  KD_CHECK(parse_tap(tap).first != '?',
           "{}: '{}' is not a feature tap; taps are f0..fN (stage outputs), pre1..preN (before the stage's last "
           "ReLU) and pooled",
           method, tap);
}

void check_taps(const std::vector<std::string>& taps, const std::string& method) {
  KD_CHECK(!taps.empty(), "{}: the list of taps is empty; write it like f1,f2,f3", method);
  for (const std::string& t : taps) check_tap_name(t, method);
}

std::vector<std::string> split_taps(const std::string& list, const std::string& method) {
  std::vector<std::string> taps;
  read_option(method, "taps", list, taps);  // comma-separated, spaces ignored (distill/options.h)
  check_taps(taps, method);
  return taps;
}

std::string join_taps(const std::vector<std::string>& taps) { return option_text(taps); }

Tensor feature_tap(const nn::ModelOutput& out, const std::string& tap, const std::string& method,
                   const std::string& side) {
  auto [kind, index] = parse_tap(tap);
  check_tap_name(tap, method);
  Tensor t;
  if (kind == 'o') t = out.pooled;
  else if (kind == 'f' && index < (int64_t)out.feats.size()) t = out.feats[(size_t)index];
  else if (kind == 'p' && index < (int64_t)out.preact_feats.size()) t = out.preact_feats[(size_t)index];
  KD_CHECK(t.defined(),
           "{}: the {} output has no feature tap '{}' (it has: {}); choose one of those with --set, or run the {} "
           "forward pass with its features (the teacher cache stores logits only)",
           method, side, tap, available_taps(out), side);
  KD_CHECK(t.dtype() == DType::f32, "{}: the {} tap '{}' must be float32, got {}", method, side, tap,
           dtype_name(t.dtype()));
  return t;
}

Shape sample_tap_shape(const nn::ModelOutput& sample, const std::string& tap, const std::string& method,
                       const std::string& side) {
  KD_CHECK(!sample.feats.empty() || sample.pooled.defined(),
           "{}: the {}'s feature shapes are unknown; this method builds a helper module sized from one forward pass "
           "of each network (DistillerContext::student_sample and teacher_sample, which prepare_distill_run fills)",
           method, side);
  return feature_tap(sample, tap, method, side).shape();
}

// ------------------------------------------------------------------------------- ConvReg

ConvReg::ConvReg(const Shape& s, const Shape& t, Generator& gen, bool use_relu, const std::string& method)
    : use_relu(use_relu) {
  KD_CHECK(s.size() == 4 && t.size() == 4,
           "{}: the regressor maps a (B, C, H, W) student map onto a (B, C, H, W) teacher map; got student {} and "
           "teacher {} (choose 4-D taps such as f1..f3, not pooled)",
           method, shape_str(s), shape_str(t));
  const int64_t sC = s[1], sH = s[2], sW = s[3];
  const int64_t tC = t[1], tH = t[2], tW = t[3];
  if (sH == 2 * tH) {  // the student map is twice the teacher's: halve it
    conv = register_module("conv", std::make_shared<nn::Conv2d>(sC, tC, 3, gen, /*stride=*/2, /*padding=*/1));
    kind_ = "conv3x3/2";
  } else if (sH * 2 == tH) {  // half the teacher's: double it
    conv = register_module("conv", std::make_shared<nn::ConvTranspose2d>(sC, tC, 4, gen, /*stride=*/2, /*padding=*/1));
    kind_ = "convT4x4/2";
  } else {
    KD_CHECK(sH >= tH && sW >= tW,
             "{}: no regressor rule for a student map of {}x{} and a teacher map of {}x{}: mdistiller's ConvReg "
             "handles a student map twice, half, or at least the teacher's size; choose other taps with --set",
             method, sH, sW, tH, tW);
    const Int2 k(1 + sH - tH, 1 + sW - tW);  // a "valid" conv that shrinks H by k - 1
    conv = register_module("conv", std::make_shared<nn::Conv2d>(sC, tC, k, gen));
    kind_ = fmt::format("conv{}x{}", k.h, k.w);
  }
  bn = register_module("bn", nn::BatchNorm2d(tC));
}

Tensor ConvReg::forward(const Tensor& x) {
  Tensor y = bn->forward(conv->forward(x));  // (B, Ct, Ht, Wt)
  return use_relu ? relu(y) : y;
}

}  // namespace kd::distill
