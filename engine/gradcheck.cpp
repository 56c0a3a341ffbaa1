#include "engine/gradcheck.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/ops.h"

namespace kd {

// sum(out * r) in double
static double project(const Tensor& out, const std::vector<float>& r) {
  std::vector<float> v = to_float_vector(out);
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += (double)v[i] * r[i];
  return s;
}

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  GradcheckResult res;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.zero_grad();
  Tensor out = f(inputs);
  KD_CHECK(out.requires_grad(), "gradcheck: the output does not require grad; mark an input with requires_grad_()");
  Generator gen(opt.seed);
  Tensor r = randn(out.shape(), gen);
  std::vector<float> rv = to_float_vector(r);
  out.backward(r);

  int mismatches = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    std::vector<float> av = analytic.defined() ? to_float_vector(analytic) : std::vector<float>(x.numel(), 0.f);
    // walk x's elements in C order through its own strides (x may be a view)
    std::vector<int64_t> idx(x.dim(), 0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = x.at(idx);
      double lp, lm;
      {
        NoGradGuard no_grad;
        x.set(idx, orig + opt.eps);
        lp = project(f(inputs), rv);
        x.set(idx, orig - opt.eps);
        lm = project(f(inputs), rv);
        x.set(idx, orig);
      }
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double err = std::fabs(av[i] - numeric);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (!(err <= opt.atol + opt.rtol * std::fabs(numeric))) {
        res.ok = false;
        if (mismatches++ < 8)
          res.report += fmt::format("input {} element {} ({}): analytic {:.6g}, numeric {:.6g}\n", k, i,
                                    shape_str(idx), av[i], numeric);
      }
      for (int64_t d = x.dim() - 1; d >= 0; --d) {  // next index, C order
        if (++idx[d] < x.shape()[d]) break;
        idx[d] = 0;
      }
    }
  }
  if (!res.ok) res.report = fmt::format("{} mismatching elements; max |error| {:.3g}\n", mismatches, res.max_abs_error) + res.report;
  return res;
}

}  // namespace kd
