// check.cpp: assignment 2's checker. Built twice: against skeleton.cpp (assignment2_skeleton, the
// student's file) and against solution.cpp (assignment2_solution). Prints PASS/FAIL per part and
// exits 0 only when every part passes.
//
// Golden values: PyTorch 1.13 running mdistiller's formulation (examples/assignments/golden.py).
// The last parts compare with kdlab's own DKD (distill/output/dkd.cpp) and check the identity
// that motivates DKD: KL(pt ‖ ps) = TCKD + (1 − pt_y) · NCKD.
#include <cmath>

#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "engine/engine.h"
#include "examples/assignments/assignment2_nckd/assignment.h"
#include "examples/assignments/checker.h"

using namespace kd;

namespace {

}  // namespace

int main() {
  assignment::Checker check("Assignment 2: DKD's NCKD term");

  // The inputs of the golden values (golden.py): B = 3, K = 5, T = 4.
  const Tensor zs = from_vector(std::vector<float>{1.0f, 2.0f, 0.5f, -1.0f, 0.0f,    // (3, 5)
                                                   0.3f, -0.2f, 1.5f, 0.8f, -0.6f,
                                                   2.0f, 0.1f, 0.4f, -0.5f, 1.2f},
                                {3, 5});
  const Tensor zt = from_vector(std::vector<float>{0.5f, 3.0f, 0.0f, -0.5f, 0.2f,     // (3, 5)
                                                   0.0f, 0.4f, 2.5f, 1.0f, -1.0f,
                                                   1.5f, -0.3f, 0.9f, 0.0f, 2.2f},
                                {3, 5});
  const Tensor y = from_vector(std::vector<int64_t>{1, 2, 4}, {3});
  const double T = 4.0;

  check.part("non_target_log_probs: golden values at the non-target classes (PyTorch)", [&] {
    Tensor lp = assignment::non_target_log_probs(zs, y, T);
    if (!lp.defined()) return std::string("non_target_log_probs returned an undefined Tensor");
    if (lp.shape() != Shape{3, 5}) return "shape " + shape_str(lp.shape()) + ", expected (3, 5)";
    // the non-target entries, row by row (the label's entry is checked in the next part)
    Tensor other = index_select(lp.select(0, 0), 0, from_vector(std::vector<int64_t>{0, 2, 3, 4}, {4}));
    Tensor other1 = index_select(lp.select(0, 1), 0, from_vector(std::vector<int64_t>{0, 1, 3, 4}, {4}));
    Tensor other2 = index_select(lp.select(0, 2), 0, from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4}));
    return assignment::compare(cat({other, other1, other2}, 0),
                               {-1.1841256f, -1.3091256f, -1.6841256f, -1.4341256f, -1.3387209f, -1.4637209f,
                                -1.2137209f, -1.5637209f, -1.0393811f, -1.5143811f, -1.4393811f, -1.6643811f},
                               {12});
  });

  check.part("non_target_log_probs: the label's class is masked out (log p̂ < -100 there, p̂ sums to 1)", [&] {
    Tensor lp = assignment::non_target_log_probs(zs, y, T);
    const std::vector<float> v = to_float_vector(lp);
    const int64_t label[3] = {1, 2, 4};
    for (int64_t b = 0; b < 3; ++b) {
      if (!(v[b * 5 + label[b]] < -100.f))
        return fmt::format("sample {}: log p̂ at the label {} is {:.6g}; subtract 1000 at the label after dividing by T",
                           b, label[b], v[b * 5 + label[b]]);
      double s = 0;
      for (int64_t k = 0; k < 5; ++k) s += std::exp((double)v[b * 5 + k]);
      if (std::fabs(s - 1.0) > 1e-5) return fmt::format("sample {}: p̂ sums to {:.7g}, not 1", b, s);
    }
    return std::string();
  });

  check.part("nckd_loss: golden value (PyTorch, T = 4)", [&] {
    Tensor l = assignment::nckd_loss(zs, zt, y, T);
    if (l.defined() && l.dim() != 0) return "nckd_loss returned shape " + shape_str(l.shape()) + "; it must be 0-d (a scalar)";
    return assignment::compare(l, {0.0945463119f}, {}, 1e-4, 1e-7);
  });

  check.part("nckd_loss: golden gradient d NCKD / d zs (PyTorch)", [&] {
    Tensor s = zs.clone().detach().requires_grad_();
    assignment::nckd_loss(s, zt, y, T).backward();
    return assignment::compare(s.grad(),
                               {0.036516903f, 0.f, 0.032226054f, -0.041849947f, -0.02689301f, 0.029676569f,
                                -0.045043459f, 0.f, -0.014637258f, 0.030004148f, 0.05301787f, 0.026381799f,
                                -0.044147319f, -0.03525235f, 0.f},
                               {3, 5}, 1e-4, 1e-7);
  });

  check.part("nckd_loss: the teacher is frozen (no gradient reaches zt)", [&] {
    Tensor s = zs.clone().detach().requires_grad_();
    Tensor t = zt.clone().detach().requires_grad_();
    assignment::nckd_loss(s, t, y, T).backward();
    if (t.grad().defined() && max(abs(t.grad())).item() > 0)
      return std::string("zt received a gradient; use the teacher's logits through zt.detach()");
    return std::string();
  });

  check.part("nckd_loss: gradcheck (finite differences) in zs, (4, 6), T = 2", [&] {
    Generator gen(5);
    Tensor s = randn({4, 6}, gen).requires_grad_();
    Tensor t = randn({4, 6}, gen);
    Tensor labels = from_vector(std::vector<int64_t>{0, 5, 2, 2}, {4});
    return assignment::gradcheck_problem(
        [&](const std::vector<Tensor>& in) { return assignment::nckd_loss(in[0], t, labels, 2.0); }, {s});
  });

  check.part("nckd_loss: equals kdlab's dkd_loss NCKD (value and gradient), (8, 10), T = 4", [&] {
    Generator gen(6);
    Tensor s0 = mul(randn({8, 10}, gen), 2.0), t = mul(randn({8, 10}, gen), 2.0);
    Tensor labels = randint(0, 10, {8}, gen);
    distill::DkdOptions opt;  // NCKD alone: alpha 0, beta 1, no warm-up (dkd_loss holds no CE)
    opt.alpha = 0;
    opt.beta = 1;
    opt.warmup = 0;
    opt.T = 4;
    Tensor s_ref = s0.clone().detach().requires_grad_();
    Tensor ref = assignment::part_of(distill::dkd_loss(s_ref, t, labels, opt, 1), "nckd");
    ref.backward();
    Tensor s = s0.clone().detach().requires_grad_();
    Tensor yours = assignment::nckd_loss(s, t, labels, 4.0);
    std::string p = assignment::compare(yours, ref, 1e-4, 1e-7);
    if (!p.empty()) return "the value: " + p;
    yours.backward();
    p = assignment::compare(s.grad(), s_ref.grad(), 1e-4, 1e-7);
    return p.empty() ? p : "the gradient: " + p;
  });

  check.part("DKD's identity per sample: T² KL(pt ‖ ps) = TCKD + (1 − pt_y) · NCKD", [&] {
    Generator gen(7);
    const double T2 = 3.0;
    for (int64_t b = 0; b < 4; ++b) {
      Tensor s = randn({1, 7}, gen), t = mul(randn({1, 7}, gen), 2.0);
      Tensor label = from_vector(std::vector<int64_t>{b}, {1});
      distill::KdOptions kd_opt;  // T² KL alone
      kd_opt.T = T2;
      kd_opt.kd_weight = 1;  // (kd_loss holds no CE: distill_loss adds it)
      const double kl = distill::kd_loss(s, t, label, kd_opt).total.item();
      distill::DkdOptions dkd_opt;  // TCKD alone
      dkd_opt.alpha = 1;
      dkd_opt.beta = 0;
      dkd_opt.warmup = 0;
      dkd_opt.T = T2;
      const double tckd = distill::dkd_loss(s, t, label, dkd_opt, 1).total.item();
      const double pt_y = softmax(div(t, T2), 1).at({0, b});
      const double nckd = assignment::nckd_loss(s, t, label, T2).item();
      const double rhs = tckd + (1.0 - pt_y) * nckd;
      if (!(std::fabs(kl - rhs) <= 1e-5 + 1e-4 * std::fabs(kl)))
        return fmt::format("sample {} (label {}): T² KL = {:.7g} but TCKD + (1 − pt_y) NCKD = {:.7g} + {:.7g} · {:.7g} = {:.7g}",
                           b, b, kl, tckd, 1.0 - pt_y, nckd, rhs);
    }
    return std::string();
  });

  return check.finish();
}
