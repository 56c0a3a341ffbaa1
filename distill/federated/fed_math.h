// fed_math.h: the equations of federated distillation, as functions of tensors (the regime in
// federated_run.cpp calls them; tests/test_federated.cpp checks them against PyTorch).
// Semantics: ../shared/METHODS.md, "Federated distillation". Notation: clients k with n_k images,
// K classes, a batch of B images.
//
// FedAvg (McMahan et al. 2017), over every tensor of the state dict, BatchNorm statistics included:
//     w = sum_k (n_k / sum_j n_j) * w_k            accumulated in double, client order, then float
//     num_batches_tracked (int64) = max_k           (a count, not a weight)
//
// FedDF (Lin et al. 2020), the server's ensemble distillation on an unlabelled public batch x:
//     z_bar = (1/|S|) sum_{k in S} f(x; w_k)          mean_logits: the code averages logits uniformly
//     L     = KL(softmax(z_bar / T) || softmax(f(x; w) / T)), batch mean, T = 1
//           = the registry's "kd" with T = 1, kd_weight = 1 (T^2 = 1), server_loss in federated.h
//     one step: L.backward(); clip_grad_norm(w, 5); Adam(lr 1e-3, cosine).step()
//
// FD (Jeong et al. 2018), per-class mean logits:
//     Z_k[c]  = mean of f(x; w_k) over client k's images of class c   (K x K), with counts m_k[c]
//     Z_bar[c] = mean of Z_k[c] over the clients with m_k[c] > 0       (fd_global_table)
//     L_k = CE(f(x), y) + lambda * KL(softmax(Z_bar[y]) || softmax(f(x)))   lambda = 1
//         = CE + lambda * the registry's "kd" at T = 1 with teacher logits Z_bar[y]   (fd_client_loss)
//
// FedMD (Li & Wang 2019), on a shared sample of the public set:
//     consensus c = (1/|S|) sum_k f(x_pub; w_k)    mean_logits
//     digest:  L1(f(x_pub; w_k), c) = mean over batch and classes of |f - c|   (Keras' MAE)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "engine/tensor.h"
#include "nn/models/model.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace kd::distill {

// FedAvg of state dicts (all with the same names and shapes) weighted by sizes n_k (> 0):
// float tensors by the weighted mean above, int64 tensors (num_batches_tracked) by their max.
// Errors name a tensor that a client lacks or whose shape differs.
nn::NamedTensors fedavg(const std::vector<nn::NamedTensors>& states, const std::vector<double>& sizes);

// The uniform mean of logits (B, K) of several networks: FedDF's ensemble, FedMD's consensus.
Tensor mean_logits(const std::vector<Tensor>& logits);

// FD: the per-class sums of one client's logits, accumulated batch by batch.
struct ClassLogits {
  Tensor sums;    // (K, K) float32: row c = sum of the logits of class-c images
  Tensor counts;  // (K) int64
  void add(const Tensor& logits, const Tensor& labels);  // logits (B, K) detached, labels (B)
  // (K, K) row c = sums[c] / counts[c] (0 where counts[c] = 0): Z_k, what the client sends
  Tensor means() const;
};
// Z_bar: the mean of the clients' Z_k[c] over the clients with counts[c] > 0; a row no client has
// stays 0 (and has_class says so).
Tensor fd_global_table(const std::vector<Tensor>& means, const std::vector<Tensor>& counts, Tensor* has_class = nullptr);

// A distillation loss of the registry applied to logits alone (feddf's server_loss, fd's fd_loss):
// the method's own terms, no CE, with T = `T` and kd_weight = 1 where the method has those keys
// and no warm-up (warmup = 0); its other options keep their defaults. Methods that read more than
// logits (feature maps, assistants, a cost matrix) are refused: only logits travel.
class LogitLoss {
 public:
  LogitLoss(const std::string& method, double T, int64_t num_classes);
  // zs (B, K) student logits, zt (B, K) teacher logits (detached), labels (B): the method's total.
  Tensor operator()(const Tensor& zs, const Tensor& zt, const Tensor& labels);
  const std::string& method() const { return method_; }

 private:
  std::string method_;
  std::shared_ptr<Distiller> distiller_;
};

// FD's client loss L_k: CE(zs, y) + lambda * loss(zs, Z_bar[y], y); only CE when the table is
// undefined (before the first round's table).
Tensor fd_client_loss(LogitLoss& loss, const Tensor& zs, const Tensor& labels, const Tensor& table, double lambda);

// One FedDF server step: L = loss(f(x; w), z_bar, argmax z_bar); backward; clip_grad_norm(clip);
// the optimizer's step at LR factor lr_factor (Optimizer::scale_lr). images (B, C, H, W)
// normalised, teacher_mean (B, K). Returns L.
double feddf_server_step(nn::Classifier& student, const Tensor& images, const Tensor& teacher_mean, LogitLoss& loss,
                         nn::Optimizer& optimizer, double lr_factor, double clip);

// FedMD's digest: mean |zs - consensus| (zs (B, K), consensus (B, K) detached).
Tensor fedmd_digest_loss(const Tensor& zs, const Tensor& consensus);

// torch.nn.utils.clip_grad_norm_(params, max_norm): the 2-norm over all gradients; when it
// exceeds max_norm every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm before.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Bytes of tensors as sent: the sum of numel * element size (what "bytes up / down" count).
int64_t message_bytes(const nn::NamedTensors& tensors);

}  // namespace kd::distill
