"""Golden values for LONDON (distill/relation/london.h), following its OFFICIAL code:

  42Shawn/LONDON (released as LONDON.zip in the repository's history, commit 72265a1),
  CIFAR-100/distiller_london.py and train_with_distillation_b.py:

    connectors   Conv2d(Cs, Ct, 1x1, bias=False) + BatchNorm2d(Ct), training mode
    OFD term     distillation_loss(s, t, margin) = sum((s - max(t, m))^2 * [(s > max(t, m)) | (t > 0)])
                 per layer i of n, weighted 1 / 2^(n - i - 1); total * base_weight / B
                 (train_with_distillation_b.py: loss_distill.sum() / batch_size / 1000)
    matrix       transmitting_matrix(a, b): the larger map average-pooled to the smaller's size,
                 G = a_flat b_flat^T / HW  (B, Ca, Cb)
    proxy        top_eigenvalue(G G^T): 10 power iterations from v0 (torch.rand), value
                 sqrt(||K v_{k-1}|| / ||v_k||) = the spectral norm of G
    LONDON term  sum over pairs i of mse(proxy_s, proxy_t) / 2^(n - i - 1), times london_weight
                 (train_with_distillation_b.py: alpha * loss_spectral / 200, alpha = 0.2)
    pair inputs  the official loop connects s_feats[i] before the pair (i, i+1) is formed and
                 s_feats[i+1] only at the next iteration: the student's pair is
                 (connector_i(f_i), raw f_{i+1}); connect_both=true connects both ends
    gradient     the official top_eigenvalue runs under torch.no_grad(), so its LONDON term has no
                 gradient; power_grad=true (our default, as METHODS.md asks) differentiates
                 through the unrolled loop; power_grad=false reproduces the released code

The random start vectors v0 (torch.rand) are given as inputs. base=at: mdistiller's AT on the raw
student taps; base=mse: a FitNets hint MSE(connector(f_s), f_t) per layer; base=none.
Also: "london_proxy" (the proxy alone, with its gradient w.r.t. G) and "ofd_margin" (the OFD
margin E[x | x < 0] of N(m, s^2): get_margin_from_BN with m, s given).
Run: /usr/bin/python3 tests/reference/gen_london.py
"""
import math

import torch
import torch.nn.functional as F

from golden import case, tensor_json, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


cases = []


def transmitting_matrix(fm1, fm2):
    """distiller_london.py transmitting_matrix, pooling whichever map is larger."""
    if fm1.size(2) > fm2.size(2):
        fm1 = F.adaptive_avg_pool2d(fm1, (fm2.size(2), fm2.size(3)))
    elif fm2.size(2) > fm1.size(2):
        fm2 = F.adaptive_avg_pool2d(fm2, (fm1.size(2), fm1.size(3)))
    fm1 = fm1.view(fm1.size(0), fm1.size(1), -1)
    fm2 = fm2.view(fm2.size(0), fm2.size(1), -1).transpose(1, 2)
    return torch.bmm(fm1, fm2) / fm1.size(2)


def top_eigenvalue(K, v0, n_power_iterations=10, grad=True):
    """distiller_london.py top_eigenvalue with the start v0 given; grad=False: the released no_grad."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        v = v0
        for _ in range(n_power_iterations):
            m = torch.bmm(K, v)
            n = torch.norm(m, dim=1).unsqueeze(1)
            v = m / n
        return torch.sqrt(n / torch.norm(v, dim=1).unsqueeze(1))  # (B, 1, 1)


def distillation_loss(source, target, margin):
    """OFD's loss, as copied into distiller_london.py."""
    target = torch.max(target, margin)
    loss = torch.nn.functional.mse_loss(source, target, reduction="none")
    loss = loss * ((source > target) | (target > 0)).float()
    return loss.sum()


def at_map(f, p=2.0):
    return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))


def at_stage(fs, ft, p=2.0):
    sH, tH = fs.shape[2], ft.shape[2]
    if sH > tH:
        fs = F.adaptive_avg_pool2d(fs, (tH, tH))
    elif sH < tH:
        ft = F.adaptive_avg_pool2d(ft, (sH, sH))
    return (at_map(fs, p) - at_map(ft, p)).pow(2).mean()


def london_forward(zs, y, *rest, n, base, base_weight, london_weight, ce_weight, power_iters, power_grad,
                   pair_decay, connect_both, layers):
    fs = list(rest[0:n])
    ft = [t.detach() for t in rest[n:2 * n]]
    conv_w = rest[2 * n:3 * n]
    bn_w = rest[3 * n:4 * n]
    bn_b = rest[4 * n:5 * n]
    margins = rest[5 * n:6 * n]
    v0_s = rest[6 * n:7 * n - 1]
    v0_t = rest[7 * n - 1:8 * n - 2]
    B = zs.shape[0]
    connected = [F.batch_norm(F.conv2d(fs[i], conv_w[i]), None, None, bn_w[i], bn_b[i], training=True, eps=1e-5)
                 for i in range(n)]
    loss_ce = F.cross_entropy(zs, y)
    base_sum = 0
    for i in range(n):
        w_i = 1.0 / pair_decay ** (n - i - 1)
        if base == "ofd":
            base_sum = base_sum + distillation_loss(connected[i], ft[i], margins[i].view(1, -1, 1, 1)) * w_i
        elif base == "at":
            base_sum = base_sum + at_stage(fs[i], ft[i])
        elif base == "mse":
            base_sum = base_sum + F.mse_loss(connected[i], ft[i])
    if base == "ofd":
        base_part = base_weight * base_sum / B
    elif base == "none":
        base_part = torch.zeros(())
    else:
        base_part = base_weight * base_sum
    london_sum = 0
    for i in range(n - 1):
        nxt = connected[i + 1] if connect_both else fs[i + 1]
        G_s = transmitting_matrix(connected[i], nxt)
        G_t = transmitting_matrix(ft[i], ft[i + 1])
        K_s = torch.bmm(G_s, G_s.transpose(2, 1))
        K_t = torch.bmm(G_t, G_t.transpose(2, 1))
        sigma_s = top_eigenvalue(K_s, v0_s[i], power_iters, power_grad)
        sigma_t = top_eigenvalue(K_t, v0_t[i], power_iters, False)
        london_sum = london_sum + F.mse_loss(sigma_s, sigma_t) / pair_decay ** (n - i - 1)
    london_part = london_weight * london_sum
    ce_part = ce_weight * loss_ce
    return ce_part + base_part + london_part, ce_part, base_part, london_part


def london_case(name, B, K, s_shapes, t_shapes, base="ofd", base_weight=None, london_weight=0.001, ce_weight=1.0,
                power_iters=10, power_grad=True, pair_decay=2.0, connect_both=False, margin_shift=0.0):
    n = len(s_shapes)
    if base_weight is None:
        base_weight = {"ofd": 1e-3, "at": 1000.0, "mse": 100.0, "none": 0.0}[base]
    layers = ",".join("pre%d" % (i + 1) for i in range(n))
    params = {"base": base, "base_weight": base_weight, "london_weight": london_weight, "ce_weight": ce_weight,
              "power_iters": power_iters, "power_grad": power_grad, "pair_decay": pair_decay,
              "connect_both": connect_both, "layers": layers, "n": n}
    fs = [rn(B, *s) for s in s_shapes]           # pre-ReLU maps: either sign
    ft = [rn(B, *t) + 0.3 for t in t_shapes]
    conv_w = [rn(t[0], s[0], 1, 1, scale=math.sqrt(2.0 / t[0])) for s, t in zip(s_shapes, t_shapes)]
    bn_w = [1.0 + 0.1 * rn(t[0]) for t in t_shapes]
    bn_b = [0.1 * rn(t[0]) for t in t_shapes]
    margins = [-0.5 - torch.rand(t[0], generator=g) + margin_shift for t in t_shapes]
    v0_s = [torch.rand(B, t_shapes[i][0], 1, generator=g) for i in range(n - 1)]
    v0_t = [torch.rand(B, t_shapes[i][0], 1, generator=g) for i in range(n - 1)]
    inputs = [rn(B, K), labels(B, K)] + fs + ft + conv_w + bn_w + bn_b + margins + v0_s + v0_t
    # gradients w.r.t. zs and the student maps; the connectors' parameters in param_grads
    no_grad = list(range(2 + n, len(inputs)))
    leaves_holder = {}

    def fwd(zs, y, *rest, **kw):
        rest = list(rest)
        for j in range(2 * n, 5 * n):  # the connector parameters: leaves of their own
            rest[j] = rest[j].detach().clone().requires_grad_(True)
        leaves_holder["p"] = rest[2 * n:5 * n]
        return london_forward(zs, y, *rest, **kw)

    c = case(name, "london", fwd, inputs, params, rtol=1e-3, atol=1e-5, no_grad=no_grad)
    p = leaves_holder["p"]
    c["param_grads"] = {}
    for i in range(n):
        for key, t in (("conv.weight", p[i]), ("bn.weight", p[n + i]), ("bn.bias", p[2 * n + i])):
            c["param_grads"]["connectors.%d.%s" % (i, key)] = tensor_json(t.grad) if t.grad is not None else None
    cases.append(c)


S3 = [(3, 8, 8), (4, 4, 4), (5, 2, 2)]
T3 = [(4, 8, 8), (6, 4, 4), (7, 2, 2)]
london_case("london_ofd_default_3_stages", 3, 5, S3, T3)
london_case("london_ofd_connect_both", 3, 5, S3, T3, connect_both=True)
london_case("london_no_grad_as_released", 2, 4, S3, T3, power_grad=False)
london_case("london_at_base_5_iters", 2, 4, [(3, 4, 4), (4, 2, 2)], [(5, 4, 4), (3, 2, 2)], base="at", power_iters=5,
            london_weight=0.5)
london_case("london_mse_base_same_size_maps", 3, 3, [(2, 4, 4), (3, 4, 4), (4, 4, 4)],
            [(3, 4, 4), (2, 4, 4), (5, 4, 4)], base="mse", pair_decay=1.5, london_weight=2.0, ce_weight=0.5)
london_case("london_only_big_weight", 4, 6, S3, T3, base="none", london_weight=10.0, margin_shift=0.4)


# the proxy alone: sigma of G (B, m, k) from v0 (B, m, 1)
def proxy_fn(G, v0, iters):
    return top_eigenvalue(torch.bmm(G, G.transpose(2, 1)), v0, iters, True).view(-1)


for name, shape, iters in (("proxy_4x6_10", (3, 4, 6), 10), ("proxy_5x3_3", (2, 5, 3), 3),
                           ("proxy_7x7_20", (2, 7, 7), 20)):
    G = rn(*shape)
    v0 = torch.rand(shape[0], shape[1], 1, generator=g)
    cases.append(case(name, "london_proxy", proxy_fn, [G, v0], {"iters": iters}, rtol=1e-4, atol=1e-6, no_grad=[1]))


# the OFD margin E[x | x < 0] for x ~ N(m, s^2), or -3 s when P(x < 0) <= 0.001 (get_margin_from_BN)
def ofd_margin(m, s):
    out = []
    for mi, si in zip(m.tolist(), s.tolist()):
        si = abs(si)
        cdf = 0.5 * (1.0 + math.erf((-mi / si) / math.sqrt(2.0)))
        if cdf > 0.001:
            out.append(-si * math.exp(-(mi / si) ** 2 / 2) / math.sqrt(2 * math.pi) / cdf + mi)
        else:
            out.append(-3 * si)
    return torch.tensor(out, dtype=torch.float32)


m = torch.tensor([0.0, 1.0, -1.0, 2.5, 4.0, 0.3])
s = torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0, 0.1])
cases.append(case("ofd_margin_mixed", "ofd_margin", lambda a, b: ofd_margin(a, b), [m, s], {}, grad=False))

write("london.json", cases)
