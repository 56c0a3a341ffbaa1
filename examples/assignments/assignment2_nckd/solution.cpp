// solution.cpp: assignment 2's reference solution, the NCKD part of kdlab's own dkd_loss
// (distill/output/dkd.cpp) as two functions. The checker also compares it with dkd_loss itself.
#include "examples/assignments/assignment2_nckd/assignment.h"

#include "engine/ops.h"

namespace assignment {

kd::Tensor non_target_log_probs(const kd::Tensor& z, const kd::Tensor& labels, double T) {
  const int64_t K = z.size(1);
  kd::Tensor mask_1000 = kd::mul(kd::one_hot(labels, K), 1000.0);  // (B, K): 1000 at the label
  return kd::log_softmax(kd::sub(kd::div(z, T), mask_1000), 1);     // (B, K) log p̂
}

kd::Tensor nckd_loss(const kd::Tensor& zs, const kd::Tensor& zt, const kd::Tensor& labels, double T) {
  const int64_t B = zs.size(0);
  kd::Tensor log_p_hat_s = non_target_log_probs(zs, labels, T);           // (B, K)
  kd::Tensor p_hat_t = kd::exp(non_target_log_probs(zt.detach(), labels, T));  // (B, K), frozen teacher
  // KL(p̂t_b ‖ p̂s_b) per sample: kl_div takes the student in log space, the teacher as probabilities
  kd::Tensor nckd_b = kd::sum(kd::kl_div(log_p_hat_s, p_hat_t, kd::Reduction::None), {1});  // (B)
  return kd::mul(kd::sum(nckd_b), T * T / (double)B);                                        // ()
}

}  // namespace assignment
