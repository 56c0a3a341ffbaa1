// step_fusion.cpp: a fusion of two methods (kd+dkd) and the combination of two teachers, on 2
// samples and 4 classes, one step at a time in plain numbers you can print in a debugger; then
// the library's FusionDistiller and combine_teacher_logits on the same numbers, which must agree.
//
// Fusion (distill/fusion.h), epoch e of N:
//     L = w_ce * CE(zs, y) + sum_i w_i * s_i(e) * L_i       (L_i: method i's own terms, no CE)
//     s_kd  = warmup:4 -> min(e / 4, 1)       s_dkd = cosine -> (1 + cos(pi (e - 1) / N)) / 2
// Two teachers, CA-MKD confidence weights:
//     l_bm = CE(z_m,b, y_b),  a_bm = (1 - softmax_m(l_b)_m) / (M - 1),  zt_b = sum_m a_bm z_m,b
//
// Build: ninja step_fusion      Step through (docs/methods/fusion.md shows a session):
//     gdb ./step_fusion
//     (gdb) break step_fusion.cpp:77       (the factors w_i * s_i(e) computed)
//     (gdb) run
//     (gdb) print factor_kd
#include <cmath>
#include <cstdio>
#include <numbers>

#include "distill/fusion.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "engine/ops.h"

using namespace kd;

constexpr int B = 2;  // samples
constexpr int K = 4;  // classes

static Tensor tensor_of(const double (&z)[B][K]) {
  std::vector<float> v;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) v.push_back((float)z[b][k]);
  return from_vector(v, {B, K});
}

// -log softmax(z)[y] of one row, with the max subtracted first
static double ce_row(const double* z, int y) {
  double m = z[0];
  for (int k = 1; k < K; ++k) m = std::fmax(m, z[k]);
  double s = 0;
  for (int k = 0; k < K; ++k) s += std::exp(z[k] - m);
  return -(z[y] - m - std::log(s));
}

static double value_of(const distill::LossBreakdown& l, const char* name) {
  for (const auto& [n, v] : l.parts)
    if (n == name) return v.item();
  return 0;
}

int main() {
  const double zs[B][K] = {{2.0, 1.0, 0.1, -1.0}, {0.5, 2.5, -0.3, 0.0}};  // student logits
  const double z1[B][K] = {{3.0, 0.5, 0.2, -2.0}, {0.1, 4.0, 1.0, -1.0}};  // teacher 1 (right on both)
  const double z2[B][K] = {{0.5, 2.5, 0.0, -1.0}, {0.2, 3.0, 0.5, 0.0}};   // teacher 2 (wrong on sample 0)
  const int y[B] = {0, 1};
  const int64_t epoch = 2, N = 10;  // the second epoch of ten
  Tensor tzs = tensor_of(zs), tz1 = tensor_of(z1), tz2 = tensor_of(z2);
  Tensor ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});

  // ---------------------------------------------------------------- part 1: fusion kd+dkd
  // 1. each component's own terms (the library's per-method losses, without CE; kd.md, dkd.md)
  distill::KdOptions kd_opt;          // T 4, ce 0.1, kd 0.9
  distill::DkdOptions dkd_opt;        // alpha 1, beta 8, T 4, ce 1
  dkd_opt.warmup = 0;
  distill::LossBreakdown l_kd = distill::kd_loss(tzs, tz1, ty, kd_opt);
  distill::LossBreakdown l_dkd = distill::dkd_loss(tzs, tz1, ty, dkd_opt, epoch);
  std::printf("1. kd's terms:  kd %.6f              (total %.6f)\n", value_of(l_kd, "kd"), l_kd.total.item());
  std::printf("   dkd's terms: tckd %.6f  nckd %.6f (total %.6f)\n", value_of(l_dkd, "tckd"),
              value_of(l_dkd, "nckd"), l_dkd.total.item());

  // 2. the factors w_i * s_i(epoch): kd.weight=1 with warmup:4, dkd.weight=0.5 with cosine
  const double w_kd = 1.0, w_dkd = 0.5;
  const double s_kd = std::fmin((double)epoch / 4.0, 1.0);
  const double s_dkd = 0.5 * (1.0 + std::cos(std::numbers::pi * (double)(epoch - 1) / (double)N));
  const double factor_kd = w_kd * s_kd, factor_dkd = w_dkd * s_dkd;
  std::printf("2. factors at epoch %lld of %lld: kd %g * %g = %.6f, dkd %g * %.6f = %.6f\n", (long long)epoch,
              (long long)N, w_kd, s_kd, factor_kd, w_dkd, s_dkd, factor_dkd);

  // 3. CE once (distill_loss adds it), with the fusion's weight: the first component's (kd's 0.1)
  const double w_ce = kd_opt.ce_weight;
  const double ce = (ce_row(zs[0], y[0]) + ce_row(zs[1], y[1])) / B;
  std::printf("3. ce = %.6f, times w_ce %g = %.6f (dkd's own ce_weight is not used)\n", ce, w_ce, w_ce * ce);

  // 4. the sum: CE, then every part of every component, times its component's factor
  const double kd_kd = factor_kd * value_of(l_kd, "kd");
  const double dkd_tckd = factor_dkd * value_of(l_dkd, "tckd"), dkd_nckd = factor_dkd * value_of(l_dkd, "nckd");
  const double loss = w_ce * ce + kd_kd + dkd_tckd + dkd_nckd;
  std::printf("4. loss = %.6f   (parts: ce %.6f, kd.kd %.6f, dkd.tckd %.6f, dkd.nckd %.6f)\n", loss, w_ce * ce, kd_kd,
              dkd_tckd, dkd_nckd);

  // 5. the library's fusion on the same numbers
  distill::DistillerContext ctx;
  ctx.num_classes = K;
  auto fusion = distill::create_distiller(
      "kd+dkd", {{"kd.schedule", "warmup:4"}, {"dkd.weight", "0.5"}, {"dkd.schedule", "cosine"}, {"dkd.warmup", "0"}},
      ctx);
  nn::ModelOutput student, teacher;
  student.logits = tzs;
  teacher.logits = tz1;
  distill::BatchInfo batch;
  batch.labels = ty;
  batch.epoch = epoch;
  batch.total_epochs = N;
  distill::LossBreakdown lib = distill::distill_loss(*fusion, student, teacher, batch);  // w_ce * CE + the terms
  const double diff_fusion = std::fabs(lib.total.item() - loss);
  std::printf("5. library %s = %.6f, |library - by hand| = %.2e\n", fusion->name().c_str(), lib.total.item(),
              diff_fusion);

  // ---------------------------------------------------------------- part 2: two teachers
  // 6. each teacher's cross-entropy on each sample
  const double l[B][2] = {{ce_row(z1[0], y[0]), ce_row(z2[0], y[0])}, {ce_row(z1[1], y[1]), ce_row(z2[1], y[1])}};
  // 7. a_bm = (1 - softmax over the teachers of l_b) / (M - 1), M = 2
  double a[B][2], zt[B][K];
  for (int b = 0; b < B; ++b) {
    const double e1 = std::exp(l[b][0]), e2 = std::exp(l[b][1]);
    a[b][0] = (1.0 - e1 / (e1 + e2)) / 1.0;
    a[b][1] = (1.0 - e2 / (e1 + e2)) / 1.0;
    for (int k = 0; k < K; ++k) zt[b][k] = a[b][0] * z1[b][k] + a[b][1] * z2[b][k];
    std::printf("%d. sample %d: CE of the teachers %.4f, %.4f -> weights %.4f, %.4f\n", 6 + b, b, l[b][0], l[b][1],
                a[b][0], a[b][1]);
  }
  // 8. the library's combination
  Tensor lib_zt = distill::combine_teacher_logits({tz1, tz2}, ty, {"confidence", {}});
  double diff_teachers = 0;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) diff_teachers = std::fmax(diff_teachers, std::fabs(lib_zt.at({b, k}) - zt[b][k]));
  std::printf("8. combined logits (library):\n%s\n   |library - by hand| = %.2e\n", to_string(lib_zt).c_str(),
              diff_teachers);

  const bool agree = diff_fusion < 1e-5 && diff_teachers < 1e-5;
  std::printf("%s\n", agree ? "(agree)" : "(DISAGREE)");
  return agree ? 0 : 1;
}
