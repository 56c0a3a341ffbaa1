// init.h: weight initialisation, always from an explicit seeded Generator.
#pragma once
#include "engine/generator.h"
#include "engine/tensor.h"

namespace kd::nn::init {

// fan_in / fan_out of a weight: Linear (out, in); Conv (out, in/groups, kh, kw).
int64_t fan_in(const Tensor& w);
int64_t fan_out(const Tensor& w);

// In place, under no-grad.
void uniform_(Tensor& t, double lo, double hi, Generator& gen);
void normal_(Tensor& t, double mean, double std, Generator& gen);
void constant_(Tensor& t, double value);
// PyTorch's default for Conv and Linear weights: kaiming_uniform_(a = sqrt(5)), which is
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)); and their bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void pytorch_default_weight_(Tensor& w, Generator& gen);
void pytorch_default_bias_(Tensor& b, int64_t fan_in, Generator& gen);
// kaiming_normal_(mode = fan_out, nonlinearity = relu): N(0, 2 / fan_out), mdistiller's conv init.
void kaiming_normal_fan_out_(Tensor& w, Generator& gen);
// kaiming_normal_(mode = fan_in): N(0, 2 / fan_in)
void kaiming_normal_fan_in_(Tensor& w, Generator& gen);
// trunc_normal_(std) on [-2 std, 2 std] (the ViT's init)
void trunc_normal_(Tensor& t, double std, Generator& gen);

}  // namespace kd::nn::init
