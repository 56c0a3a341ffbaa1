// fed_math.cpp: FedAvg, the logit ensemble, FD's class table, FedMD's digest (equations in fed_math.h).
#include "distill/federated/fed_math.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace kd::distill {

nn::NamedTensors fedavg(const std::vector<nn::NamedTensors>& states, const std::vector<double>& sizes) {
  KD_CHECK(!states.empty() && states.size() == sizes.size(), "fedavg: {} states and {} sizes (one size per client)",
           states.size(), sizes.size());
  double total = 0;
  for (double n : sizes) {
    KD_CHECK(n > 0, "fedavg: a client size is {} (each client must hold images)", n);
    total += n;
  }
  nn::NamedTensors out;
  for (size_t t = 0; t < states[0].size(); ++t) {
    const std::string& name = states[0][t].first;
    const Tensor& first = states[0][t].second;
    std::vector<Tensor> ws;  // w_k of this tensor, contiguous
    for (size_t k = 0; k < states.size(); ++k) {
      KD_CHECK(t < states[k].size() && states[k][t].first == name,
               "fedavg: client {} has no tensor '{}' where client 0 has it (FedAvg needs one architecture; use fd "
               "or fedmd for different client models)", k, name);
      KD_CHECK(states[k][t].second.shape() == first.shape(), "fedavg: '{}' has shape {} on client {} and {} on "
               "client 0", name, states[k][t].second.shape(), k, first.shape());
      ws.push_back(states[k][t].second.detach().contiguous());
    }
    const int64_t n = first.numel();
    if (first.dtype() == DType::i64) {  // num_batches_tracked: the max over clients
      Tensor w = ws[0].clone();
      int64_t* dst = w.data<int64_t>();
      for (size_t k = 1; k < ws.size(); ++k)
        for (int64_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], ws[k].data<int64_t>()[i]);
      out.emplace_back(name, w);
      continue;
    }
    KD_CHECK(first.dtype() == DType::f32, "fedavg: '{}' is neither float32 nor int64", name);
    std::vector<double> acc(n, 0.0);  // sum_k (n_k / N) w_k, in double, client order
    for (size_t k = 0; k < ws.size(); ++k) {
      const double weight = sizes[k] / total;
      const float* src = ws[k].data<float>();
      for (int64_t i = 0; i < n; ++i) acc[i] += weight * (double)src[i];
    }
    Tensor w = empty(first.shape());
    float* dst = w.data<float>();
    for (int64_t i = 0; i < n; ++i) dst[i] = (float)acc[i];
    out.emplace_back(name, w);
  }
  return out;
}

Tensor mean_logits(const std::vector<Tensor>& logits) {
  KD_CHECK(!logits.empty(), "mean_logits: no networks to average");
  Tensor sum_z = logits[0].detach();
  for (size_t k = 1; k < logits.size(); ++k) sum_z = add(sum_z, logits[k].detach());  // (B, K)
  return div(sum_z, (double)logits.size());
}

void ClassLogits::add(const Tensor& logits, const Tensor& labels) {
  const int64_t K = logits.size(1);
  if (!sums.defined()) {
    sums = zeros({K, K});
    counts = zeros({K}, DType::i64);
  }
  const Tensor z = logits.detach().contiguous();  // (B, K)
  const Tensor y = labels.contiguous();
  for (int64_t b = 0; b < z.size(0); ++b) {
    const int64_t c = y.data<int64_t>()[b];
    KD_CHECK(c >= 0 && c < K, "fd: label {} is outside the {} classes", c, K);
    float* row = sums.data<float>() + c * K;
    for (int64_t j = 0; j < K; ++j) row[j] += z.data<float>()[b * K + j];
    ++counts.data<int64_t>()[c];
  }
}

Tensor ClassLogits::means() const {
  KD_CHECK(sums.defined(), "fd: the client saw no images, so it has no class logits");
  const int64_t K = sums.size(0);
  Tensor z = zeros({K, K});  // Z_k (K, K)
  for (int64_t c = 0; c < K; ++c) {
    const int64_t m = counts.data<int64_t>()[c];
    for (int64_t j = 0; j < K && m > 0; ++j) z.data<float>()[c * K + j] = sums.data<float>()[c * K + j] / (float)m;
  }
  return z;
}

Tensor fd_global_table(const std::vector<Tensor>& means, const std::vector<Tensor>& counts, Tensor* has_class) {
  KD_CHECK(!means.empty() && means.size() == counts.size(), "fd: {} tables and {} count vectors", means.size(),
           counts.size());
  const int64_t K = means[0].size(0);
  Tensor table = zeros({K, K}), has = zeros({K}, DType::i64);  // Z_bar (K, K)
  for (int64_t c = 0; c < K; ++c) {
    double holders = 0;
    std::vector<double> row(K, 0.0);
    for (size_t k = 0; k < means.size(); ++k) {
      if (counts[k].contiguous().data<int64_t>()[c] == 0) continue;  // client k has no class c
      const Tensor z = means[k].contiguous();
      for (int64_t j = 0; j < K; ++j) row[j] += z.data<float>()[c * K + j];
      holders += 1;
    }
    if (holders == 0) continue;
    has.data<int64_t>()[c] = 1;
    for (int64_t j = 0; j < K; ++j) table.data<float>()[c * K + j] = (float)(row[j] / holders);
  }
  if (has_class) *has_class = has;
  return table;
}

LogitLoss::LogitLoss(const std::string& method, double T, int64_t num_classes) : method_(method) {
  const DistillerEntry& entry = registry_entry(method);  // an error listing the methods when unknown
  KD_CHECK(entry.create, "'{}' has a training regime of its own and no loss to distil logits with; use a logits-only "
           "method such as kd or dkd", method);
  Params params;
  for (const OptionInfo& row : entry.options()) {
    if (row.key == "T") params["T"] = format_number(T);
    if (row.key == "kd_weight") params["kd_weight"] = "1";
    if (row.key == "warmup") params["warmup"] = "0";
  }
  DistillerContext ctx;
  ctx.num_classes = num_classes;
  try {
    distiller_ = create_distiller(method, params, ctx);
  } catch (const Error& e) {
    throw Error(fmt::format("'{}' cannot be built from logits alone ({}); in a federation only logits travel: use a "
                            "logits-only method such as kd or dkd", method, e.what()));
  }
  const TeacherNeeds needs = distiller_->needs();
  KD_CHECK(needs.logits_only() && !needs.pooled && !needs.assistants && !needs.class_cost,
           "'{}' reads more than the teacher's logits (feature maps, assistants or a cost matrix), but in a federation "
           "only logits travel; use a logits-only method such as kd or dkd", method);
}

Tensor LogitLoss::operator()(const Tensor& zs, const Tensor& zt, const Tensor& labels) {
  nn::ModelOutput student, teacher;
  student.logits = zs;
  teacher.logits = zt.detach();
  BatchInfo info;
  info.labels = labels;
  return distiller_->loss(student, teacher, info).total;  // the method's own terms: no CE
}

Tensor fd_client_loss(LogitLoss& loss, const Tensor& zs, const Tensor& labels, const Tensor& table, double lambda) {
  Tensor ce = cross_entropy(zs, labels);
  if (!table.defined()) return ce;
  KD_CHECK(table.dim() == 2 && table.size(0) == zs.size(1) && table.size(1) == zs.size(1),
           "fd: logits {} and class table {} must be (B, K) and (K, K)", zs.shape(), table.shape());
  const Tensor zt = index_select(table, 0, labels);  // (B, K): Z_bar[y_b]
  return add(ce, mul(loss(zs, zt, labels), lambda));
}

double feddf_server_step(nn::Classifier& student, const Tensor& images, const Tensor& teacher_mean, LogitLoss& loss,
                         nn::Optimizer& optimizer, double lr_factor, double clip) {
  const Tensor pseudo = argmax(teacher_mean, 1);  // (B): labels for methods that split by class (dkd)
  const Tensor zs = student.forward(images).logits;  // (B, K)
  Tensor l = loss(zs, teacher_mean, pseudo);
  optimizer.zero_grad();
  l.backward();
  std::vector<Tensor> params;
  for (auto& [name, p] : student.named_parameters()) params.push_back(p);
  clip_grad_norm(params, clip);
  optimizer.scale_lr(lr_factor);
  optimizer.step();
  return l.item();
}

Tensor fedmd_digest_loss(const Tensor& zs, const Tensor& consensus) {
  KD_CHECK(zs.shape() == consensus.shape(), "fedmd: logits {} and consensus {} differ in shape", zs.shape(),
           consensus.shape());
  return mean(abs(sub(zs, consensus.detach())));
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  double sq = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor gc = g.contiguous();
    const float* d = gc.data<float>();
    for (int64_t i = 0; i < gc.numel(); ++i) sq += (double)d[i] * (double)d[i];
  }
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) p.set_grad(mul(g, coef));
    }
  return norm;
}

int64_t message_bytes(const nn::NamedTensors& tensors) {
  int64_t bytes = 0;
  for (const auto& [name, t] : tensors) bytes += t.numel() * (int64_t)dtype_size(t.dtype());
  return bytes;
}

}  // namespace kd::distill
