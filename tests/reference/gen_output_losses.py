"""Golden values for the output (logit) family of distillation losses (distill/output/):
KD, DKD, DGKD, WKD-L and WKD's cost matrices, each following its OFFICIAL code:

  KD    mdistiller/distillers/KD.py           kd_loss + KD.forward_train
  DKD   mdistiller/distillers/DKD.py          dkd_loss + DKD.forward_train (warm-up)
  DGKD  wonchulSon/DGKD train.py              (1 - lambda) CE + lambda T^2 sum(KD list), with the
                                              true batch-mean KL (the released nn.KLDivLoss()
                                              'mean' divides by K, a known bug) and an explicit
                                              w_ce; the kept guides are given (the drop is random)
  WKD-L JiamingLv/WKD mdistiller/distillers/WKD.py   sinkhorn, wkd_logit_loss,
                                              wkd_logit_loss_with_speration, the sharpening in
                                              WKD.__init__ and the cosine decay in forward_train
  cost  JiamingLv/WKD tools/generate_cost_matrix.py  linear_CKA_precenter; WKD.py "fc" (cosine)

Each case records the total loss and its parts, and the gradient of the total w.r.t. the
student logits. Run: /usr/bin/python3 tests/reference/gen_output_losses.py
"""
import math

import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


cases = []

# ----------------------------------------------------------------------------------- KD (mdistiller)


def kd_loss_official(logits_student, logits_teacher, temperature):
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def kd_forward(zs, zt, y, T, ce_weight, kd_weight):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    loss_kd = kd_weight * kd_loss_official(zs, zt.detach(), T)
    return loss_ce + loss_kd, loss_ce, loss_kd


def kd_case(name, B, K, T, ce_weight=0.1, kd_weight=0.9, scale=1.0):
    params = {"T": T, "ce_weight": ce_weight, "kd_weight": kd_weight}
    cases.append(case(name, "kd", kd_forward, [rn(B, K, scale=scale), rn(B, K, scale=scale * 1.5), labels(B, K)],
                      params, rtol=1e-4, atol=1e-5, no_grad=[1]))


kd_case("kd_default_B4_K5", 4, 5, 4.0)
kd_case("kd_T1_B3_K10", 3, 10, 1.0)
kd_case("kd_T8_weights1_B6_K7", 6, 7, 8.0, 1.0, 1.0)
kd_case("kd_T2_B2_K3_large", 2, 3, 2.0, scale=6.0)
kd_case("kd_B1_K4", 1, 4, 4.0, 0.0, 1.0)

# ----------------------------------------------------------------------------------- DKD (mdistiller)


def _get_gt_mask(logits, target):
    target = target.reshape(-1)
    return torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()


def _get_other_mask(logits, target):
    target = target.reshape(-1)
    return torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    return torch.cat([t1, t2], dim=1)


def dkd_terms_official(logits_student, logits_teacher, target, temperature):
    """dkd_loss of DKD.py, returning TCKD and NCKD before alpha / beta."""
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (temperature**2) / target.shape[0]
    return tckd_loss, nckd_loss


def dkd_forward(zs, zt, y, alpha, beta, T, warmup, ce_weight, epoch):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    tckd, nckd = dkd_terms_official(zs, zt.detach(), y, T)
    warm = min(epoch / warmup, 1.0)  # DKD.forward_train: min(kwargs["epoch"] / self.warmup, 1.0)
    tckd_part = warm * alpha * tckd
    nckd_part = warm * beta * nckd
    return loss_ce + tckd_part + nckd_part, loss_ce, tckd_part, nckd_part


def dkd_case(name, B, K, alpha=1.0, beta=8.0, T=4.0, warmup=20, ce_weight=1.0, epoch=20, scale=1.0):
    params = {"alpha": alpha, "beta": beta, "T": T, "warmup": warmup, "ce_weight": ce_weight, "epoch": epoch}
    cases.append(case(name, "dkd", dkd_forward, [rn(B, K, scale=scale), rn(B, K, scale=scale * 1.5), labels(B, K)],
                      params, rtol=1e-4, atol=1e-5, no_grad=[1]))


dkd_case("dkd_default_B4_K5", 4, 5)
dkd_case("dkd_warmup_epoch5_B3_K6", 3, 6, epoch=5)
dkd_case("dkd_beta2_T2_B5_K10", 5, 10, beta=2.0, T=2.0, epoch=240)
dkd_case("dkd_alpha0.5_beta6_T1_B2_K3", 2, 3, alpha=0.5, beta=6.0, T=1.0, epoch=1, warmup=1)
dkd_case("dkd_B1_K4_large", 1, 4, scale=4.0, epoch=30)
dkd_case("dkd_ce0.5_warmup7_epoch3_B6_K8", 6, 8, ce_weight=0.5, warmup=7, epoch=3)

# ----------------------------------------------------------------------------------- DGKD (wonchulSon/DGKD)


def dgkd_forward(zs, y, *guides, T, lam, ce_weight, kept):
    loss_sl = F.cross_entropy(zs, y)
    log_ps = F.log_softmax(zs / T, dim=1)
    parts = [ce_weight * loss_sl]
    total = ce_weight * loss_sl
    for gl, k in zip(guides, kept):
        # the official nn.KLDivLoss()(log_softmax(s/T), softmax(g/T)), with the true batch mean
        l_g = F.kl_div(log_ps, F.softmax(gl.detach() / T, dim=1), reduction="batchmean")
        part = lam * T * T * l_g if k else torch.zeros(())
        parts.append(part)
        if k:
            total = total + part
    return (total, *parts)


def dgkd_case(name, B, K, n_assistants, kept, T=5.0, lam=1.0, ce_weight=0.0):
    params = {"T": T, "lam": lam, "ce_weight": ce_weight, "kept": kept}
    guides = [rn(B, K, scale=2.0) for _ in range(1 + n_assistants)]
    cases.append(case(name, "dgkd", dgkd_forward, [rn(B, K), labels(B, K)] + guides, params, rtol=1e-4, atol=1e-5,
                      no_grad=list(range(2, 3 + n_assistants))))


dgkd_case("dgkd_all_kept_B4_K5_2ta", 4, 5, 2, [1, 1, 1])
dgkd_case("dgkd_teacher_dropped_B3_K6_2ta", 3, 6, 2, [0, 1, 1])
dgkd_case("dgkd_ta1_dropped_lam0.7_T4_B5_K7_3ta", 5, 7, 3, [1, 0, 1, 1], T=4.0, lam=0.7, ce_weight=0.3)
dgkd_case("dgkd_teacher_only_ce1_B2_K4", 2, 4, 0, [1], T=2.0, lam=0.5, ce_weight=1.0)

# ----------------------------------------------------------------------------------- WKD-L (JiamingLv/WKD)


def sinkhorn(w1, w2, cost, reg=0.05, max_iter=10):
    bs, dim = w1.shape
    w1 = w1.unsqueeze(-1)
    w2 = w2.unsqueeze(-1)
    u = 1 / dim * torch.ones_like(w1, device=w1.device, dtype=w1.dtype)  # [batch,N,1]
    K = torch.exp(-cost / reg)
    Kt = K.transpose(2, 1)
    for i in range(max_iter):
        v = w2 / (torch.bmm(Kt, u) + 1e-8)  # [batch,N,1]
        u = w1 / (torch.bmm(K, v) + 1e-8)  # [batch,N,1]
    flow = u.reshape(bs, -1, 1) * K * v.reshape(bs, 1, -1)
    return flow


def wkd_logit_loss(logits_student, logits_teacher, temperature, cost_matrix, sinkhorn_lambda, sinkhorn_iter):
    pred_student = F.softmax(logits_student / temperature, dim=-1).to(torch.float32)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=-1).to(torch.float32)
    cost_matrix = F.relu(cost_matrix) + 1e-8
    flow = sinkhorn(pred_student, pred_teacher, cost_matrix, reg=sinkhorn_lambda, max_iter=sinkhorn_iter)
    ws_distance = (flow * cost_matrix).sum(-1).sum(-1)
    return ws_distance.mean()


def wkd_logit_loss_with_separation(logits_student, logits_teacher, gt_label, temperature, cost_matrix,
                                   sinkhorn_lambda, sinkhorn_iter):
    """wkd_logit_loss_with_speration, returning (loss_t, loss_wkd) instead of loss_t + gamma * loss_wkd."""
    label = gt_label.view(len(gt_label), 1)
    N, c = logits_student.shape
    s_i = F.log_softmax(logits_student, dim=1)
    t_i = F.softmax(logits_teacher, dim=1)
    s_t = torch.gather(s_i, 1, label)
    t_t = torch.gather(t_i, 1, label).detach()
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(logits_student).scatter_(1, label, 0).bool()
    logits_student = logits_student[mask].reshape(N, -1)
    logits_teacher = logits_teacher[mask].reshape(N, -1)
    cost_matrix = cost_matrix.repeat(N, 1, 1)
    gd_mask = mask.unsqueeze(1) * mask.unsqueeze(2)
    cost_matrix = cost_matrix[gd_mask].reshape(N, c - 1, c - 1)
    loss_wkd = wkd_logit_loss(logits_student, logits_teacher, temperature, cost_matrix, sinkhorn_lambda, sinkhorn_iter)
    return loss_t, loss_wkd


def wkd_forward(zs, zt, y, D, tau, gamma, eps, iters, kappa, decay_epoch, ce_weight, epoch, total_epochs):
    dist = D
    if kappa != 0:  # WKD.__init__: COST_MATRIX_SHARPEN
        dist = 1 - torch.exp(-kappa * dist)
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    if epoch > decay_epoch:  # WKD.forward_train: cosine decay
        gamma_e = 0.5 * gamma * (1 + math.cos((epoch - decay_epoch) / (total_epochs - decay_epoch) * math.pi))
    else:
        gamma_e = gamma
    loss_t, loss_wkd = wkd_logit_loss_with_separation(zs, zt.detach(), y, tau, dist, eps, iters)
    wd_part = gamma_e * loss_wkd
    return loss_ce + loss_t + wd_part, loss_ce, loss_t, wd_part


def cosine_cost(K, C=6):
    w = F.normalize(rn(K, C), p=2, dim=-1)
    return (1 - w @ w.t()).contiguous()


def wkd_case(name, B, K, tau=8.0, gamma=600.0, eps=0.05, iters=10, kappa=1.0, decay_epoch=150, ce_weight=1.0,
             epoch=1, total_epochs=240, D=None, scale=1.0):
    params = {"tau": tau, "gamma": gamma, "eps": eps, "iters": iters, "kappa": kappa, "decay_epoch": decay_epoch,
              "ce_weight": ce_weight, "epoch": epoch, "total_epochs": total_epochs}
    D = cosine_cost(K) if D is None else D
    cases.append(case(name, "wkd_l", wkd_forward, [rn(B, K, scale=scale), rn(B, K, scale=scale * 1.5), labels(B, K), D],
                      params, rtol=2e-4, atol=2e-5, no_grad=[1, 3]))


wkd_case("wkd_default_B4_K5", 4, 5)
wkd_case("wkd_tau4_gamma50_B3_K7", 3, 7, tau=4.0, gamma=50.0, scale=3.0)
wkd_case("wkd_decay_epoch200_B2_K6", 2, 6, epoch=200)
wkd_case("wkd_iters3_eps0.1_B5_K4", 5, 4, iters=3, eps=0.1, gamma=10.0)
wkd_case("wkd_iters50_kappa2_B3_K5", 3, 5, iters=50, kappa=2.0, gamma=100.0)
wkd_case("wkd_no_sharpen_tau1_B2_K3", 2, 3, kappa=0.0, tau=1.0, gamma=5.0, ce_weight=0.5)
Dneg = cosine_cost(6) - 0.3  # some entries negative: relu(M) + 1e-8 matters
Dneg.fill_diagonal_(0.0)
wkd_case("wkd_negative_costs_kappa0_B3_K6", 3, 6, kappa=0.0, gamma=20.0, D=Dneg)

# ----------------------------------------------------------------------------------- cost matrices (WKD tools)


def linear_CKA_precenter(X, Y):
    X = X - X.mean(0, keepdim=True)
    Y = Y - Y.mean(0, keepdim=True)
    YTX = torch.mm(Y.transpose(0, 1), X)
    hsic = torch.norm(YTX, p="fro") ** 2
    XTX = torch.mm(X.transpose(0, 1), X)
    var1 = torch.norm(XTX, p="fro")
    YTY = torch.mm(Y.transpose(0, 1), Y)
    var2 = torch.norm(YTY, p="fro")
    return hsic / (var1 * var2)


def cka_cost(class_feat):
    class_feat = class_feat.double()  # the reference in double; the C++ accumulates in double
    num_class = class_feat.shape[0]
    dist = torch.zeros(num_class, num_class, dtype=torch.float64)
    for i in range(num_class):
        for j in range(i, num_class):
            dist[i, j] = 1 - linear_CKA_precenter(class_feat[i], class_feat[j])
            dist[j, i] = dist[i, j]
    dist.fill_diagonal_(0.0)  # 1 - CKA(X, X) = 0 up to rounding
    return dist.float()


def fc_cost(weight):
    proto_normed = F.normalize(weight, p=2, dim=-1)
    return 1 - proto_normed.matmul(proto_normed.transpose(-1, -2))


for name, (K, n, d) in {"cka_gram_K4_n5_d8": (4, 5, 8), "cka_cross_K3_n12_d4": (3, 12, 4),
                        "cka_K5_n6_d6": (5, 6, 6)}.items():
    shared = rn(1, n, d)  # classes share some structure, so the distances differ
    feats = shared + rn(K, n, d, scale=0.8)
    cases.append(case(name, "cost_cka", cka_cost, [feats], {}, rtol=1e-4, atol=2e-5, grad=False))
cases.append(case("cost_cosine_K5_C7", "cost_cosine", fc_cost, [rn(5, 7)], {}, rtol=1e-5, atol=2e-6, grad=False))

write("golden_output_losses.json", cases)
