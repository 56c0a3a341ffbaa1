// distill_test_util.h: what the distillation tests share: a golden case's hyper-parameters as
// --set strings, a loss breakdown as a list of tensors (total first, then the parts in order), and
// one part's value by name.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "test_util.h"

namespace kdtest {

// The hyper-parameters of a golden case as --set strings, minus the keys in `skip` (those that
// are not the method's).
inline kd::distill::Params params_from(const json& p, const std::vector<std::string>& skip = {}) {
  kd::distill::Params out;
  for (const auto& [k, v] : p.items()) {
    if (std::find(skip.begin(), skip.end(), k) != skip.end()) continue;
    out[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

// {total, part 1, part 2, ...}: what golden fixtures list as a method's outputs.
inline std::vector<kd::Tensor> outputs_of(const kd::distill::LossBreakdown& l) {
  std::vector<kd::Tensor> out{l.total};
  for (const auto& [name, value] : l.parts) out.push_back(value);
  return out;
}

// The value of the 0-d part `name`; fails the test when there is none.
inline double part(const kd::distill::LossBreakdown& l, const std::string& name) {
  for (const auto& [n, v] : l.parts)
    if (n == name) return v.item();
  FAIL("no part named " << name);
  return 0;
}

}  // namespace kdtest
