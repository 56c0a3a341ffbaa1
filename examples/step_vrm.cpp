// step_vrm.cpp: VRM's inter-sample relation term (Zhang, Xie, Cai, Ma, ICCV 2025) on 2 images and
// their virtual views, 3 classes, one line of the equation at a time in plain arrays; then the
// library's vrm_loss on the same numbers, which must agree.
//
//     Z = [z_1, z_2, z'_1, z'_2]                     4 vertices (real, then virtual), K = 3
//     E_ij = (Z_i - Z_j) / ||Z_i - Z_j||              for i < j: 6 edges (the halves j > i are -E_ij)
//     L_is = (1/6) sum_edges sum_c huber(E^s_ij,c - E^t_ij,c)    (delta = 1: x^2 / 2 here)
//     (no edge pruned: unreliable_ratio = 0)
//
// Build: ninja step_vrm      Step through:
//     gdb ./step_vrm
//     (gdb) break step_vrm.cpp:46       (the edges of both networks built)
//     (gdb) run
//     (gdb) print Es
#include <cmath>
#include <cstdio>

#include "distill/relation/vrm.h"
#include "engine/ops.h"

constexpr int N = 4;  // vertices: 2 real images, 2 virtual views
constexpr int K = 3;  // classes

static void unit_edge(const double a[K], const double b[K], double e[K]) {
  double n = 0;
  for (int c = 0; c < K; ++c) n += (a[c] - b[c]) * (a[c] - b[c]);
  n = std::sqrt(n);
  for (int c = 0; c < K; ++c) e[c] = (a[c] - b[c]) / n;
}

int main() {
  const double Zs[N][K] = {{2.0, 0.5, -1.0}, {0.1, 1.8, 0.3}, {1.6, 0.9, -0.7}, {0.4, 1.2, 0.8}};  // student
  const double Zt[N][K] = {{3.0, 0.2, -1.5}, {-0.2, 2.5, 0.1}, {2.1, 0.6, -1.0}, {0.0, 2.0, 0.6}};  // teacher

  // 1. the edges i < j of each network
  double Es[6][K], Et[6][K];
  int e = 0;
  for (int i = 0; i < N; ++i)
    for (int j = i + 1; j < N; ++j, ++e) {
      unit_edge(Zs[i], Zs[j], Es[e]);
      unit_edge(Zt[i], Zt[j], Et[e]);
      std::printf("edge (%d,%d) %s: Es = [% .4f % .4f % .4f]  Et = [% .4f % .4f % .4f]\n", i, j,
                  (i < 2 && j < 2) ? "real-real" : (i >= 2 ? "virtual-virtual" : "real-virtual"), Es[e][0], Es[e][1],
                  Es[e][2], Et[e][0], Et[e][1], Et[e][2]);
    }
  // 2. Huber per component (|x| <= 1 here, so x^2 / 2), summed per edge, averaged over edges
  double L_is = 0;
  for (e = 0; e < 6; ++e)
    for (int c = 0; c < K; ++c) {
      const double x = Es[e][c] - Et[e][c];
      L_is += (std::fabs(x) <= 1 ? 0.5 * x * x : std::fabs(x) - 0.5) / 6;
    }
  std::printf("L_is = %.8f\n", L_is);

  // 3. the library: the virtual view's CE and the inter-class weights 0, no pruning (vrm_loss is
  //    VRM's own terms: the CE of the real view is distill_loss's)
  using namespace kd;
  auto rows = [](const double Z[N][K], int from) {
    std::vector<float> v;
    for (int i = from; i < from + 2; ++i)
      for (int c = 0; c < K; ++c) v.push_back((float)Z[i][c]);
    return from_vector(v, {2, K});
  };
  distill::VrmOptions opt;
  opt.ic_weight = 0;
  opt.unreliable_ratio = 0;
  Tensor y = from_vector(std::vector<int64_t>{0, 1}, {2});
  distill::LossBreakdown lib = distill::vrm_loss(rows(Zs, 0), rows(Zt, 0), rows(Zs, 2), rows(Zt, 2), y, opt);
  const double diff = std::fabs(lib.total.item() - L_is);
  std::printf("library vrm_loss (inter-sample only) = %.8f, |library - by hand| = %.2e %s\n", lib.total.item(), diff,
              diff < 1e-6 ? "(agree)" : "(DISAGREE)");
  return diff < 1e-6 ? 0 : 1;
}
