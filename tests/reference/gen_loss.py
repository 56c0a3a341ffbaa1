"""Golden values for the losses (engine/ops/loss.cpp): every reduction, label smoothing, class
weights, ignore_index, log_target and pos_weight."""
import warnings

import torch
import torch.nn.functional as F

from golden import case, write

warnings.filterwarnings("ignore", message="reduction: 'mean' divides")  # kl_div's note
g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


def probs(*shape):
    return F.softmax(rn(*shape) * 2, dim=-1)


B, K = 5, 4
W = torch.rand(K, generator=g) + 0.5

cases = []


def ce(name, logits, target, weight=None, **params):
    params.setdefault("reduction", "mean")
    params.setdefault("label_smoothing", 0.0)
    params.setdefault("ignore_index", -100)
    cases.append(case(name, "cross_entropy",
                      lambda x, t, w, **p: F.cross_entropy(x, t, weight=w, **p),
                      [logits, target, weight], params, no_grad=[2]))


for red in ("mean", "sum", "none"):
    ce(f"ce_{red}", rn(B, K), labels(B, K), reduction=red)
    ce(f"ce_smooth_{red}", rn(B, K), labels(B, K), reduction=red, label_smoothing=0.1)
    ce(f"ce_weight_{red}", rn(B, K), labels(B, K), W, reduction=red)
    ce(f"ce_weight_smooth_{red}", rn(B, K), labels(B, K), W, reduction=red, label_smoothing=0.2)
    t = labels(B, K)
    t[1] = -100
    ce(f"ce_ignore_{red}", rn(B, K), t, reduction=red)
    t = labels(B, K)
    t[0] = 2
    t[3] = 2
    ce(f"ce_ignore2_weight_smooth_{red}", rn(B, K), t, W, reduction=red, label_smoothing=0.3, ignore_index=2)
ce("ce_large_logits", rn(B, K) * 50, labels(B, K))


def nll(name, logp, target, weight=None, **params):
    params.setdefault("reduction", "mean")
    params.setdefault("ignore_index", -100)
    cases.append(case(name, "nll_loss", lambda x, t, w, **p: F.nll_loss(x, t, weight=w, **p),
                      [logp, target, weight], params, no_grad=[2]))


for red in ("mean", "sum", "none"):
    nll(f"nll_{red}", F.log_softmax(rn(B, K), 1), labels(B, K), reduction=red)
    t = labels(B, K)
    t[2] = -100
    nll(f"nll_weight_ignore_{red}", F.log_softmax(rn(B, K), 1), t, W, reduction=red)


def reg(name, op, fn, shape, params, scale=1.0):
    cases.append(case(name, op, fn, [rn(*shape) * scale, rn(*shape) * scale], params))


for red in ("mean", "sum", "none"):
    reg(f"mse_{red}", "mse_loss", lambda x, y, reduction: F.mse_loss(x, y, reduction=reduction), (3, 4), {"reduction": red})
    for beta in (1.0, 0.5, 0.0):
        reg(f"smooth_l1_beta{beta}_{red}", "smooth_l1_loss",
            lambda x, y, reduction, beta: F.smooth_l1_loss(x, y, reduction=reduction, beta=beta),
            (3, 4), {"reduction": red, "beta": beta})
    for delta in (1.0, 2.0):
        reg(f"huber_delta{delta}_{red}", "huber_loss",
            lambda x, y, reduction, delta: F.huber_loss(x, y, reduction=reduction, delta=delta),
            (3, 4), {"reduction": red, "delta": delta}, scale=2.0)


kl = lambda x, t, reduction, log_target: F.kl_div(x, t, reduction=reduction, log_target=log_target)
for red in ("none", "sum", "mean", "batchmean"):
    cases.append(case(f"kl_{red}", "kl_div", kl, [F.log_softmax(rn(3, 5), 1), probs(3, 5)],
                      {"reduction": red, "log_target": False}))
    cases.append(case(f"kl_log_target_{red}", "kl_div", kl, [F.log_softmax(rn(3, 5), 1), F.log_softmax(rn(3, 5), 1)],
                      {"reduction": red, "log_target": True}))
# zeros in the target: 0 log 0 = 0 (PyTorch's target gradient is NaN there, so it is not compared)
t = probs(3, 5)
t[0, 1] = 0.0
t[2, 4] = 0.0
cases.append(case("kl_target_zeros", "kl_div", kl, [F.log_softmax(rn(3, 5), 1), t],
                  {"reduction": "batchmean", "log_target": False}, no_grad=[1]))
cases.append(case("kl_3d_batchmean", "kl_div", kl, [F.log_softmax(rn(2, 3, 4), -1), probs(2, 3, 4)],
                  {"reduction": "batchmean", "log_target": False}))

bce = lambda x, y, pw, reduction: F.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw)
for red in ("mean", "sum", "none"):
    cases.append(case(f"bce_logits_{red}", "bce_with_logits", bce, [rn(3, 4) * 3, torch.rand(3, 4, generator=g), None],
                      {"reduction": red}))
    cases.append(case(f"bce_logits_pos_weight_{red}", "bce_with_logits", bce,
                      [rn(3, 4) * 3, torch.rand(3, 4, generator=g), torch.rand(4, generator=g) * 3 + 0.2],
                      {"reduction": red}, no_grad=[2]))  # PyTorch has no pos_weight gradient (gradcheck covers ours)
# extreme logits (the naive log(sigmoid(x)) overflows) with hard 0/1 targets
cases.append(case("bce_logits_extreme", "bce_with_logits", bce,
                  [torch.tensor([[-80.0, -20.0, 0.5, 20.0, 80.0]]), torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]]), None],
                  {"reduction": "none"}, atol=1e-5))

write("golden_loss.json", cases)
