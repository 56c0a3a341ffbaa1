"""Golden values for the relation family of distillation losses (distill/relation/): RKD, SP,
PKT, CC and the general mechanism L = sum_ij d(psi_s, psi_t), each following its OFFICIAL code:

  RKD   mdistiller/distillers/RKD.py (rkd_loss, _pdist) = RepDistiller distiller_zoo/RKD.py
        CE + 25 L_distance + 50 L_angle on pooled features
  SP    mdistiller/distillers/SP.py (similarity_loss) = RepDistiller distiller_zoo/SP.py
        CE + 3000 ||normalize(Gs) - normalize(Gt)||_F^2 / B^2 on the last stage
  PKT   mdistiller/distillers/PKT.py = RepDistiller distiller_zoo/PKT.py (cosine_similarity_loss)
        CE + 30000 mean KL of the cosine-kernel probabilities on pooled features
  CC    RepDistiller distiller_zoo/CC.py (Correlation) + models/util.py (LinearEmbed) +
        train_student.py (--distill correlation): CE + 0.02 mean_b sum_d |delta_b| |delta_{b+1}|,
        delta = embed_s(f_s) - embed_t(f_t), both embeddings trained (param_grads recorded)
  CC paper form, and the general mechanism ("relation"): no official code; written here from the
        definitions in distill/relation/relation.h (the Taylor-expanded RBF kernel, the d's).

Each case records the total loss and its parts and the gradients of the total w.r.t. the
student logits and features (the teacher's features are constants).
Run: /usr/bin/python3 tests/reference/gen_relation.py
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import case, tensor_json, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def pos(*shape):
    """Post-ReLU-like features kept away from 0."""
    return F.relu(rn(*shape)) + 0.1 + 0.1 * torch.rand(*shape, generator=g)


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


cases = []

# ------------------------------------------------------------------------- RKD (mdistiller)


def _pdist(e, squared, eps):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps)
    if not squared:
        res = res.sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd_terms(f_s, f_t, squared=False, eps=1e-12):
    stu = f_s.view(f_s.shape[0], -1)
    tea = f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        t_d = _pdist(tea, squared, eps)
        mean_td = t_d[t_d > 0].mean()
        t_d = t_d / mean_td
    d = _pdist(stu, squared, eps)
    mean_d = d[d > 0].mean()
    d = d / mean_d
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = tea.unsqueeze(0) - tea.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = stu.unsqueeze(0) - stu.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return loss_d, loss_a


def rkd_forward(zs, fs, ft, y, ce_weight, distance_weight, angle_weight, squared, tap):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    loss_d, loss_a = rkd_terms(fs, ft.detach(), squared)
    d_part = distance_weight * loss_d
    a_part = angle_weight * loss_a
    return loss_ce + d_part + a_part, loss_ce, d_part, a_part


def rkd_case(name, B, K, s_shape, t_shape, ce_weight=1.0, distance_weight=25.0, angle_weight=50.0, squared=False,
             tap="pooled", scale=1.0):
    params = {"ce_weight": ce_weight, "distance_weight": distance_weight, "angle_weight": angle_weight,
              "squared": squared, "tap": tap}
    inputs = [rn(B, K), rn(B, *s_shape, scale=scale), rn(B, *t_shape, scale=2.0), labels(B, K)]
    cases.append(case(name, "rkd", rkd_forward, inputs, params, rtol=1e-4, atol=1e-5, no_grad=[2]))


rkd_case("rkd_default_pooled", 5, 4, (6,), (8,))
rkd_case("rkd_squared_other_weights", 4, 3, (5,), (3,), ce_weight=0.5, distance_weight=2.0, angle_weight=3.0,
         squared=True)
rkd_case("rkd_4d_tap_flattened", 4, 5, (3, 2, 2), (2, 2, 2), tap="f3")
rkd_case("rkd_large_features_linear_smooth_l1", 6, 4, (7,), (5,), scale=5.0)

# ------------------------------------------------------------------------- SP (mdistiller)


def similarity_loss(f_s, f_t):
    bsz = f_s.shape[0]
    f_s = f_s.view(bsz, -1)
    f_t = f_t.view(bsz, -1)
    G_s = torch.mm(f_s, torch.t(f_s))
    G_s = torch.nn.functional.normalize(G_s)
    G_t = torch.mm(f_t, torch.t(f_t))
    G_t = torch.nn.functional.normalize(G_t)
    G_diff = G_t - G_s
    loss = (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)
    return loss


def sp_forward(zs, fs, ft, y, ce_weight, feat_weight):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    loss_sp = feat_weight * similarity_loss(fs, ft.detach()).reshape(())
    return loss_ce + loss_sp, loss_ce, loss_sp


def sp_case(name, B, K, s_shape, t_shape, ce_weight=1.0, feat_weight=3000.0, signed=False):
    params = {"ce_weight": ce_weight, "feat_weight": feat_weight}
    mk = rn if signed else pos
    inputs = [rn(B, K), mk(B, *s_shape), mk(B, *t_shape), labels(B, K)]
    cases.append(case(name, "sp", sp_forward, inputs, params, rtol=1e-4, atol=1e-5, no_grad=[2]))


sp_case("sp_default_f3", 4, 5, (3, 4, 4), (6, 2, 2))
sp_case("sp_signed_maps_weight10", 5, 3, (2, 3, 3), (2, 3, 3), ce_weight=0.5, feat_weight=10.0, signed=True)

# ------------------------------------------------------------------------- PKT (mdistiller)


def cosine_similarity_loss(output_net, target_net, eps=0.0000001):
    output_net_norm = torch.sqrt(torch.sum(output_net ** 2, dim=1, keepdim=True))
    output_net = output_net / (output_net_norm + eps)
    output_net[output_net != output_net] = 0
    target_net_norm = torch.sqrt(torch.sum(target_net ** 2, dim=1, keepdim=True))
    target_net = target_net / (target_net_norm + eps)
    target_net[target_net != target_net] = 0
    model_similarity = torch.mm(output_net, output_net.transpose(0, 1))
    target_similarity = torch.mm(target_net, target_net.transpose(0, 1))
    model_similarity = (model_similarity + 1.0) / 2.0
    target_similarity = (target_similarity + 1.0) / 2.0
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)
    loss = torch.mean(target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps)))
    return loss


def pkt_forward(zs, fs, ft, y, ce_weight, feat_weight, eps):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    loss_pkt = feat_weight * cosine_similarity_loss(fs, ft.detach(), eps)
    return loss_ce + loss_pkt, loss_ce, loss_pkt


def pkt_case(name, B, K, ds, dt, ce_weight=1.0, feat_weight=30000.0, eps=1e-7):
    params = {"ce_weight": ce_weight, "feat_weight": feat_weight, "eps": eps}
    inputs = [rn(B, K), rn(B, ds), rn(B, dt), labels(B, K)]
    cases.append(case(name, "pkt", pkt_forward, inputs, params, rtol=1e-4, atol=1e-5, no_grad=[2]))


pkt_case("pkt_default_pooled", 5, 4, 6, 9)
pkt_case("pkt_weight100_eps1e-3", 4, 3, 3, 3, ce_weight=0.5, feat_weight=100.0, eps=1e-3)

# ------------------------------------------------------------------------- CC (RepDistiller)


class LinearEmbed(nn.Module):
    """RepDistiller models/util.py LinearEmbed."""

    def __init__(self, dim_in=1024, dim_out=128):
        super(LinearEmbed, self).__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        x = self.linear(x)
        return x


def correlation(f_s, f_t):
    """RepDistiller distiller_zoo/CC.py Correlation.forward."""
    delta = torch.abs(f_s - f_t)
    loss = torch.mean((delta[:-1] * delta[1:]).sum(1))
    return loss


_embeds = []


def make_embed(w, b):
    e = LinearEmbed(w.shape[1], w.shape[0])
    with torch.no_grad():
        e.linear.weight.copy_(w)
        e.linear.bias.copy_(b)
    return e


def cc_forward(zs, fs, ft, y, ws, bs, wt, bt, ce_weight, feat_weight, feat_dim, form, tap):
    embed_s, embed_t = make_embed(ws, bs), make_embed(wt, bt)
    _embeds.clear()
    _embeds.extend([("embed_s", embed_s), ("embed_t", embed_t)])
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    f_s = embed_s(fs)
    f_t = embed_t(ft.detach())  # the teacher's feature is a constant, its embedding is trained
    loss_cc = feat_weight * correlation(f_s, f_t)
    return loss_ce + loss_cc, loss_ce, loss_cc


def cc_case(name, B, K, s_shape, t_shape, feat_dim, ce_weight=1.0, feat_weight=0.02, tap="pooled"):
    params = {"ce_weight": ce_weight, "feat_weight": feat_weight, "feat_dim": feat_dim, "form": "code", "tap": tap}
    fs, ft = rn(B, *s_shape), rn(B, *t_shape, scale=2.0)
    ds, dt = fs[0].numel(), ft[0].numel()
    bound_s, bound_t = 1 / math.sqrt(ds), 1 / math.sqrt(dt)
    ws = (torch.rand(feat_dim, ds, generator=g) * 2 - 1) * bound_s
    bs = (torch.rand(feat_dim, generator=g) * 2 - 1) * bound_s
    wt = (torch.rand(feat_dim, dt, generator=g) * 2 - 1) * bound_t
    bt = (torch.rand(feat_dim, generator=g) * 2 - 1) * bound_t
    inputs = [rn(B, K), fs, ft, labels(B, K), ws, bs, wt, bt]
    c = case(name, "cc", cc_forward, inputs, params, rtol=1e-4, atol=1e-6, no_grad=[2, 4, 5, 6, 7])
    c["param_grads"] = {}
    for prefix, e in _embeds:
        c["param_grads"][prefix + ".weight"] = tensor_json(e.linear.weight.grad)
        c["param_grads"][prefix + ".bias"] = tensor_json(e.linear.bias.grad)
    cases.append(c)


cc_case("cc_code_default", 5, 4, (6,), (8,), feat_dim=4)
cc_case("cc_code_weight1_4d_tap", 4, 3, (2, 2, 2), (3, 2, 2), feat_dim=3, feat_weight=1.0, ce_weight=0.5, tap="f3")

# ------------------------------------------------------------------------- the general mechanism


def psi_distance(e, squared):
    d = _pdist(e, squared, 1e-12)
    return d / d[d > 0].mean()


def psi_angle(e):
    sd = e.unsqueeze(0) - e.unsqueeze(1)
    n = F.normalize(sd, p=2, dim=2)
    return torch.bmm(n, n.transpose(1, 2))


def psi_gram(e):
    return F.normalize(e @ e.t())


def psi_prob(e, eps):
    x = e / (e.pow(2).sum(1, keepdim=True).sqrt() + eps)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


def psi_corr(e, gamma, order):
    x = F.normalize(e)
    c = x @ x.t()
    k = torch.zeros_like(c)
    for p in range(order + 1):
        k = k + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * c.pow(p)
    return k


def psi(e, o):
    e = e.reshape(e.shape[0], -1)
    return {"distance": lambda: psi_distance(e, o.get("squared", False)), "angle": lambda: psi_angle(e),
            "gram": lambda: psi_gram(e), "prob": lambda: psi_prob(e, o.get("eps", 1e-7)),
            "corr": lambda: psi_corr(e, o.get("gamma", 0.4), o.get("order", 2))}[o["psi"]]()


def d_entries(a, b, o):
    beta = o.get("beta", 1.0)
    if o["d"] == "smooth_l1":
        return F.smooth_l1_loss(a, b, reduction="none", beta=beta)
    if o["d"] == "huber":
        return F.huber_loss(a, b, reduction="none", delta=beta)
    if o["d"] in ("mse", "frobenius"):
        return (a - b).pow(2)
    eps = o.get("eps", 1e-7)
    return b * torch.log((b + eps) / (a + eps))


def relation_forward(zs, fs, ft, y, **o):
    loss_ce = o.get("ce_weight", 1.0) * F.cross_entropy(zs, y)
    with torch.no_grad():
        psi_t = psi(ft, o)
    psi_s = psi(fs, o)
    entries = d_entries(psi_s, psi_t, o)
    r = o.get("reduction", "sum" if o["d"] == "frobenius" else "mean")
    l = {"mean": entries.mean(), "sum": entries.sum(), "batchmean": entries.sum() / fs.shape[0]}[r]
    part = o.get("weight", 1.0) * l
    return loss_ce + part, loss_ce, part


def relation_case(name, B, K, ds, dt, **o):
    inputs = [rn(B, K), rn(B, ds), rn(B, dt, scale=1.5), labels(B, K)]
    cases.append(case(name, "relation", relation_forward, inputs, o, rtol=1e-4, atol=1e-5, no_grad=[2]))


relation_case("relation_distance_huber_sum", 5, 3, 4, 6, psi="distance", d="huber", beta=0.5, reduction="sum")
relation_case("relation_distance_squared", 4, 3, 5, 5, psi="distance", d="smooth_l1", squared=True, weight=3.0)
relation_case("relation_angle_mse_batchmean", 4, 4, 3, 5, psi="angle", d="mse", reduction="batchmean", weight=2.0)
relation_case("relation_gram_smooth_l1_beta0.1", 5, 3, 6, 4, psi="gram", d="smooth_l1", beta=0.1, weight=10.0)
relation_case("relation_gram_frobenius_sum", 4, 3, 3, 7, psi="gram", d="frobenius", ce_weight=0.0)
relation_case("relation_prob_kl", 5, 4, 4, 4, psi="prob", d="kl", eps=1e-7, weight=100.0)
relation_case("relation_corr_mse_order3", 5, 3, 4, 6, psi="corr", d="mse", gamma=0.5, order=3, weight=50.0)
relation_case("relation_corr_smooth_l1_default", 4, 3, 6, 4, psi="corr", d="smooth_l1", weight=20.0)

# the CC paper form (no official code: the definition in distill/relation/cc.h)


def cc_paper_forward(zs, fs, ft, y, ce_weight, feat_weight, gamma, order, form):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    with torch.no_grad():
        c_t = psi_corr(ft.reshape(ft.shape[0], -1), gamma, order)
    c_s = psi_corr(fs.reshape(fs.shape[0], -1), gamma, order)
    loss_cc = feat_weight * (c_t - c_s).pow(2).sum() / (fs.shape[0] ** 2)
    return loss_ce + loss_cc, loss_ce, loss_cc


inputs = [rn(5, 4), rn(5, 6), rn(5, 3), labels(5, 4)]
cases.append(case("cc_paper_form", "cc", cc_paper_forward, inputs,
                  {"ce_weight": 1.0, "feat_weight": 10.0, "gamma": 0.4, "order": 2, "form": "paper"}, rtol=1e-4,
                  atol=1e-6, no_grad=[2]))

write("relation_losses.json", cases)
