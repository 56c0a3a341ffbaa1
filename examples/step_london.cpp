// step_london.cpp: LONDON's Lipschitz proxy (Shang et al., ICCV 2021) on 2 samples and one pair of
// stages, one line of the equation at a time, in plain arrays you can print in a debugger; then
// the library's london_loss on the same numbers, which must agree.
//
//     G = a b^T / HW                        a (Ca, HW), b (Cb, HW): the two stages' maps
//     K = G G^T                             (Ca, Ca), symmetric
//     v_k = K v_{k-1} / ||K v_{k-1}||       10 power iterations from v_0
//     sigma = sqrt(||K v_9|| / ||v_10||)    -> the largest singular value of G
//     L_london = 1/2^(n-1-i) * mean_b (sigma_s - sigma_t)^2     (n = 2 stages, pair i = 0: 1/2)
//
// Build: ninja step_london      Step through (docs/methods/london.md shows a session):
//     gdb ./step_london
//     (gdb) break step_london.cpp:58       (the power iteration of one sample done)
//     (gdb) run
//     (gdb) print sigma
#include <cmath>
#include <cstdio>

#include "distill/relation/london.h"
#include "engine/ops.h"

constexpr int B = 2;   // samples
constexpr int Ca = 2;  // channels of the first stage (the teacher's, after the connector)
constexpr int Cb = 3;  // channels of the second stage
constexpr int HW = 4;  // 2 x 2 positions (both maps the same size: no pooling)

// sigma(G) of one sample's maps a (Ca, HW), b (Cb, HW) from v0 (Ca), printing each step.
static double proxy_by_hand(const double a[Ca][HW], const double b[Cb][HW], const double v0[Ca], const char* who) {
  // 1. the transmitting matrix
  double G[Ca][Cb];
  for (int i = 0; i < Ca; ++i)
    for (int j = 0; j < Cb; ++j) {
      G[i][j] = 0;
      for (int p = 0; p < HW; ++p) G[i][j] += a[i][p] * b[j][p];
      G[i][j] /= HW;
    }
  // 2. K = G G^T
  double K[Ca][Ca];
  for (int i = 0; i < Ca; ++i)
    for (int j = 0; j < Ca; ++j) {
      K[i][j] = 0;
      for (int c = 0; c < Cb; ++c) K[i][j] += G[i][c] * G[j][c];
    }
  // 3. power iteration
  double v[Ca] = {v0[0], v0[1]}, n = 0;
  for (int k = 0; k < 10; ++k) {
    double m[Ca];
    for (int i = 0; i < Ca; ++i) m[i] = K[i][0] * v[0] + K[i][1] * v[1];
    n = std::sqrt(m[0] * m[0] + m[1] * m[1]);
    for (int i = 0; i < Ca; ++i) v[i] = m[i] / n;
  }
  const double sigma = std::sqrt(n / std::sqrt(v[0] * v[0] + v[1] * v[1]));
  // the exact value: lambda_max of the 2 x 2 K = (tr + sqrt(tr^2 - 4 det)) / 2
  const double tr = K[0][0] + K[1][1], det = K[0][0] * K[1][1] - K[0][1] * K[1][0];
  const double exact = std::sqrt((tr + std::sqrt(tr * tr - 4 * det)) / 2);
  std::printf("  %s: G = [[% .4f % .4f % .4f], [% .4f % .4f % .4f]]\n", who, G[0][0], G[0][1], G[0][2], G[1][0],
              G[1][1], G[1][2]);
  std::printf("  %s: sigma after 10 iterations %.6f, exact sqrt(lambda_max(G G^T)) %.6f\n", who, sigma, exact);
  return sigma;
}

int main() {
  // the student's maps (already through the connector) and the teacher's, per sample
  const double as[B][Ca][HW] = {{{1.0, -0.5, 0.3, 2.0}, {0.2, 0.1, -1.0, 0.4}}, {{0.5, 0.5, -0.2, 1.0}, {1.5, -0.3, 0.2, 0.0}}};
  const double bs[B][Cb][HW] = {{{0.3, 1.0, 0.0, -0.4}, {1.2, -0.7, 0.5, 0.1}, {0.0, 0.2, 0.9, 0.6}},
                                {{-0.1, 0.4, 1.1, 0.3}, {0.8, 0.0, -0.6, 0.2}, {0.5, 0.5, 0.5, -0.5}}};
  const double at[B][Ca][HW] = {{{1.2, -0.4, 0.1, 1.8}, {0.0, 0.3, -0.8, 0.5}}, {{0.7, 0.2, -0.1, 1.3}, {1.1, -0.5, 0.4, 0.1}}};
  const double bt[B][Cb][HW] = {{{0.5, 0.9, 0.2, -0.2}, {1.0, -0.5, 0.3, 0.0}, {0.1, 0.1, 1.0, 0.4}},
                                {{0.0, 0.6, 0.9, 0.1}, {0.6, 0.2, -0.4, 0.3}, {0.4, 0.7, 0.3, -0.3}}};
  const double v0[Ca] = {0.3, 0.8};  // the start (the distiller draws it uniform in [0, 1))

  double sq = 0;
  for (int s = 0; s < B; ++s) {
    std::printf("sample %d\n", s);
    const double sigma_s = proxy_by_hand(as[s], bs[s], v0, "student");
    const double sigma_t = proxy_by_hand(at[s], bt[s], v0, "teacher");
    sq += (sigma_s - sigma_t) * (sigma_s - sigma_t);
  }
  const double L_london = 0.5 * sq / B;  // pair 0 of n = 2 stages: 1/2^(2-0-1)
  std::printf("L_london = 1/2 * mean_b (sigma_s - sigma_t)^2 = %.8f\n", L_london);

  // the library on the same numbers: LONDON alone (no CE, no base feature loss), identity connectors
  using namespace kd;
  auto maps = [](const auto& x, int C) {
    std::vector<float> f;
    for (int s = 0; s < B; ++s)
      for (int c = 0; c < C; ++c)
        for (int p = 0; p < HW; ++p) f.push_back((float)x[s][c][p]);
    return from_vector(f, {B, C, 2, 2});
  };
  Tensor fa = maps(as, Ca), fb = maps(bs, Cb), ta = maps(at, Ca), tb = maps(bt, Cb);
  Tensor start = from_vector(std::vector<float>{0.3f, 0.8f, 0.3f, 0.8f}, {B, Ca, 1});
  distill::LondonOptions opt;
  opt.layers = opt.teacher_layers = {"pre1", "pre2"};
  opt.base = "none";  // london_loss is LONDON's own terms (distill_loss would add the CE)
  opt.london_weight = 1;
  Tensor zs = zeros({B, 3});
  Tensor y = from_vector(std::vector<int64_t>{0, 1}, {B});
  distill::LossBreakdown lib =
      distill::london_loss(zs, y, {fa, fb}, {fa, fb}, {ta, tb}, {}, {{start}, {start}}, opt);
  const double diff = std::fabs(lib.total.item() - L_london);
  std::printf("library london_loss = %.8f, |library - by hand| = %.2e %s\n", lib.total.item(), diff,
              diff < 1e-6 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-6 ? 0 : 1;
}
