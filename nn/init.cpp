#include "nn/init.h"

#include <cmath>

#include "engine/autograd.h"

namespace kd::nn::init {

int64_t fan_in(const Tensor& w) {
  KD_CHECK(w.dim() >= 2, "fan_in needs a weight with at least 2 dims, got {}", shape_str(w.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < w.dim(); ++d) receptive *= w.shape()[d];
  return w.shape()[1] * receptive;
}

int64_t fan_out(const Tensor& w) {
  KD_CHECK(w.dim() >= 2, "fan_out needs a weight with at least 2 dims, got {}", shape_str(w.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < w.dim(); ++d) receptive *= w.shape()[d];
  return w.shape()[0] * receptive;
}

void uniform_(Tensor& t, double lo, double hi, Generator& gen) {
  NoGradGuard g;
  t.copy_(uniform(t.shape(), lo, hi, gen));
}

void normal_(Tensor& t, double mean, double std, Generator& gen) {
  NoGradGuard g;
  Tensor r = randn(t.shape(), gen);
  r.mul_(std);
  t.copy_(r);
  if (mean != 0) t.add_(full(t.shape(), mean));
}

void constant_(Tensor& t, double value) {
  NoGradGuard g;
  t.fill_(value);
}

void pytorch_default_weight_(Tensor& w, Generator& gen) {
  double bound = 1.0 / std::sqrt((double)fan_in(w));
  uniform_(w, -bound, bound, gen);
}

void pytorch_default_bias_(Tensor& b, int64_t fan_in, Generator& gen) {
  double bound = fan_in > 0 ? 1.0 / std::sqrt((double)fan_in) : 0.0;
  uniform_(b, -bound, bound, gen);
}

void kaiming_normal_fan_out_(Tensor& w, Generator& gen) { normal_(w, 0.0, std::sqrt(2.0 / fan_out(w)), gen); }
void kaiming_normal_fan_in_(Tensor& w, Generator& gen) { normal_(w, 0.0, std::sqrt(2.0 / fan_in(w)), gen); }

void trunc_normal_(Tensor& t, double std, Generator& gen) {
  NoGradGuard g;
  std::vector<float> v(t.numel());
  for (auto& x : v) {
    double r;
    do r = gen.normal(); while (r < -2.0 || r > 2.0);  // rejection: keep draws within 2 std
    x = (float)(r * std);
  }
  t.copy_(from_vector(v, t.shape()));
}

}  // namespace kd::nn::init
