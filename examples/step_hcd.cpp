// step_hcd.cpp: HCD (Xu et al. AAAI 2026) on 2 samples, 3 classes and n = 2 sub-logits, one line
// of the equation at a time, in plain arrays you can print in a debugger; then the library's
// HcdDistiller on the same numbers and the same helper weights, which must agree.
//
//     f_s     = mean_(h,w) (W_p F_s + b_p)         the stage's projector (a 1x1 conv: the map is
//                                                   already the deepest size), then the pooling  (B, D)
//     f_cat   = [f_s ; f_t]                         f_t: the teacher's penultimate feature      (B, D + Ct)
//     z       = W_2 relu(W_1 f_cat + b_1) + b_2     the Complementary Feature Mapper (MLP)      (B, n K)
//     z_j     = z[:, j K : (j+1) K]                 the n sub-logits                            (B, n, K)
//     zhat_j  = z_j + z_t                           fused with the teacher's logits
//     L_sce   = (1/n) sum_j CE(zhat_j, y)
//     L_skd   = (1/n) sum_j T^2 KL(softmax(zhat_j / T) || softmax(z_s / T))
//     u_j     = z_j without its target entry, L2-normalised;  S_ij = <u_i, u_j>
//     L_ol    = mean over b and i != j of relu(S_ij - theta)^2
//     L       = CE(z_s, y) + T^2 KL(p_t || p_s) + L_sce + L_skd + L_ol          (weights 1)
// One stage (f3, a 2x2 map of 2 channels), a teacher feature of Ct = 3, so D = max(2, 3) = 3 and
// the MLP's hidden width is Ct = 3; T = 2, theta = 0.5. Step 8 shows the masking order to avoid.
//
// Build: ninja step_hcd      Step through (docs/methods/hcd.md shows a session):
//     gdb ./step_hcd
//     (gdb) break step_hcd.cpp:135      (the sub-logits z_j and the fused zhat_j are computed)
//     (gdb) run
//     (gdb) print z_hat[0]
#include <cmath>
#include <cstdio>
#include <vector>

#include "distill/feature/hcd.h"
#include "engine/ops.h"
#include "step_util.h"

constexpr int B = 2;        // samples
constexpr int K = 3;        // classes
constexpr int N = 2;        // n, sub-logits
constexpr int Cs = 2;       // channels of the student's stage map (2 x 2 positions)
constexpr int P = 4;        // positions of that map
constexpr int Ct = 3;       // width of the teacher's penultimate feature
constexpr int D = 3;        // projector width: max(Cs, Ct)
constexpr int Hd = Ct;      // the CFM's hidden width (the teacher's width)
constexpr int In = D + Ct;  // the CFM's input width

// log softmax(v / T) of a K-vector
static void log_softmax_T(const double* v, double T, double* out) {
  double m = v[0] / T, s = 0;
  for (int k = 1; k < K; ++k) m = std::fmax(m, v[k] / T);
  for (int k = 0; k < K; ++k) s += std::exp(v[k] / T - m);
  for (int k = 0; k < K; ++k) out[k] = v[k] / T - m - std::log(s);
}

// KL(p || q) of two K-vectors given as log-probabilities
static double kl(const double* log_p, const double* log_q) {
  double s = 0;
  for (int k = 0; k < K; ++k) s += std::exp(log_p[k]) * (log_p[k] - log_q[k]);
  return s;
}

int main() {
  const double T = 2.0, theta = 0.5;
  // ---- inputs: the student's stage map F_s (B, Cs, 2, 2) and logits z_s, the teacher's f_t and z_t
  double F_s[B][Cs][P], zs[B][K], zt[B][K], f_t[B][Ct];
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < Cs; ++c)
      for (int i = 0; i < P; ++i) F_s[b][c][i] = 0.1 * ((3 * b + 5 * c + 7 * i) % 11);
    for (int k = 0; k < K; ++k) {
      zs[b][k] = 0.3 * ((2 * b + 3 * k) % 5) - 0.5;
      zt[b][k] = 0.8 * ((b + 2 * k) % 3) - 0.6;
    }
    for (int c = 0; c < Ct; ++c) f_t[b][c] = 0.2 * ((4 * b + c) % 5) - 0.3;
  }
  const int y[B] = {2, 0};
  // ---- helper weights (in training they are learned; here fixed numbers)
  double Wp[D][Cs], bp[D], W1[Hd][In], b1[Hd], W2[N * K][Hd], b2[N * K];
  for (int d = 0; d < D; ++d) {
    for (int c = 0; c < Cs; ++c) Wp[d][c] = 0.3 * ((d + 2 * c) % 3) - 0.2;
    bp[d] = 0.05 * d;
  }
  for (int h = 0; h < Hd; ++h) {
    for (int i = 0; i < In; ++i) W1[h][i] = 0.25 * ((h + 3 * i) % 5) - 0.4;
    b1[h] = 0.1;
  }
  const double chunk_bias[N][K] = {{0.9, -0.4, 0.3}, {0.6, 0.1, 0.5}};  // partly aligned sub-logits
  for (int o = 0; o < N * K; ++o) {
    for (int h = 0; h < Hd; ++h) W2[o][h] = 0.2 * ((2 * o + h) % 4) - 0.3;
    b2[o] = chunk_bias[o / K][o % K];
  }

  // 1. f_s: the 1x1 conv at every position, then the mean over the positions
  double f_s[B][D];
  for (int b = 0; b < B; ++b)
    for (int d = 0; d < D; ++d) {
      double m = 0;
      for (int i = 0; i < P; ++i) {
        double v = bp[d];
        for (int c = 0; c < Cs; ++c) v += Wp[d][c] * F_s[b][c][i];
        m += v / P;
      }
      f_s[b][d] = m;
    }
  std::printf("1. f_s = AvgPool(conv1x1(F_s))  (B, D = %d)\n", D);
  for (int b = 0; b < B; ++b) step::print_row("f_s", f_s[b], D);

  // 2.-3. f_cat = [f_s ; f_t], then the CFM: z = W2 relu(W1 f_cat + b1) + b2
  double f_cat[B][In], z[B][N * K];
  for (int b = 0; b < B; ++b) {
    for (int d = 0; d < D; ++d) f_cat[b][d] = f_s[b][d];
    for (int c = 0; c < Ct; ++c) f_cat[b][D + c] = f_t[b][c];
    double hidden[Hd];
    for (int h = 0; h < Hd; ++h) {
      double v = b1[h];
      for (int i = 0; i < In; ++i) v += W1[h][i] * f_cat[b][i];
      hidden[h] = std::fmax(v, 0.0);
    }
    for (int o = 0; o < N * K; ++o) {
      double v = b2[o];
      for (int h = 0; h < Hd; ++h) v += W2[o][h] * hidden[h];
      z[b][o] = v;
    }
  }
  std::printf("2. f_cat = [f_s ; f_t]  (B, %d)\n3. z = CFM(f_cat), the shared logits  (B, n K = %d)\n", In, N * K);
  for (int b = 0; b < B; ++b) step::print_row("z", z[b], N * K);

  // 4.-5. the sub-logits z_j (chunks of K columns) and the fused zhat_j = z_j + z_t
  double z_sub[B][N][K], z_hat[B][N][K];
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < N; ++j)
      for (int k = 0; k < K; ++k) {
        z_sub[b][j][k] = z[b][j * K + k];
        z_hat[b][j][k] = z_sub[b][j][k] + zt[b][k];
      }
  std::printf("4. z_j (sub-logits) and 5. zhat_j = z_j + z_t\n");
  for (int j = 0; j < N; ++j) step::print_row(j == 0 ? "z_0 (b=0)" : "z_1 (b=0)", z_sub[0][j], K);
  for (int j = 0; j < N; ++j) step::print_row(j == 0 ? "zhat_0   " : "zhat_1   ", z_hat[0][j], K);

  // 6. SDD: CE of every fused sub-logit, and the student's logits distilled from each of them
  double L_sce = 0, L_skd = 0;
  for (int b = 0; b < B; ++b) {
    double log_ps[K];
    log_softmax_T(zs[b], T, log_ps);
    for (int j = 0; j < N; ++j) {
      double log_p1[K], log_pT[K];
      log_softmax_T(z_hat[b][j], 1.0, log_p1);
      L_sce += -log_p1[y[b]] / (B * N);
      log_softmax_T(z_hat[b][j], T, log_pT);
      L_skd += T * T * kl(log_pT, log_ps) / (B * N);
    }
  }
  std::printf("6. L_sub_ce = %.6f   L_sub_kd = %.6f\n", L_sce, L_skd);

  // 7. OL: drop the target entry, normalise, cosines between the sub-logits of each sample
  double L_ol = 0;
  for (int b = 0; b < B; ++b) {
    double u[N][K];
    for (int j = 0; j < N; ++j) {
      double norm = 0;
      for (int k = 0; k < K; ++k) {
        u[j][k] = k == y[b] ? 0.0 : z_sub[b][j][k];  // the target class excluded
        norm += u[j][k] * u[j][k];
      }
      norm = std::fmax(std::sqrt(norm), 1e-12);
      for (int k = 0; k < K; ++k) u[j][k] /= norm;
    }
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) {
        if (i == j) continue;
        double S = 0;
        for (int k = 0; k < K; ++k) S += u[i][k] * u[j][k];
        if (i == 0 && j == 1) std::printf("7. S[%d][0][1] = %.6f\n", b, S);
        const double excess = std::fmax(S - theta, 0.0);
        L_ol += excess * excess / (B * N * (N - 1));
      }
  }
  std::printf("   L_ol = %.6f\n", L_ol);

  // 8. the trap: the target entry filled with -1e6 BEFORE normalising. Then u_j = -e_y for every
  //    j, S = 1 whatever the sub-logits are, and L_ol = (1 - theta)^2 = 0.25 with no gradient.
  {
    double wrong = 0;
    for (int b = 0; b < B; ++b) {
      double u[N][K];
      for (int j = 0; j < N; ++j) {
        double norm = 0;
        for (int k = 0; k < K; ++k) {
          u[j][k] = k == y[b] ? -1e6 : z_sub[b][j][k];
          norm += u[j][k] * u[j][k];
        }
        for (int k = 0; k < K; ++k) u[j][k] /= std::sqrt(norm);
      }
      double S = 0;
      for (int k = 0; k < K; ++k) S += u[0][k] * u[1][k];
      wrong += std::pow(std::fmax(S - theta, 0.0), 2) / B;
    }
    std::printf("8. (wrong order) fill -1e6 then normalise: L_ol = %.6f, a constant\n", wrong);
  }

  // 9. the student's own terms: CE and KD from the teacher
  double ce = 0, L_kd = 0;
  for (int b = 0; b < B; ++b) {
    double log_p1[K], log_ps[K], log_pt[K];
    log_softmax_T(zs[b], 1.0, log_p1);
    ce += -log_p1[y[b]] / B;
    log_softmax_T(zs[b], T, log_ps);
    log_softmax_T(zt[b], T, log_pt);
    L_kd += T * T * kl(log_pt, log_ps) / B;
  }
  const double loss = ce + L_kd + L_sce + L_skd + L_ol;
  std::printf("9. ce = %.6f   L_kd = %.6f\n   loss = %.6f\n", ce, L_kd, loss);

  // 10. the library on the same numbers, with the same helper weights
  using namespace kd;
  std::vector<float> F_v, zs_v, zt_v, ft_v, Wp_v, bp_v, W1_v, b1_v, W2_v, b2_v;
  for (int b = 0; b < B; ++b) {
    for (int c = 0; c < Cs; ++c)
      for (int i = 0; i < P; ++i) F_v.push_back((float)F_s[b][c][i]);
    for (int k = 0; k < K; ++k) {
      zs_v.push_back((float)zs[b][k]);
      zt_v.push_back((float)zt[b][k]);
    }
    for (int c = 0; c < Ct; ++c) ft_v.push_back((float)f_t[b][c]);
  }
  for (int d = 0; d < D; ++d) {
    for (int c = 0; c < Cs; ++c) Wp_v.push_back((float)Wp[d][c]);
    bp_v.push_back((float)bp[d]);
  }
  for (int h = 0; h < Hd; ++h) {
    for (int i = 0; i < In; ++i) W1_v.push_back((float)W1[h][i]);
    b1_v.push_back((float)b1[h]);
  }
  for (int o = 0; o < N * K; ++o) {
    for (int h = 0; h < Hd; ++h) W2_v.push_back((float)W2[o][h]);
    b2_v.push_back((float)b2[o]);
  }
  nn::ModelOutput student, teacher;
  student.logits = from_vector(zs_v, {B, K});
  student.feats.resize(4);
  student.feats[3] = from_vector(F_v, {B, Cs, 2, 2});  // the tap f3
  teacher.logits = from_vector(zt_v, {B, K});
  teacher.pooled = from_vector(ft_v, {B, Ct});
  distill::DistillerContext ctx;
  ctx.num_classes = K;
  ctx.student_sample = student;
  ctx.teacher_sample = teacher;
  auto d = distill::create_distiller("hcd", {{"layers", "f3"}, {"k", "2"}, {"T", "2"}}, ctx);
  d->load_state_dict(std::map<std::string, Tensor>{{"proj_f3.0.weight", from_vector(Wp_v, {D, Cs, 1, 1})},
                                                   {"proj_f3.0.bias", from_vector(bp_v, {D})},
                                                   {"cfm_f3.0.weight", from_vector(W1_v, {Hd, In})},
                                                   {"cfm_f3.0.bias", from_vector(b1_v, {Hd})},
                                                   {"cfm_f3.2.weight", from_vector(W2_v, {N * K, Hd})},
                                                   {"cfm_f3.2.bias", from_vector(b2_v, {N * K})}},
                     /*strict=*/true);
  distill::BatchInfo batch;
  batch.labels = from_vector(std::vector<int64_t>{y[0], y[1]}, {B});
  distill::LossBreakdown lib = distill::distill_loss(*d, student, teacher, batch);  // w_ce * CE + HCD's terms
  const double by_hand[5] = {ce, L_kd, L_sce, L_skd, L_ol};
  std::printf("10. library: loss = %.6f (", lib.total.item());
  double diff = std::fabs(lib.total.item() - loss) / std::fmax(1.0, std::fabs(loss));
  for (size_t i = 0; i < lib.parts.size(); ++i) {
    std::printf("%s%s %.6f", i ? ", " : "", lib.parts[i].first.c_str(), lib.parts[i].second.item());
    diff = std::fmax(diff, std::fabs(lib.parts[i].second.item() - by_hand[i]) / std::fmax(1.0, std::fabs(by_hand[i])));
  }
  std::printf(")\n    max |library - by hand| (relative) = %.2e %s\n", diff, diff < 1e-5 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-5 && L_ol > 0 ? 0 : 1;
}
