// step_lora.cpp: LoRA (Hu et al. 2022) on a tiny Linear layer, 3 inputs -> 2 outputs, rank 1,
// one line of the equation at a time in plain arrays you can print in a debugger; then the merge
// W = W0 + (alpha / r) B A by hand; then the library (nn/peft.h) on the same numbers, which must
// agree on the output and on the merged weight.
//
//     h = W0 x + (alpha / r) * B (A x)          A (r, d_in), B (d_out, r)
//     W = W0 + (alpha / r) * B A                (merged: h = W x, the same output)
//
// Build: ninja step_lora      Step through:
//     gdb ./step_lora
//     (gdb) break step_lora.cpp:50      (the low-rank path B A x computed)
//     (gdb) run
//     (gdb) print h_lora
#include <cmath>
#include <cstdio>

#include "engine/ops.h"
#include "nn/peft.h"
#include "step_util.h"

constexpr int D_IN = 3, D_OUT = 2, R = 1;

int main() {
  const double alpha = 2.0, scale = alpha / R;                    // the update's scale alpha / r
  const double W0[D_OUT][D_IN] = {{0.5, -0.2, 0.1}, {0.3, 0.8, -0.4}};  // the frozen weight
  const double b0[D_OUT] = {0.1, -0.1};                           // the frozen bias
  const double A[R][D_IN] = {{0.2, -0.5, 0.4}};                   // trained (Kaiming-uniform at start)
  const double B[D_OUT][R] = {{0.3}, {-0.6}};                     // trained (zeros at start)
  const double x[D_IN] = {1.0, 2.0, -1.0};                        // one input

  // 1. the frozen path: W0 x + b0
  double h_base[D_OUT];
  for (int o = 0; o < D_OUT; ++o) {
    h_base[o] = b0[o];
    for (int i = 0; i < D_IN; ++i) h_base[o] += W0[o][i] * x[i];
  }
  step::print_row("1. W0 x + b0", h_base, D_OUT);

  // 2. the low-rank path: first down to r numbers (A x), then up to d_out (B (A x)), scaled
  double ax[R];
  for (int k = 0; k < R; ++k) {
    ax[k] = 0;
    for (int i = 0; i < D_IN; ++i) ax[k] += A[k][i] * x[i];
  }
  double h_lora[D_OUT];
  for (int o = 0; o < D_OUT; ++o) {
    h_lora[o] = 0;
    for (int k = 0; k < R; ++k) h_lora[o] += scale * B[o][k] * ax[k];
  }
  step::print_row("2. (alpha/r) B A x", h_lora, D_OUT);

  // 3. the output: the sum of both paths
  double h[D_OUT];
  for (int o = 0; o < D_OUT; ++o) h[o] = h_base[o] + h_lora[o];
  step::print_row("3. h", h, D_OUT);

  // 4. the merge: W = W0 + (alpha/r) B A, and the merged layer alone gives the same h
  double W[D_OUT][D_IN], h_merged[D_OUT];
  for (int o = 0; o < D_OUT; ++o) {
    h_merged[o] = b0[o];
    for (int i = 0; i < D_IN; ++i) {
      double ba = 0;
      for (int k = 0; k < R; ++k) ba += B[o][k] * A[k][i];
      W[o][i] = W0[o][i] + scale * ba;
      h_merged[o] += W[o][i] * x[i];
    }
  }
  step::print_row("4. W row 0", W[0], D_IN);
  step::print_row("   W row 1", W[1], D_IN);
  step::print_row("   W x + b0", h_merged, D_OUT);

  // 5. the library on the same numbers: a Linear wrapped with LoRA, then merged
  using namespace kd;
  Generator gen(0);
  nn::Linear layer(D_IN, D_OUT, gen);
  nn::add_lora(layer, nn::parse_peft_spec("lora:r=1,alpha=2,targets=*"), gen);
  {
    NoGradGuard ng;
    layer.weight.copy_(from_vector(step::flat(W0), {D_OUT, D_IN}));
    layer.bias.copy_(from_vector(std::vector<float>(b0, b0 + D_OUT), {D_OUT}));
    layer.parameter("lora_A").copy_(from_vector(step::flat(A), {R, D_IN}));
    layer.parameter("lora_B").copy_(from_vector(step::flat(B), {D_OUT, R}));
  }
  const Tensor tx = from_vector(std::vector<float>(x, x + D_IN), {1, D_IN});
  const Tensor lib_h = layer.forward(tx);
  auto& lora = dynamic_cast<nn::LoraBranch&>(*layer.branch);
  lora.merge(layer.weight);
  const Tensor lib_merged_h = layer.forward(tx);
  double diff = 0;
  for (int o = 0; o < D_OUT; ++o) {
    diff = std::fmax(diff, std::fabs(lib_h.at({0, o}) - h[o]));
    diff = std::fmax(diff, std::fabs(lib_merged_h.at({0, o}) - h[o]));
    for (int i = 0; i < D_IN; ++i) diff = std::fmax(diff, std::fabs(layer.weight.at({o, i}) - W[o][i]));
  }
  std::printf("5. library: h = [%.6f, %.6f], merged h = [%.6f, %.6f]\n", lib_h.at({0, 0}), lib_h.at({0, 1}),
              lib_merged_h.at({0, 0}), lib_merged_h.at({0, 1}));
  std::printf("   max |library - by hand| over h, merged h and W = %.2e %s\n", diff, diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-5 ? 0 : 1;
}
