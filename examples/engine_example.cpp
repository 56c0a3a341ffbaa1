// engine_example: a two-layer network trained on a toy problem with nothing but the engine.
// The README shows the body of main() as the 20-line engine example.
//
// Problem: 2-D points, class = which of 3 interleaved spiral arms they lie on (not linearly
// separable, so the hidden layer has to learn something).
#include <cmath>
#include <cstdio>

#include "engine/engine.h"

using namespace kd;

// (N, 2) points on 3 spiral arms, and their (N) labels
static void make_spirals(int64_t per_class, Generator& gen, Tensor& x, Tensor& y) {
  x = empty({3 * per_class, 2});
  y = empty({3 * per_class}, DType::i64);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < per_class; ++i) {
      double r = (double)i / per_class, a = 4.0 * r + c * 2.0944 + 0.2 * gen.normal();
      x.set({c * per_class + i, 0}, r * std::sin(a));
      x.set({c * per_class + i, 1}, r * std::cos(a));
      y.set({c * per_class + i}, (double)c);
    }
}

int main() {
  Generator gen(0);
  Tensor x, y;
  make_spirals(100, gen, x, y);                                    // x (300, 2), y (300)

  Tensor w1 = (randn({64, 2}, gen) * 0.5).requires_grad_();         // hidden layer (64, 2)
  Tensor b1 = zeros({64}).requires_grad_();
  Tensor w2 = (randn({3, 64}, gen) * 0.1).requires_grad_();         // output layer (3, 64)
  Tensor b2 = zeros({3}).requires_grad_();
  const double lr = 0.5;
  for (int step = 0; step <= 1000; ++step) {
    Tensor h = relu(linear(x, w1, b1));                             // (300, 64)
    Tensor logits = linear(h, w2, b2);                              // (300, 3)
    Tensor loss = cross_entropy(logits, y);                         // scalar
    for (Tensor* p : {&w1, &b1, &w2, &b2}) p->zero_grad();
    loss.backward();
    {
      NoGradGuard no_grad;                                          // plain SGD
      for (Tensor* p : {&w1, &b1, &w2, &b2}) p->add_(p->grad(), -lr);
    }
    if (step % 100 == 0) {
      double acc = mean(eq(argmax(logits, 1), y).to(DType::f32)).item();
      std::printf("step %4d  loss %.4f  train accuracy %.3f\n", step, loss.item(), acc);
    }
  }
  return 0;
}
