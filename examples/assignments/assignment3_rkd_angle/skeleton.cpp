// skeleton.cpp: assignment 3, your implementation of RKD's angle loss.
// Build and check it with
//   ninja -C build assignment3_skeleton && build/assignment3_skeleton
// (the target compiles this file; assignment.h has the equations and the contracts).
//
// What you may use: the engine's differentiable ops from engine/ops.h: sub, mul, normalize (read
// its comment in engine/ops.h: what does it do with a zero vector?), bmm, smooth_l1_loss, mean,
// and Tensor::unsqueeze, Tensor::transpose, Tensor::detach. Work on whole tensors; no loops over
// samples are needed, and none over triplets.
//
// Steps for angle_relation:
//   1. Build every difference at once by broadcasting: with e (B, D), e.unsqueeze(0) is (1, B, D)
//      and e.unsqueeze(1) is (B, 1, D), so their difference is (B, B, D). Check on paper that
//      diff[i][j] = e_j - e_i, the direction from e_i to e_j. (The other sign, e_i - e_j, gives
//      the same cosines: why? What would go wrong if the vertex i were the middle index instead?)
//   2. Turn each difference into a unit vector along the last dim (D); diff[i][i] is the zero
//      vector and must stay 0 (no division by 0, no NaN).
//   3. For each i, the (B, D) matrix of unit vectors u_i· times its own transpose is the (B, B)
//      matrix of the cosines <u_ij, u_ik>: one batched matrix product over i.
//
// Things to get right in rkd_angle_loss (each one is a part of the checker):
//   - the teacher's relation is a constant: compute it from ft.detach();
//   - smooth_l1 with beta = 1 (both of its branches occur in the checker's data);
//   - the mean runs over all B³ entries, the diagonal zeros included (as RKD's code does).
#include "examples/assignments/assignment3_rkd_angle/assignment.h"

#include "engine/ops.h"

namespace assignment {

kd::Tensor angle_relation(const kd::Tensor& e) {
  // ---- your code here: replace the line below with the body (three or four lines)
  throw kd::Error("assignment 3: angle_relation is not written yet; write its body in "
                  "examples/assignments/assignment3_rkd_angle/skeleton.cpp");
}

kd::Tensor rkd_angle_loss(const kd::Tensor& fs, const kd::Tensor& ft) {
  // ---- your code here: replace the line below with the body (a few lines, using angle_relation)
  throw kd::Error("assignment 3: rkd_angle_loss is not written yet; write its body in "
                  "examples/assignments/assignment3_rkd_angle/skeleton.cpp");
}

}  // namespace assignment
