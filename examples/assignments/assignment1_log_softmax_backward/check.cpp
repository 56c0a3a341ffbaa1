// check.cpp: assignment 1's checker. Built twice: against skeleton.cpp (assignment1_skeleton, the
// student's file) and against solution.cpp (assignment1_solution). Prints PASS/FAIL per part and
// exits 0 only when every part passes.
//
// Your backward is recorded as the backward of an op whose forward is the engine's log_softmax,
// so autograd (backward(), gradcheck) runs through your code exactly as it runs through the
// engine's own ops. The golden values come from PyTorch 1.13 (examples/assignments/golden.py).
#include "engine/engine.h"
#include "examples/assignments/assignment1_log_softmax_backward/assignment.h"
#include "examples/assignments/checker.h"

using namespace kd;

namespace {

// log_softmax along dim, with assignment::log_softmax_backward as its backward
Tensor log_softmax_yours(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim());
  Tensor out;
  {
    NoGradGuard no_grad;
    out = log_softmax(x.detach(), dim);  // the engine's forward
  }
  return record(out, "log_softmax (yours)", {x}, {out}, [dim](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{assignment::log_softmax_backward(n.saved[0], g, dim)};
  });
}

// d(sum(log_softmax_yours(x, dim) * g)) / dx, through autograd
Tensor grad_through_yours(const Tensor& x_in, const Tensor& g, int64_t dim) {
  Tensor x = x_in.clone().detach().requires_grad_();
  log_softmax_yours(x, dim).backward(g);
  return x.grad();
}

}  // namespace

int main() {
  assignment::Checker check("Assignment 1: the backward of log_softmax");

  // The inputs of the golden values (golden.py).
  const Tensor x1 = from_vector(std::vector<float>{0.5f, -1.0f, 2.0f, 0.0f, 1.5f,  // (2, 5)
                                                   -0.3f, 0.8f, -2.0f, 1.1f, 0.4f},
                                {2, 5});
  const Tensor g1 = from_vector(std::vector<float>{1.0f, -0.5f, 0.25f, 2.0f, -1.0f,  // (2, 5)
                                                   0.3f, 0.0f, -0.7f, 0.9f, 1.2f},
                                {2, 5});
  const Tensor x0 = from_vector(std::vector<float>{0.2f, -0.4f, 1.0f, 0.7f,  // (3, 4)
                                                   1.3f, 0.1f, -0.6f, 0.0f,
                                                   -1.1f, 0.9f, 0.3f, 2.0f},
                                {3, 4});
  const Tensor g0 = from_vector(std::vector<float>{0.5f, 1.0f, -1.0f, 0.0f,  // (3, 4)
                                                   -0.2f, 0.4f, 0.6f, 1.5f,
                                                   1.0f, -0.3f, 0.2f, -0.8f},
                                {3, 4});

  check.part("the gradient has the input's shape (2, 5)", [&] {
    Tensor out = log_softmax(x1, 1);
    Tensor dx = assignment::log_softmax_backward(out, g1, 1);
    if (!dx.defined()) return std::string("log_softmax_backward returned an undefined Tensor");
    if (dx.shape() != x1.shape()) return "shape " + shape_str(dx.shape()) + ", expected (2, 5)";
    return std::string();
  });

  check.part("golden values (PyTorch): (2, 5) logits, softmax over dim 1", [&] {
    return assignment::compare(grad_through_yours(x1, g1, 1),
                               {0.80619365f, -0.54324404f, -0.61857982f, 1.8824505f, -1.5268203f, 0.13424017f,
                                -0.49797004f, -0.73028159f, 0.22781076f, 0.8662007f},
                               {2, 5});
  });

  check.part("golden values (PyTorch): (3, 4), softmax over dim 0", [&] {
    return assignment::compare(grad_through_yours(x0, g0, 0),
                               {0.19602716f, 0.82589476f, -0.88224778f, -0.13550445f, -1.1131849f, 0.112949f,
                                0.62377376f, 1.4327105f, 0.91715774f, -0.93884376f, 0.25847402f, -1.297206f},
                               {3, 4});
  });

  check.part("gradcheck (finite differences): (4, 6), dim 1", [&] {
    Generator gen(1);
    Tensor x = randn({4, 6}, gen).requires_grad_();
    return assignment::gradcheck_problem([](const std::vector<Tensor>& in) { return log_softmax_yours(in[0], 1); },
                                         {x});
  });

  check.part("gradcheck (finite differences): (2, 5, 3), the middle dim", [&] {
    Generator gen(2);
    Tensor x = randn({2, 5, 3}, gen).requires_grad_();
    return assignment::gradcheck_problem([](const std::vector<Tensor>& in) { return log_softmax_yours(in[0], 1); },
                                         {x});
  });

  check.part("inside a loss: KL(pt || softmax(zs / T)) gives kdlab's gradient", [&] {
    // the KD loss of distill/output/kd.cpp, once with your backward and once with the engine's
    Generator gen(3);
    Tensor zs = mul(randn({3, 10}, gen), 3.0);
    Tensor pt = softmax(mul(randn({3, 10}, gen), 0.75), 1);
    auto kd_grad = [&](bool yours) {
      Tensor z = zs.clone().detach().requires_grad_();
      Tensor log_ps = yours ? log_softmax_yours(div(z, 4.0), 1) : log_softmax(div(z, 4.0), 1);
      mul(mean(sum(kl_div(log_ps, pt, Reduction::None), {1})), 16.0).backward();
      return z.grad();
    };
    return assignment::compare(kd_grad(true), kd_grad(false), 1e-4, 1e-6);
  });

  return check.finish();
}
