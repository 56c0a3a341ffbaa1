// step_catkd.cpp: CAT-KD (Guo et al. CVPR 2023) on 2 samples and 3 classes, one line of the
// equation at a time, in plain arrays you can print in a debugger; then the library's
// class_activation_maps and catkd_loss on the same numbers, which must agree.
//
//     CAM[b, k, h, w] = sum_c W[k, c] F[b, c, h, w]         the classifier as a bias-free 1x1 conv
//     logits = mean_(h, w) CAM  (+ the FC's bias, which the conversion drops)
//     P_r(CAM)  = adaptive average pool to r x r
//     N(M)      = M / ||M||_2 over the r x r cells of each map   (normalize=true)
//     L_cat     = mean over (B, K, r, r) of (N(P_r(CAM_s)) - N(P_r(CAM_t)))^2
//     L         = w_ce * CE(zs, y) + beta * L_cat
// Here the student's map is 2x2 with 2 channels and the teacher's 4x4 with 3 channels: both CAM
// sets are pooled to r = 2, normalised (the shufflenet-student setting), beta = 600.
//
// Build: ninja step_catkd      Step through (docs/methods/catkd.md shows a session):
//     gdb ./step_catkd
//     (gdb) break step_catkd.cpp:85      (both CAM sets computed)
//     (gdb) run
//     (gdb) print cam_t[0][1]
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/catkd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;             // samples
constexpr int K = 3;             // classes
constexpr int Cs = 2, Hs = 2;    // the student's map: channels, height = width
constexpr int Ct = 3, Ht = 4;    // the teacher's map
constexpr int R = 2;             // the CAM resolution r

static void print_map(const char* name, int b, int k, const double* v, int h, int w) {
  std::printf("  %s[%d][%d] =", name, b, k);
  for (int i = 0; i < h; ++i) {
    std::printf(" [");
    for (int j = 0; j < w; ++j) std::printf("%s% .4f", j ? ", " : "", v[i * w + j]);
    std::printf("]");
  }
  std::printf("\n");
}

// PyTorch's adaptive average pooling of an n x n map to R x R: cell i spans rows
// floor(i n / R) .. ceil((i + 1) n / R) - 1, and the same for columns.
static void adaptive_pool(const double* in, int n, double* out) {
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < R; ++j) {
      const int h0 = (i * n) / R, h1 = ((i + 1) * n + R - 1) / R;
      const int w0 = (j * n) / R, w1 = ((j + 1) * n + R - 1) / R;
      double s = 0;
      for (int h = h0; h < h1; ++h)
        for (int w = w0; w < w1; ++w) s += in[h * n + w];
      out[i * R + j] = s / ((h1 - h0) * (w1 - w0));
    }
}

int main() {
  const double beta = 600.0, w_ce = 1.0;
  const bool normalize = true;
  // the last feature maps (after ReLU) and the classifiers (K, C); the teacher's FC also has a bias
  double fs[B][Cs][Hs * Hs], ft[B][Ct][Ht * Ht];
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < Cs; ++c)
      for (int i = 0; i < Hs * Hs; ++i) fs[b][c][i] = 0.1 * ((3 * b + 5 * c + 7 * i) % 11);
    for (int c = 0; c < Ct; ++c)
      for (int i = 0; i < Ht * Ht; ++i) ft[b][c][i] = 0.1 * ((2 * b + 3 * c + 5 * i) % 13);
  }
  const double ws[K][Cs] = {{0.5, -0.2}, {0.1, 0.4}, {-0.3, 0.2}};
  const double wt[K][Ct] = {{0.6, -0.1, 0.2}, {-0.2, 0.5, 0.1}, {0.1, 0.1, -0.4}};
  const double bt[K] = {0.3, -0.1, 0.05};  // the teacher FC's bias: dropped by the conversion
  const int y[B] = {0, 2};

  // 1. CAMs: the classifier applied at every position (a 1x1 conv without bias)
  double cam_s[B][K][Hs * Hs], cam_t[B][K][Ht * Ht];
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      for (int i = 0; i < Hs * Hs; ++i) {
        cam_s[b][k][i] = 0;
        for (int c = 0; c < Cs; ++c) cam_s[b][k][i] += ws[k][c] * fs[b][c][i];
      }
      for (int i = 0; i < Ht * Ht; ++i) {
        cam_t[b][k][i] = 0;
        for (int c = 0; c < Ct; ++c) cam_t[b][k][i] += wt[k][c] * ft[b][c][i];
      }
    }
  std::printf("1. CAM = sum_c W[k, c] F[c]   (student %dx%d, teacher %dx%d)\n", Hs, Hs, Ht, Ht);
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) print_map("cam_s", b, k, cam_s[b][k], Hs, Hs);
  for (int k = 0; k < K; ++k) print_map("cam_t", 0, k, cam_t[0][k], Ht, Ht);

  // 2. the logits are the spatial means of the CAMs: the student's (bias-free, the CAM-variant
  //    student) and the teacher's FC logits = mean CAM + bias
  double zs[B][K];
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      double m = 0;
      for (int i = 0; i < Hs * Hs; ++i) m += cam_s[b][k][i] / (Hs * Hs);
      zs[b][k] = m;
    }
  std::printf("2. zs = mean CAM_s: [% .4f, % .4f, % .4f], [% .4f, % .4f, % .4f]\n", zs[0][0], zs[0][1], zs[0][2], zs[1][0],
              zs[1][1], zs[1][2]);
  for (int k = 0; k < K; ++k) {
    double pooled_logit = bt[k], mean_cam = 0;  // the FC on the pooled teacher map, sample 0
    for (int c = 0; c < Ct; ++c) {
      double m = 0;
      for (int i = 0; i < Ht * Ht; ++i) m += ft[0][c][i] / (Ht * Ht);
      pooled_logit += wt[k][c] * m;
    }
    for (int i = 0; i < Ht * Ht; ++i) mean_cam += cam_t[0][k][i] / (Ht * Ht);
    std::printf("   teacher sample 0, class %d: FC(pooled) = %.6f = mean CAM_t %.6f + bias %.2f\n", k, pooled_logit,
                mean_cam, bt[k]);
  }

  // 3. P_r: adaptive average pooling of every map to r x r
  double p_s[B][K][R * R], p_t[B][K][R * R];
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      adaptive_pool(cam_s[b][k], Hs, p_s[b][k]);
      adaptive_pool(cam_t[b][k], Ht, p_t[b][k]);
    }
  std::printf("3. P_r(CAM), r = %d\n", R);
  for (int k = 0; k < K; ++k) print_map("P_cam_s", 0, k, p_s[0][k], R, R);
  for (int k = 0; k < K; ++k) print_map("P_cam_t", 0, k, p_t[0][k], R, R);

  // 4. N: each r x r map divided by its L2 norm
  if (normalize)
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < K; ++k) {
        double ns = 0, nt = 0;
        for (int i = 0; i < R * R; ++i) {
          ns += p_s[b][k][i] * p_s[b][k][i];
          nt += p_t[b][k][i] * p_t[b][k][i];
        }
        ns = std::fmax(std::sqrt(ns), 1e-12);
        nt = std::fmax(std::sqrt(nt), 1e-12);
        for (int i = 0; i < R * R; ++i) {
          p_s[b][k][i] /= ns;
          p_t[b][k][i] /= nt;
        }
      }
  std::printf("4. N(P_r(CAM)) (normalize = %s)\n", normalize ? "true" : "false");
  for (int k = 0; k < K; ++k) print_map("N_cam_s", 0, k, p_s[0][k], R, R);

  // 5. L_cat: the mean squared difference over B * K * r * r cells
  double L_cat = 0;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < R * R; ++i) L_cat += (p_s[b][k][i] - p_t[b][k][i]) * (p_s[b][k][i] - p_t[b][k][i]);
  L_cat /= B * K * R * R;
  std::printf("5. L_cat = %.8f\n", L_cat);

  // 6. CE on the student's logits, and the total
  const double ce = step::mean_cross_entropy(zs, y);  // (1/B) sum_b [logsumexp(z_b) - z_b,y_b]
  const double loss = w_ce * ce + beta * L_cat;
  std::printf("6. ce = %.6f; loss = %g ce + %g L_cat = %.6f\n", ce, w_ce, beta, loss);

  // 7. the library on the same numbers: the CAMs from the maps and weights, then the loss
  using namespace kd;
  std::vector<float> fs_f, ft_f, ws_f, wt_f;
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < Cs; ++c)
      for (int i = 0; i < Hs * Hs; ++i) fs_f.push_back((float)fs[b][c][i]);
    for (int c = 0; c < Ct; ++c)
      for (int i = 0; i < Ht * Ht; ++i) ft_f.push_back((float)ft[b][c][i]);
  }
  for (int k = 0; k < K; ++k) {
    for (int c = 0; c < Cs; ++c) ws_f.push_back((float)ws[k][c]);
    for (int c = 0; c < Ct; ++c) wt_f.push_back((float)wt[k][c]);
  }
  Tensor lib_cam_s = distill::class_activation_maps(from_vector(fs_f, {B, Cs, Hs, Hs}), from_vector(ws_f, {K, Cs}));
  Tensor lib_cam_t = distill::class_activation_maps(from_vector(ft_f, {B, Ct, Ht, Ht}), from_vector(wt_f, {K, Ct}));
  Tensor lib_zs = mean(lib_cam_s, {2, 3});  // (B, K)
  distill::CatKdOptions opt;
  opt.beta = beta;
  opt.r = R;
  opt.normalize = normalize;
  opt.ce_weight = w_ce;
  Tensor ty = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  // catkd_loss is CAT-KD's own term; add_cross_entropy puts w_ce * CE in front, as distill_loss does
  distill::LossBreakdown lib = distill::add_cross_entropy(distill::catkd_loss(lib_zs, ty, lib_cam_s, lib_cam_t, opt),
                                                          lib_zs, ty, opt.ce_weight);
  std::printf("7. library w_ce * CE + catkd_loss = %.6f (ce %.6f, cat %.6f)\n", lib.total.item(), lib.parts[0].second.item(),
              lib.parts[1].second.item());
  double diff = std::fabs(lib.total.item() - loss) / std::fmax(1.0, std::fabs(loss));
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < Ht * Ht; ++i)  // the library's teacher CAMs against the hand-computed ones
        diff = std::fmax(diff, std::fabs(lib_cam_t.at({b, k, i / Ht, i % Ht}) - cam_t[b][k][i]));
  std::printf("   max |library - by hand| (relative for the loss) = %.2e %s\n", diff,
              diff < 1e-4 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-4 ? 0 : 1;
}
