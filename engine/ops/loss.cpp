// Losses, with PyTorch's semantics (torch.nn.functional of the same name).
//
// Most are written with other ops, so autograd comes for free:
//   mse_loss        (x - y)^2
//   smooth_l1_loss  0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta   (beta = 0: |d|)
//   huber_loss      0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)
//   kl_div          target (log target - input), 0 where target = 0        (log_target: e^t (t - input))
//   cross_entropy   nll_loss(log_softmax(logits)) mixed with the label-smoothing term
// Two have their own kernels: nll_loss (a gather by label, with class weights and ignore_index)
// and binary_cross_entropy_with_logits (the stable softplus form; its gradient
// sigmoid(x) - y is exact where the composed form has a kink at x = 0).
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/iter.h"

namespace kd {

namespace {

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::None: return "None";
    case Reduction::Mean: return "Mean";
    case Reduction::Sum: return "Sum";
    case Reduction::BatchMean: return "BatchMean";
  }
  return "?";
}

void check_not_batchmean(Reduction r, const char* op) {
  KD_CHECK(r != Reduction::BatchMean,
           "{}: Reduction::BatchMean is only valid for kl_div; use Reduction::Mean, Sum or None", op);
}

void check_f32(const Tensor& t, const char* op, const char* what) {
  KD_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
  KD_CHECK(t.dtype() == DType::f32, "{}: {} must be float32, got {}", op, what, dtype_name(t.dtype()));
}

void check_same_shape(const Tensor& input, const Tensor& target, const char* op) {
  KD_CHECK(input.shape() == target.shape(), "{}: input shape {} and target shape {} differ; they must be equal",
           op, shape_str(input.shape()), shape_str(target.shape()));
}

// None: elementwise; Mean: over every element; Sum.
Tensor reduce_loss(const Tensor& loss, Reduction r, const char* op) {
  check_not_batchmean(r, op);
  if (r == Reduction::Sum) return sum(loss);
  if (r == Reduction::Mean) return mean(loss);
  return loss;
}

// Class targets: (B) int64 labels for (B, K) scores, each in [0, K) or equal to ignore_index.
void check_class_target(const Tensor& scores, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                        const char* op, const char* scores_name) {
  check_f32(scores, op, scores_name);
  KD_CHECK(scores.dim() == 2, "{}: {} must be (B, K), got shape {}", op, scores_name, shape_str(scores.shape()));
  KD_CHECK(target.defined() && target.dtype() == DType::i64,
           "{}: target must hold int64 class labels, got {}; convert with .to(kd::DType::i64)", op,
           target.defined() ? std::string(dtype_name(target.dtype())) : "undefined");
  KD_CHECK(target.dim() == 1 && target.size(0) == scores.size(0),
           "{}: target of shape {} does not match {} of shape {}; expected target ({},)", op,
           shape_str(target.shape()), scores_name, shape_str(scores.shape()), scores.size(0));
  const int64_t K = scores.size(1);
  for (int64_t label : to_int_vector(target))
    KD_CHECK(label == ignore_index || (label >= 0 && label < K),
             "{}: target label {} is out of range for K = {} classes (labels must be in [0, {}) or equal "
             "ignore_index {})", op, label, K, K, ignore_index);
  if (weight.defined()) {
    check_f32(weight, op, "weight");
    KD_CHECK(weight.dim() == 1 && weight.size(0) == K, "{}: class weight has shape {} but {} has shape {}; expected ({},)",
             op, shape_str(weight.shape()), scores_name, shape_str(scores.shape()), K);
  }
}

}  // namespace

// ------------------------------------------------------------------ nll_loss

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction, const Tensor& weight,
                int64_t ignore_index) {
  check_not_batchmean(reduction, "nll_loss");
  check_class_target(log_probs, target, weight, ignore_index, "nll_loss", "log_probs");
  const int64_t B = log_probs.size(0), K = log_probs.size(1);
  std::vector<int64_t> t = to_int_vector(target);                      // (B)
  std::vector<float> lp = to_float_vector(log_probs);                  // (B, K)
  std::vector<float> w = weight.defined() ? to_float_vector(weight) : std::vector<float>(K, 1.f);

  // loss_b = -w[t_b] * log_probs[b, t_b]  (0 where t_b == ignore_index)
  // Mean divides the sum by sum_b w[t_b] over the labels not ignored (PyTorch's weighted mean).
  std::vector<double> wb(B, 0.0);
  double wsum = 0;
  for (int64_t b = 0; b < B; ++b)
    if (t[b] != ignore_index) {
      wb[b] = w[t[b]];
      wsum += wb[b];
    }
  Tensor out;
  Tensor coef = zeros({B, K});  // d(loss)/d(log_probs) for an upstream gradient of 1: (B, K)
  float* cp = coef.data<float>();
  if (reduction == Reduction::None) {
    out = empty({B});
    float* op = out.data<float>();
    for (int64_t b = 0; b < B; ++b) {
      op[b] = t[b] == ignore_index ? 0.f : (float)(-wb[b] * lp[b * K + t[b]]);
      if (t[b] != ignore_index) cp[b * K + t[b]] = (float)-wb[b];
    }
  } else {
    const double div = reduction == Reduction::Mean ? wsum : 1.0;  // wsum = 0 gives NaN, as PyTorch
    double s = 0;
    for (int64_t b = 0; b < B; ++b)
      if (t[b] != ignore_index) {
        s += -wb[b] * lp[b * K + t[b]];
        cp[b * K + t[b]] = (float)(-wb[b] / div);
      }
    out = scalar_tensor(s / div);
  }
  return record(out, "nll_loss", {log_probs}, {coef}, [B, reduction](const Node& n, const Tensor& g) {
    // d(loss)/d(log_probs[b, k]) = -w[t_b] (/ sum of weights for Mean) at k = t_b, else 0
    const Tensor& coef = n.saved[0];
    Tensor gb = reduction == Reduction::None ? g.reshape({B, 1}) : g;  // (B, 1) or ()
    return std::vector<Tensor>{mul(coef, gb)};
  });
}

// ------------------------------------------------------------------ cross_entropy

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt) {
  check_not_batchmean(opt.reduction, "cross_entropy");
  check_class_target(logits, target, opt.weight, opt.ignore_index, "cross_entropy", "logits");
  const double eps = opt.label_smoothing;
  KD_CHECK(eps >= 0.0 && eps <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got {}", eps);
  const int64_t K = logits.size(1);

  Tensor logp = log_softmax(logits, 1);  // (B, K)
  Tensor nll = nll_loss(logp, target, opt.reduction, opt.weight, opt.ignore_index);
  if (eps == 0.0) return nll;

  // Label smoothing (PyTorch >= 1.10): the target distribution is (1 - eps) one_hot + eps / K, so
  //   loss = (1 - eps) nll + (eps / K) smooth,  smooth_b = -sum_k w_k logp[b, k]  (0 for ignored b)
  // Mean divides smooth by the same denominator as nll: the count of labels not ignored, or the
  // sum of their class weights when weights are given.
  Tensor ignored = eq(target, scalar_tensor((double)opt.ignore_index, DType::i64));  // (B) u8
  Tensor wlogp = opt.weight.defined() ? mul(logp, opt.weight) : logp;                 // (B, K)
  Tensor smooth = masked_fill(neg(sum(wlogp, {1})), ignored, 0.0);                   // (B)
  Tensor smooth_red = smooth;
  if (opt.reduction == Reduction::Sum) {
    smooth_red = sum(smooth);
  } else if (opt.reduction == Reduction::Mean) {
    std::vector<int64_t> t = to_int_vector(target);
    std::vector<float> w = opt.weight.defined() ? to_float_vector(opt.weight) : std::vector<float>(K, 1.f);
    double denom = 0;
    for (int64_t label : t)
      if (label != opt.ignore_index) denom += w[label];
    smooth_red = div(sum(smooth), denom);
  }
  return add(mul(nll, 1.0 - eps), mul(smooth_red, eps / (double)K));
}

// ------------------------------------------------------------------ regression losses

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_not_batchmean(reduction, "mse_loss");
  check_f32(input, "mse_loss", "input");
  check_f32(target, "mse_loss", "target");
  check_same_shape(input, target, "mse_loss");
  Tensor d = sub(input, target);
  return reduce_loss(mul(d, d), reduction, "mse_loss");  // (x - y)^2
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  check_not_batchmean(reduction, "smooth_l1_loss");
  check_f32(input, "smooth_l1_loss", "input");
  check_f32(target, "smooth_l1_loss", "target");
  check_same_shape(input, target, "smooth_l1_loss");
  KD_CHECK(beta >= 0, "smooth_l1_loss: beta must be >= 0, got {}", beta);
  Tensor d = sub(input, target);
  Tensor ad = abs(d);
  if (beta == 0.0) return reduce_loss(ad, reduction, "smooth_l1_loss");  // plain L1
  // 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta
  Tensor quad = div(mul(mul(d, d), 0.5), beta);
  Tensor lin = sub(ad, 0.5 * beta);
  return reduce_loss(where(lt(ad, beta), quad, lin), reduction, "smooth_l1_loss");
}

Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction, double delta) {
  check_not_batchmean(reduction, "huber_loss");
  check_f32(input, "huber_loss", "input");
  check_f32(target, "huber_loss", "target");
  check_same_shape(input, target, "huber_loss");
  KD_CHECK(delta > 0, "huber_loss: delta must be > 0, got {}", delta);
  Tensor d = sub(input, target);
  Tensor ad = abs(d);
  // 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)
  Tensor quad = mul(mul(d, d), 0.5);
  Tensor lin = mul(sub(ad, 0.5 * delta), delta);
  return reduce_loss(where(lt(ad, delta), quad, lin), reduction, "huber_loss");
}

// ------------------------------------------------------------------ kl_div

Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction, bool log_target) {
  check_f32(input, "kl_div", "input (log-probabilities)");
  check_f32(target, "kl_div", log_target ? "target (log-probabilities)" : "target (probabilities)");
  check_same_shape(input, target, "kl_div");
  Tensor pointwise;  // (same as input)
  if (log_target) {
    // e^t (t - input)
    pointwise = mul(exp(target), sub(target, input));
  } else {
    // target (log target - input), with 0 log 0 = 0: log of a safe target that is 1 where target = 0,
    // so neither the value nor the gradient sees log 0 (PyTorch's target gradient is NaN there)
    Tensor positive = gt(target, 0.0);                              // u8
    Tensor safe_target = where(positive, target, ones({}));
    pointwise = sub(mul(target, log(safe_target)), mul(target, input));
  }
  switch (reduction) {
    case Reduction::None: return pointwise;
    case Reduction::Sum: return sum(pointwise);
    case Reduction::Mean: return mean(pointwise);  // over every element
    case Reduction::BatchMean: {                   // the sum over the batch size: the true KL per sample
      const int64_t batch = input.dim() > 0 ? input.size(0) : 1;
      return div(sum(pointwise), (double)batch);
    }
  }
  KD_CHECK(false, "kl_div: unknown reduction {}", reduction_name(reduction));
  return Tensor();
}

// ------------------------------------------------------------------ binary_cross_entropy_with_logits

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction,
                                        const Tensor& pos_weight) {
  const char* op = "binary_cross_entropy_with_logits";
  check_not_batchmean(reduction, op);
  check_f32(logits, op, "logits");
  check_f32(target, op, "target");
  check_same_shape(logits, target, op);
  if (pos_weight.defined()) {
    check_f32(pos_weight, op, "pos_weight");
    const Shape &ps = pos_weight.shape(), &ls = logits.shape();
    bool fits = ps.size() <= ls.size();  // each trailing dim equal to the logits' or 1
    for (size_t d = 0; fits && d < ps.size(); ++d) {
      const int64_t have = ps[ps.size() - 1 - d], want = ls[ls.size() - 1 - d];
      fits = have == want || have == 1;
    }
    KD_CHECK(fits, "{}: pos_weight of shape {} does not broadcast to the logits shape {}", op, shape_str(ps),
             shape_str(ls));
  }
  // With lw = 1 + (pos_weight - 1) y:  loss = (1 - y) x + lw softplus(-x),
  // softplus(-x) = log(1 + e^-x) = log1p(e^-|x|) + max(-x, 0)   (stable for any x)
  const Shape& shape = logits.shape();
  Tensor pw = pos_weight.defined() ? pos_weight : ones({});
  Tensor out = empty(shape);  // (same as logits)
  float* o = out.data<float>();
  const float *x = logits.data<float>(), *y = target.data<float>(), *p = pw.data<float>();
  detail::for_each_offset<3>(shape, {logits.strides(), target.strides(), detail::broadcast_strides(pw, shape)},
                             [&](int64_t i, const std::array<int64_t, 3>& off) {
                               const double xv = x[off[0]], yv = y[off[1]], pv = p[off[2]];
                               const double lw = 1.0 + (pv - 1.0) * yv;
                               const double sp = std::log1p(std::exp(-std::fabs(xv))) + std::max(-xv, 0.0);
                               o[i] = (float)((1.0 - yv) * xv + lw * sp);
                             });
  Tensor loss = record(out, op, {logits, target, pos_weight}, {logits, target, pos_weight},
                       [](const Node& n, const Tensor& g) {
                         const Tensor &x = n.saved[0], &y = n.saved[1], &pw = n.saved[2];
                         Tensor gx, gy, gp;
                         Tensor lw = pw.defined() ? add(mul(sub(pw, 1.0), y), 1.0) : Tensor();
                         // d/dx = (1 - y) - lw sigmoid(-x) = (1 - y) - lw (1 - sigmoid(x));  lw = 1: sigmoid(x) - y
                         if (n.inputs[0].requires_grad()) {
                           Tensor s = sigmoid(x);
                           gx = lw.defined() ? mul(g, sub(rsub(1.0, y), mul(lw, rsub(1.0, s)))) : mul(g, sub(s, y));
                         }
                         // softplus(-x) computed again with ops, for the gradients of y and pos_weight
                         auto softplus_neg_x = [&]() {
                           return add(log(add(exp(neg(abs(x))), 1.0)), relu(neg(x)));
                         };
                         // d/dy = -x + (pos_weight - 1) softplus(-x)
                         if (n.inputs[1].requires_grad()) {
                           gy = pw.defined() ? mul(g, add(neg(x), mul(sub(pw, 1.0), softplus_neg_x()))) : mul(g, neg(x));
                         }
                         // d/dpos_weight = y softplus(-x), summed over broadcast dims
                         if (pw.defined() && n.inputs[2].requires_grad())
                           gp = sum_to(mul(g, mul(y, softplus_neg_x())), pw.shape());
                         return std::vector<Tensor>{gx, gy, gp};
                       });
  return reduce_loss(loss, reduction, op);
}

}  // namespace kd
