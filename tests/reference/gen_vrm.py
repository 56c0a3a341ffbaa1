"""Golden values for VRM (distill/relation/vrm.h), following the paper's equations (Zhang, Xie, Cai,
Ma, "VRM: Knowledge Distillation via Virtual Relation Matching", ICCV 2025, arXiv 2502.20760; no
official code was available), written independently of the C++ (all-pairs tensors and masks
here, index lists there):

  vertices       Z = cat(real logits, virtual logits)                        (2B, K)
  inter-sample   E[i, j] = (Z_i - Z_j) / max(||Z_i - Z_j||, 1e-8)  for i < j, by edge type
  unreliable     H = entropy(softmax(Z_student)); the floor(ratio * P) kept pairs of largest
                 H_i + H_j (ties to the earlier pair); prune=detach: student edge detached there,
                 prune=drop: left out of the mean
  inter-class    C[k, l] = (Z_:k - Z_:l) / max(||.||, 1e-8)  for k < l       (2B-vectors)
  loss           w_ce CE(z, y) + w_vce CE(z', y) + w_is mean_edges sum_c huber(Es - Et)
                 + w_ic mean_classpairs sum_n huber(Cs - Ct)

Each case records the total and its parts and the gradients w.r.t. the student's real and
virtual logits. Run: /usr/bin/python3 tests/reference/gen_vrm.py
"""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)
cases = []


def unit_rows(D):
    return D / D.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def vrm_forward(zs, zt, vs, vt, y, ce_weight, virtual_ce_weight, is_weight, ic_weight, delta, unreliable_ratio,
                prune, real_real, virtual_virtual, real_virtual):
    B, K = zs.shape
    N = 2 * B
    Zs = torch.cat([zs, vs], 0)
    Zt = torch.cat([zt, vt], 0).detach()
    # the kept pairs, row-major over the upper triangle
    real = torch.arange(N) < B
    types = (real[:, None] & real[None, :] & real_real) | (~real[:, None] & ~real[None, :] & virtual_virtual) | \
            ((real[:, None] != real[None, :]) & real_virtual)
    upper = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)
    keep_pairs = (types & upper).reshape(-1)
    Es_all = unit_rows(Zs[:, None, :] - Zs[None, :, :]).reshape(N * N, K)
    Et_all = unit_rows(Zt[:, None, :] - Zt[None, :, :]).reshape(N * N, K)
    Es, Et = Es_all[keep_pairs], Et_all[keep_pairs]
    P = Es.shape[0]
    with torch.no_grad():
        p = F.softmax(Zs, 1)
        H = -(p * F.log_softmax(Zs, 1)).sum(1)
        joint = (H[:, None] + H[None, :]).reshape(-1)[keep_pairs]
        count = int(unreliable_ratio * P)
        order = sorted(range(P), key=lambda e: (-float(joint[e]), e))  # stable: earlier pair first on ties
        unreliable = torch.zeros(P)
        unreliable[order[:count]] = 1.0
    per_edge_fn = lambda a, b: F.huber_loss(a, b, reduction="none", delta=delta).sum(1)
    if prune == "detach":
        u = unreliable[:, None]
        Es_used = Es * (1 - u) + Es.detach() * u
        l_is = per_edge_fn(Es_used, Et).mean()
    else:
        keep = 1 - unreliable
        l_is = (per_edge_fn(Es, Et) * keep).sum() / keep.sum()
    Cs_all = unit_rows(Zs.t()[:, None, :] - Zs.t()[None, :, :])  # (K, K, N)
    Ct_all = unit_rows(Zt.t()[:, None, :] - Zt.t()[None, :, :])
    cu = torch.triu(torch.ones(K, K, dtype=torch.bool), diagonal=1)
    l_ic = per_edge_fn(Cs_all[cu], Ct_all[cu]).mean()
    ce = F.cross_entropy(zs, y) * ce_weight
    vce = F.cross_entropy(vs, y) * virtual_ce_weight
    return ce + vce + is_weight * l_is + ic_weight * l_ic, ce, vce, is_weight * l_is, ic_weight * l_ic


def vrm_case(name, B, K, scale=2.0, **kw):
    params = dict(ce_weight=1.0, virtual_ce_weight=0.0, is_weight=1.0, ic_weight=1.0, delta=1.0,
                  unreliable_ratio=0.2, prune="detach", real_real=True, virtual_virtual=True, real_virtual=True)
    params.update(kw)
    zs = torch.randn(B, K, generator=g) * scale
    zt = torch.randn(B, K, generator=g) * scale
    vs = zs + 0.5 * torch.randn(B, K, generator=g)  # a virtual view: near its real view
    vt = zt + 0.5 * torch.randn(B, K, generator=g)
    y = torch.randint(0, K, (B,), generator=g)
    cases.append(case(name, "vrm", vrm_forward, [zs, zt, vs, vt, y], params, rtol=1e-4, atol=1e-6,
                      no_grad=[1, 3]))


vrm_case("vrm_default_detach", 4, 5)
vrm_case("vrm_drop_half", 3, 4, unreliable_ratio=0.5, prune="drop")
vrm_case("vrm_no_pruning_small_delta", 3, 6, unreliable_ratio=0.0, delta=0.05)
vrm_case("vrm_real_virtual_only_weights", 4, 3, real_real=False, virtual_virtual=False, is_weight=3.0,
         ic_weight=0.5, virtual_ce_weight=0.7, ce_weight=0.3)
vrm_case("vrm_real_real_only_detach_most", 5, 4, virtual_virtual=False, real_virtual=False, unreliable_ratio=0.7,
         scale=5.0)

write("vrm.json", cases)
