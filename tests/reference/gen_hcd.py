"""Golden values for HCD (distill/feature/hcd.h): Xu, Zheng, Wang, Xu, Cheng, "Heterogeneous
Complementary Distillation", AAAI 2026 (arXiv 2511.10942), on OFA-KD's per-stage projectors.

No official HCD code was available; this is an independent PyTorch implementation of the paper's
equations with the choices docs/methods/hcd.md documents, built from torch modules:

  projector P_i  OFA-KD's (Hao840/OFAKD distillers/ofa.py, utils.py SepConv): one stride-2 SepConv
                 per halving of the stage's map down to the deepest tap's size (channels doubling,
                 the last to D), or a 1x1 conv (with bias) when the map already has that size;
                 then AdaptiveAvgPool2d(1) and Flatten -> f_s (B, D)
  CFM            Linear - ReLU - Linear (cfm=mlp) or one Linear (cfm=fc) on [f_s ; f_t] -> (B, n K)
  SDD            z_j = chunk j of the shared logits, zhat_j = z_j + lambda_t z_t;
                 (1/n) sum_j CE(zhat_j, y) and (1/n) sum_j T^2 KL(softmax(zhat_j/T) || softmax(z_s/T))
                 (sub_kd=student; sub_kd=teacher: KL(softmax(z_t/T) || softmax(zhat_j/T)))
  OL             target entry removed (zeroed), F.normalize, S = u u^T, mean over i != j of
                 relu(S - theta)^2 (ol_mask=after: F.normalize of the whole vector, then zeroed)
  total          w_ce CE(z_s, y) (label smoothing) + w_kd T^2 KL(p_t || p_s) + stage sums (or means)

The helpers run in training mode (BatchNorm on batch statistics). Each case's helper weights are
written to tests/fixtures/hcd/<case>.safetensors under the names the C++ distiller registers
("proj_f1.0.op.0.weight", "cfm_f1.0.weight", ...), BatchNorm buffers included, as the values
before the forward pass. The JSON case records the inputs (zs, zt, labels, the teacher's pooled
feature f_t, the student's stage maps), the outputs (total, ce, kd, sub_ce, sub_kd, ol), the
gradients w.r.t. zs and the stage maps, and param_grads (every helper parameter).
Run: /usr/bin/python3 tests/reference/gen_hcd.py
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_safetensors import serialize
from golden import FIXTURES, case, tensor_json, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def feat(*shape):
    """A post-ReLU stage output, kept away from 0."""
    return F.relu(rn(*shape)) + 0.1 * torch.rand(*shape, generator=g)


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


# ------------------------------------------------------------------------------ the helpers


class SepConv(nn.Module):
    """OFA-KD's SepConv (distillers/utils.py): downsamples by 2."""

    def __init__(self, channel_in, channel_out):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(channel_in, channel_in, kernel_size=3, stride=2, padding=1, groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(channel_in, channel_in, kernel_size=3, stride=1, padding=1, groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_out),
            nn.ReLU(inplace=False),
        )

    def forward(self, x):
        return self.op(x)


def halvings(H, target):
    n = 0
    while H > target:
        H = (H + 1) // 2
        n += 1
    return n


def projector(in_chans, n_half, D):
    """OFA's projector for a CNN stage, its final Linear replaced by HCD's CFM."""
    if n_half == 0:
        blocks = [nn.Conv2d(in_chans, D, 1, 1, 0)]
    else:
        blocks = []
        for i in range(n_half):
            out_chans = D if i == n_half - 1 else in_chans * 2
            blocks.append(SepConv(in_chans, out_chans))
            in_chans *= 2
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def cfm(in_features, hidden, out_features):
    if hidden == 0:
        return nn.Sequential(nn.Linear(in_features, out_features))
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class Helpers(nn.Module):
    """proj_<tap> and cfm_<tap> for every stage: the names of the C++ distiller's state dict."""

    def __init__(self, layers, s_shapes, Ct, K, k, cfm_kind, cfm_hidden, proj_dim):
        super().__init__()
        H_min = min(s[2] for s in s_shapes)
        deepest = [i for i, s in enumerate(s_shapes) if s[2] == H_min][-1]
        self.D = proj_dim if proj_dim > 0 else max(s_shapes[deepest][1], Ct)
        hidden = 0 if cfm_kind == "fc" else (cfm_hidden if cfm_hidden > 0 else Ct)
        for tap, s in zip(layers, s_shapes):
            setattr(self, "proj_" + tap, projector(s[1], halvings(s[2], H_min), self.D))
            setattr(self, "cfm_" + tap, cfm(self.D + Ct, hidden, k * K))

    def randomize(self, k, K):
        """Weights of a moderate scale; the last CFM layer's bias is one vector repeated over the n
        chunks plus a little noise, so that the sub-logits are correlated and OL is active."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("cfm_") and name.endswith("bias") and p.numel() == k * K:
                    base = rn(K, scale=1.5)
                    p.copy_(base.repeat(k) + rn(k * K, scale=0.6))
                elif ".op." in name and p.dim() == 1:  # BatchNorm inside a SepConv
                    p.copy_((1.0 + rn(*p.shape, scale=0.2)) if name.endswith("weight") else rn(*p.shape, scale=0.2) + 0.3)
                elif p.dim() == 4:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                    p.copy_(rn(*p.shape, scale=1.0 / math.sqrt(fan_in)))
                elif p.dim() == 2:
                    p.copy_(rn(*p.shape, scale=1.0 / math.sqrt(p.shape[1])))
                else:
                    p.copy_(rn(*p.shape, scale=0.1))


# ------------------------------------------------------------------------------ the loss


def sub_logit_cosines(z, y, mask):
    """S (B, n, n) of the sub-logits z (B, n, K), the target class of each sample removed."""
    keep = 1.0 - F.one_hot(y, z.shape[2]).float().unsqueeze(1)  # (B, 1, K)
    if mask == "exclude":
        u = F.normalize(z * keep, p=2, dim=2)
    else:  # "after"
        u = F.normalize(z, p=2, dim=2) * keep
    return torch.einsum("bik,bjk->bij", u, u)


def orthogonality_loss(S, theta):
    n = S.shape[1]
    if n == 1:
        return torch.zeros(())
    off = ~torch.eye(n, dtype=torch.bool)
    return (F.relu(S[:, off] - theta) ** 2).mean()


def kl_batchmean(log_p, log_q):
    """mean over rows of KL(p || q), with p = exp(log_p); gradients to both sides."""
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def hcd_total(zs, zt, y, f_t, maps, helpers, layers, k, T, ce_weight, kd_weight, sub_ce_weight, sub_kd_weight,
              ol_weight, margin, ol_mask, ol_on, sub_kd, detach_fused, fuse_weight, stage_reduce, label_smoothing):
    B, K = zs.shape
    zt = zt.detach()
    f_t = f_t.detach()
    log_ps = F.log_softmax(zs / T, dim=1)
    log_pt = F.log_softmax(zt / T, dim=1)
    sce, skd, ol = [], [], []
    for tap, F_s in zip(layers, maps):
        f_s = getattr(helpers, "proj_" + tap)(F_s)                      # (B, D)
        z = getattr(helpers, "cfm_" + tap)(torch.cat([f_s, f_t], 1))  # (B, n K)
        z_sub = z.view(B, k, K)                                         # chunk j = columns [j K, (j+1) K)
        z_hat = z_sub + fuse_weight * zt.unsqueeze(1)
        sce.append(sum(F.cross_entropy(z_hat[:, j], y) for j in range(k)) / k)
        if sub_kd == "student":
            target = z_hat.detach() if detach_fused else z_hat
            skd.append(sum(kl_batchmean(F.log_softmax(target[:, j] / T, 1), log_ps) for j in range(k)) / k * T * T)
        else:
            skd.append(sum(kl_batchmean(log_pt, F.log_softmax(z_hat[:, j] / T, 1)) for j in range(k)) / k * T * T)
        ol.append(orthogonality_loss(sub_logit_cosines(z_sub if ol_on == "sub" else z_hat, y, ol_mask), margin))
    factor = 1.0 / len(layers) if stage_reduce == "mean" else 1.0
    ce = ce_weight * F.cross_entropy(zs, y, label_smoothing=label_smoothing)
    kd = kd_weight * kl_batchmean(log_pt, log_ps) * T * T
    sub_ce = sub_ce_weight * factor * sum(sce)
    sub_kd_part = sub_kd_weight * factor * sum(skd)
    ol_part = ol_weight * factor * sum(ol)
    return ce + kd + sub_ce + sub_kd_part + ol_part, ce, kd, sub_ce, sub_kd_part, ol_part


DEFAULTS = dict(layers="f1,f2,f3", k=4, T=1.0, ce_weight=1.0, kd_weight=1.0, sub_ce_weight=1.0, sub_kd_weight=1.0,
                ol_weight=1.0, margin=0.5, ol_mask="exclude", ol_on="sub", sub_kd="student", detach_fused=False,
                fuse_weight=1.0, stage_reduce="sum", cfm="mlp", cfm_hidden=0, proj_dim=0, label_smoothing=0.0)

cases = []
HELPER_DIR = os.path.join(FIXTURES, "hcd")


def hcd_case(name, B, K, Ct, s_maps, **overrides):
    p = dict(DEFAULTS)
    p.update(overrides)
    layers = p["layers"].split(",")
    assert len(layers) == len(s_maps)
    s_shapes = [(B,) + tuple(m) for m in s_maps]
    helpers = Helpers(layers, s_shapes, Ct, K, p["k"], p["cfm"], p["cfm_hidden"], p["proj_dim"])
    helpers.randomize(p["k"], K)
    helpers.train()
    os.makedirs(HELPER_DIR, exist_ok=True)
    state = {n: t.detach().clone().contiguous() for n, t in helpers.state_dict().items()}
    with open(os.path.join(HELPER_DIR, name + ".safetensors"), "wb") as f:
        f.write(serialize(state))

    zs, zt = rn(B, K), rn(B, K, scale=2.0)
    y = labels(B, K)
    f_t = rn(B, Ct)
    maps = [feat(*s) for s in s_shapes]

    def fwd(zs, zt, y, f_t, *maps, **params):
        q = dict(params)
        q["layers"] = q["layers"].split(",")
        for key in ("cfm", "cfm_hidden", "proj_dim", "helper_weights"):  # used to build or load the helpers
            q.pop(key)
        return hcd_total(zs, zt, y, f_t, list(maps), helpers, **q)

    p["helper_weights"] = "hcd/" + name + ".safetensors"  # not a method parameter: the runner loads it
    c = case(name, "hcd", fwd, [zs, zt, y, f_t] + maps, p, rtol=2e-4, atol=2e-6, no_grad=[1, 3])
    c["param_grads"] = {n: tensor_json(t.grad) for n, t in helpers.named_parameters() if t.grad is not None}
    c["D"] = helpers.D
    cases.append(c)


# The defaults (n = 4 sub-logits, theta = 0.5, T = 1, weights 1) on three stages of a CIFAR ResNet-like
# student: 8x8, 4x4, 2x2 maps -> 2 SepConvs, 1 SepConv, a 1x1 conv; D = max(8, Ct = 6) = 8.
hcd_case("hcd_defaults_three_stages", 3, 5, 6, [(4, 8, 8), (6, 4, 4), (8, 2, 2)])
# One FC as the CFM, T = 4, stage means, OL on the fused sub-logits with theta 0.25, label smoothing.
hcd_case("hcd_fc_T4_mean_fused", 3, 4, 5, [(3, 4, 4), (5, 2, 2)], layers="f2,f3", cfm="fc", T=4.0,
         stage_reduce="mean", ol_on="fused", margin=0.25, label_smoothing=0.1, kd_weight=0.5, sub_kd_weight=2.0)
# The sub-logits distil the teacher (OFA's branch direction), OL masked after the normalisation,
# n = 2, an MLP hidden width and D given.
hcd_case("hcd_teacher_direction_after_mask", 2, 6, 4, [(3, 6, 6), (4, 3, 3)], layers="f1,f2", k=2,
         sub_kd="teacher", ol_mask="after", cfm_hidden=7, proj_dim=10, margin=0.1, ol_weight=3.0)
# The fused sub-logits as a detached KD target, lambda_t = 0.5, n = 3, one stage of a 1x1 conv.
hcd_case("hcd_detached_target_k3", 3, 5, 4, [(6, 2, 2)], layers="f3", k=3, detach_fused=True, fuse_weight=0.5,
         T=2.0, margin=0.0)

write("hcd_losses.json", cases)
