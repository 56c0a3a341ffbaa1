// solution.cpp: assignment 3's reference solution, kdlab's own RKD angle term (psi_angle in
// distill/relation/relation.cpp with d = smooth_l1, beta 1, mean, as rkd_angle_relation in
// distill/relation/rkd.cpp sets it) as two functions. The checker also compares it with the rkd
// distiller itself.
#include "examples/assignments/assignment3_rkd_angle/assignment.h"

#include <vector>

#include "engine/ops.h"

namespace assignment {

kd::Tensor angle_relation(const kd::Tensor& e) {
  KD_CHECK(e.defined() && e.dim() == 2 && e.size(0) >= 2,
           "assignment 3: angle_relation takes features (B, D) with B >= 2, got {}",
           e.defined() ? kd::shape_str(e.shape()) : std::string("an undefined tensor"));
  const int64_t B = e.size(0);
  kd::Tensor diff = kd::sub(e.unsqueeze(0), e.unsqueeze(1));  // (B, B, D)  diff[i][j] = e_j - e_i
  kd::Tensor unit = kd::normalize(diff, 2.0, 2, 1e-12);       // (B, B, D)  e_i - e_i stays the zero vector
  // The zero vectors at j = i get no gradient in RKD's code either (their upstream gradient is 0);
  // masking them makes that exact instead of 0 / 1e-12.
  std::vector<float> off_diag((size_t)(B * B), 1.0f);  // (B, B): 1 off the diagonal, 0 on it
  for (int64_t i = 0; i < B; ++i) off_diag[(size_t)(i * B + i)] = 0.0f;
  unit = kd::mul(unit, kd::from_vector(off_diag, {B, B}).unsqueeze(2));
  return kd::bmm(unit, unit.transpose(1, 2));  // (B, B, B)  [i][j][k] = <u_ij, u_ik>
}

kd::Tensor rkd_angle_loss(const kd::Tensor& fs, const kd::Tensor& ft) {
  KD_CHECK(fs.defined() && ft.defined() && fs.size(0) == ft.size(0),
           "assignment 3: the student's features {} and the teacher's {} must be the same batch",
           fs.defined() ? kd::shape_str(fs.shape()) : std::string("(undefined)"),
           ft.defined() ? kd::shape_str(ft.shape()) : std::string("(undefined)"));
  kd::Tensor psi_t = angle_relation(ft.detach());  // (B, B, B), a constant: the teacher is frozen
  kd::Tensor psi_s = angle_relation(fs);           // (B, B, B)
  return kd::smooth_l1_loss(psi_s, psi_t, kd::Reduction::Mean, 1.0);  // ()  mean over B³ entries
}

}  // namespace assignment
