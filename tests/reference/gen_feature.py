"""Golden values for the feature family of distillation losses (distill/feature/): FitNets, AT
and WKD-F, each following its OFFICIAL code:

  FitNet  mdistiller/distillers/FitNet.py + _common.py ConvReg     CE + 100 MSE(ConvReg(f_s), f_t);
          the paper's two-stage schedule: hint loss alone for epochs <= hint_epochs, then
          mdistiller's KD (KD.py kd_loss)
  AT      mdistiller/distillers/AT.py                                single_stage_at_loss, at_loss
  WKD-F   JiamingLv/WKD mdistiller/distillers/WKD.py + _common.py    wkd_feature_loss,
          adaptive_avg_std_pool2d, ConvReg(use_relu, use_bn), the cosine decay in forward_train

  WKD-F full covariance (cov=full; an option the official code does not have): the Bures term
          tr Ss + tr St - 2 tr (St^1/2 Ss St^1/2)^1/2 per grid cell, with torch.linalg.eigh in
          float64 (its gradient through eigvalsh)

The helper modules (ConvReg) are in training mode (BatchNorm uses batch statistics) with weights
given as inputs. Each case records the total loss and its parts, the gradients of the total
w.r.t. the student logits and features, and (param_grads) w.r.t. the helper's parameters.
Run: /usr/bin/python3 tests/reference/gen_feature.py
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import case, tensor_json, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def feat(*shape):
    """A post-ReLU feature map, kept away from 0 so that finite differences are meaningful."""
    return F.relu(rn(*shape)) + 0.1 * torch.rand(*shape, generator=g)


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


cases = []

# ------------------------------------------------------------------------- ConvReg (mdistiller)


class ConvReg(nn.Module):
    """mdistiller/distillers/_common.py ConvReg (WKD's copy adds use_bn, True in every config)."""

    def __init__(self, s_shape, t_shape, use_relu=True):
        super(ConvReg, self).__init__()
        self.use_relu = use_relu
        s_N, s_C, s_H, s_W = s_shape
        t_N, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        elif s_H >= t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        else:
            raise NotImplementedError("student size {}, teacher size {}".format(s_H, t_H))
        self.bn = nn.BatchNorm2d(t_C)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        if self.use_relu:
            return self.relu(self.bn(x))
        else:
            return self.bn(x)


def conv_reg_weights(s_shape, t_shape):
    """Random weights for a ConvReg: conv weight, conv bias, bn weight, bn bias."""
    reg = ConvReg(s_shape, t_shape)
    w = rn(*reg.conv.weight.shape, scale=0.3)
    b = rn(*reg.conv.bias.shape, scale=0.1)
    bw = 1.0 + rn(*reg.bn.weight.shape, scale=0.2)
    bb = rn(*reg.bn.bias.shape, scale=0.2) + 0.3  # shifted so that few outputs sit at the ReLU's kink
    return [w, b, bw, bb]


_last_reg = []  # the ConvReg of the case being recorded, for its parameter gradients


def make_reg(fs, ft, w, b, bw, bb):
    reg = ConvReg(fs.shape, ft.shape)
    with torch.no_grad():
        reg.conv.weight.copy_(w)
        reg.conv.bias.copy_(b)
        reg.bn.weight.copy_(bw)
        reg.bn.bias.copy_(bb)
    reg.train()
    _last_reg.clear()
    _last_reg.append(reg)
    return reg


def with_param_grads(c):
    """Adds the gradients of the last ConvReg's parameters (after case() ran backward)."""
    if _last_reg:
        reg = _last_reg[0]
        c["param_grads"] = {"conv_reg." + n: tensor_json(p.grad) for n, p in reg.named_parameters() if p.grad is not None}
    return c


# ------------------------------------------------------------------------- FitNet (mdistiller)


def kd_loss_official(logits_student, logits_teacher, temperature):
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def fitnet_forward(zs, zt, fs, ft, y, w, b, bw, bb, ce_weight, feat_weight, stages, hint_epochs, epoch, T, kd_ce_weight,
                   kd_weight):
    _last_reg.clear()
    if stages == 2 and epoch > hint_epochs:  # the paper's stage 2: KD on the whole student (parts ce, kd)
        loss_ce = kd_ce_weight * F.cross_entropy(zs, y)
        loss_kd = kd_weight * kd_loss_official(zs, zt.detach(), T)
        return loss_ce + loss_kd, loss_ce, loss_kd
    reg = make_reg(fs, ft, w, b, bw, bb)
    f_s = reg(fs)
    loss_feat = feat_weight * F.mse_loss(f_s, ft.detach())  # FitNet.forward_train
    if stages == 2:  # stage 1: the hint alone (parts ce = 0, hint)
        return loss_feat, torch.zeros(()), loss_feat
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    return loss_ce + loss_feat, loss_ce, loss_feat


def fitnet_case(name, B, K, s_shape, t_shape, ce_weight=1.0, feat_weight=100.0, stages=1, hint_epochs=0, epoch=1,
                T=4.0, kd_ce_weight=0.1, kd_weight=0.9):
    params = {"ce_weight": ce_weight, "feat_weight": feat_weight, "stages": stages, "hint_epochs": hint_epochs,
              "epoch": epoch, "T": T, "kd_ce_weight": kd_ce_weight, "kd_weight": kd_weight}
    fs, ft = feat(B, *s_shape), feat(B, *t_shape)
    inputs = [rn(B, K), rn(B, K, scale=2.0), fs, ft, labels(B, K)] + conv_reg_weights(fs.shape, ft.shape)
    c = case(name, "fitnet", fitnet_forward, inputs, params, rtol=1e-4, atol=1e-5, no_grad=[1, 3, 5, 6, 7, 8])
    cases.append(with_param_grads(c))


fitnet_case("fitnet_same_size_conv1x1", 3, 5, (4, 4, 4), (6, 4, 4))
fitnet_case("fitnet_student_twice_conv3x3s2", 3, 4, (3, 6, 6), (4, 3, 3))
fitnet_case("fitnet_student_half_convT", 2, 6, (4, 2, 2), (3, 4, 4))
fitnet_case("fitnet_valid_conv3x3", 3, 5, (4, 6, 6), (5, 4, 4), ce_weight=0.5, feat_weight=10.0)
fitnet_case("fitnet_two_stage_hint_epoch2", 3, 5, (4, 4, 4), (6, 4, 4), stages=2, hint_epochs=3, epoch=2)
fitnet_case("fitnet_two_stage_kd_epoch5", 4, 5, (4, 4, 4), (6, 4, 4), stages=2, hint_epochs=3, epoch=5, T=2.0)

# ------------------------------------------------------------------------- AT (mdistiller)


def single_stage_at_loss(f_s, f_t, p):
    def _at(feat, p):
        return F.normalize(feat.pow(p).mean(1).reshape(feat.size(0), -1))

    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    return (_at(f_s, p) - _at(f_t, p)).pow(2).mean()


def at_forward(zs, y, *maps, p, ce_weight, feat_weight, layers):
    n = len(layers)
    g_s, g_t = maps[:n], [m.detach() for m in maps[n:]]
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    parts = [feat_weight * single_stage_at_loss(f_s, f_t, p) for f_s, f_t in zip(g_s, g_t)]
    return (loss_ce + sum(parts), loss_ce, *parts)


def at_case(name, B, K, s_shapes, t_shapes, p=2.0, ce_weight=1.0, feat_weight=1000.0, layers=("f1", "f2", "f3")):
    params = {"p": p, "ce_weight": ce_weight, "feat_weight": feat_weight, "layers": ",".join(layers)}
    maps_s = [feat(B, *s) for s in s_shapes]
    maps_t = [feat(B, *t) for t in t_shapes]
    n = len(layers)

    def fwd(zs, y, *maps, p, ce_weight, feat_weight, layers):
        return at_forward(zs, y, *maps, p=p, ce_weight=ce_weight, feat_weight=feat_weight, layers=layers.split(","))

    cases.append(case(name, "at", fwd, [rn(B, K), labels(B, K)] + maps_s + maps_t, params, rtol=1e-4, atol=1e-6,
                      no_grad=list(range(2 + n, 2 + 2 * n))))


at_case("at_same_sizes_3_stages", 2, 5, [(3, 6, 6), (4, 4, 4), (5, 2, 2)], [(4, 6, 6), (5, 4, 4), (6, 2, 2)])
at_case("at_student_larger_pooled", 3, 4, [(3, 8, 8), (2, 6, 6)], [(2, 4, 4), (3, 4, 4)], layers=("f1", "f2"))
at_case("at_teacher_larger_pooled", 2, 4, [(3, 4, 4), (4, 2, 2)], [(2, 8, 8), (3, 6, 6)], layers=("f2", "f3"))
at_case("at_p3_weight10_single", 3, 6, [(4, 5, 5)], [(2, 5, 5)], p=3.0, ce_weight=0.5, feat_weight=10.0, layers=("f3",))

# ------------------------------------------------------------------------- WKD-F (JiamingLv/WKD)


def adaptive_avg_std_pool2d(input_tensor, out_size=(1, 1), eps=1e-5):
    def start_index(a, b, c):
        return int(math.floor(a * c / b))

    def end_index(a, b, c):
        return int(math.ceil((a + 1) * c / b))

    b, c, isizeH, isizeW = input_tensor.shape
    if len(out_size) == 2:
        osizeH, osizeW = out_size
    else:
        osizeH = osizeW = out_size

    avg_pooled_tensor = torch.zeros((b, c, osizeH, osizeW), dtype=input_tensor.dtype, device=input_tensor.device)
    cov_pooled_tensor = torch.zeros((b, c, osizeH, osizeW), dtype=input_tensor.dtype, device=input_tensor.device)
    for oh in range(osizeH):
        istartH = start_index(oh, osizeH, isizeH)
        iendH = end_index(oh, osizeH, isizeH)
        for ow in range(osizeW):
            istartW = start_index(ow, osizeW, isizeW)
            iendW = end_index(ow, osizeW, isizeW)
            input_block = input_tensor[:, :, istartH:iendH, istartW:iendW]
            avg_pooled_tensor[:, :, oh, ow] = input_block.mean(dim=(-1, -2))
            cov_pooled_tensor[:, :, oh, ow] = torch.sqrt(input_block.var(dim=(-1, -2)) + eps)
    return avg_pooled_tensor, cov_pooled_tensor


def wkd_feature_loss(f_s, f_t, eps=1e-5, grid=1):
    if grid == 1:
        f_s_avg, f_t_avg = f_s.mean(dim=(-1, -2)), f_t.mean(dim=(-1, -2))
        f_s_std, f_t_std = torch.sqrt(f_s.var(dim=(-1, -2)) + eps), torch.sqrt(f_t.var(dim=(-1, -2)) + eps)
        mean_loss = F.mse_loss(f_s_avg, f_t_avg, reduction="sum") / f_s.size(0)
        cov_loss = F.mse_loss(f_s_std, f_t_std, reduction="sum") / f_s.size(0)
    elif grid > 1:
        f_s_avg, f_s_std = adaptive_avg_std_pool2d(f_s, out_size=(grid, grid), eps=eps)
        f_t_avg, f_t_std = adaptive_avg_std_pool2d(f_t, out_size=(grid, grid), eps=eps)
        mean_loss = F.mse_loss(f_s_avg, f_t_avg, reduction="sum") / (grid**2 * f_s.size(0))
        cov_loss = F.mse_loss(f_s_std, f_t_std, reduction="sum") / (grid**2 * f_s.size(0))
    return mean_loss, cov_loss


def wkd_f_forward(zs, fs, ft, y, w, b, bw, bb, weight, gamma, decay_epoch, grid, eps, ce_weight, epoch, total_epochs):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    if epoch > decay_epoch:  # WKD.forward_train's cosine decay
        w_e = 0.5 * weight * (1 + math.cos((epoch - decay_epoch) / (total_epochs - decay_epoch) * math.pi))
    else:
        w_e = weight
    reg = make_reg(fs, ft, w, b, bw, bb)
    f_s = reg(fs)
    mean_loss, cov_loss = wkd_feature_loss(f_s, ft.detach(), eps, grid=grid)
    mean_part = w_e * gamma * mean_loss
    cov_part = w_e * cov_loss
    return loss_ce + mean_part + cov_part, loss_ce, mean_part, cov_part


def wkd_f_case(name, B, K, s_shape, t_shape, weight=0.08, gamma=4.0, decay_epoch=150, grid=1, eps=1e-5, ce_weight=1.0,
               epoch=10, total_epochs=240):
    params = {"weight": weight, "gamma": gamma, "decay_epoch": decay_epoch, "grid": grid, "eps": eps,
              "ce_weight": ce_weight, "epoch": epoch, "total_epochs": total_epochs}
    fs, ft = feat(B, *s_shape), feat(B, *t_shape)
    inputs = [rn(B, K), fs, ft, labels(B, K)] + conv_reg_weights(fs.shape, ft.shape)
    c = case(name, "wkd_f", wkd_f_forward, inputs, params, rtol=1e-4, atol=1e-6, no_grad=[2, 4, 5, 6, 7])
    cases.append(with_param_grads(c))


def _cells(H, W, grid):
    cells = []
    for i in range(grid):
        for j in range(grid):
            cells.append((int(math.floor(i * H / grid)), int(math.ceil((i + 1) * H / grid)),
                          int(math.floor(j * W / grid)), int(math.ceil((j + 1) * W / grid))))
    return cells


def full_gaussian(f, eps):
    B, C, H, W = f.shape
    X = f.reshape(B, C, -1).double()
    Xc = X - X.mean(2, keepdim=True)
    cov = Xc @ Xc.transpose(1, 2) / (H * W - 1) + eps * torch.eye(C, dtype=torch.float64)
    return X.mean(2), cov


def bures(cov_s, cov_t):
    w, V = torch.linalg.eigh(cov_t.detach())
    st = V @ torch.diag_embed(w.clamp(min=0).sqrt()) @ V.transpose(-1, -2)
    inner = st @ cov_s @ st
    tr_sqrt = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum(-1)
    return cov_s.diagonal(dim1=-2, dim2=-1).sum(-1) + cov_t.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * tr_sqrt


def wkd_f_full_forward(zs, fs, ft, y, w, b, bw, bb, weight, gamma, decay_epoch, grid, eps, ce_weight, epoch, total_epochs,
                       cov):
    loss_ce = ce_weight * F.cross_entropy(zs, y)
    w_e = weight if epoch <= decay_epoch else \
        0.5 * weight * (1 + math.cos((epoch - decay_epoch) / (total_epochs - decay_epoch) * math.pi))
    reg = make_reg(fs, ft, w, b, bw, bb)
    f_s = reg(fs)
    B, _, H, W = ft.shape
    mean_sum, cov_sum = 0, 0
    for h0, h1, w0, w1 in _cells(H, W, grid):
        mu_s, cov_s = full_gaussian(f_s[:, :, h0:h1, w0:w1], eps)
        mu_t, cov_t = full_gaussian(ft.detach()[:, :, h0:h1, w0:w1], eps)
        mean_sum = mean_sum + ((mu_s - mu_t) ** 2).sum()
        cov_sum = cov_sum + bures(cov_s, cov_t).sum()
    mean_part = (w_e * gamma * mean_sum / (grid**2 * B)).float()
    cov_part = (w_e * cov_sum / (grid**2 * B)).float()
    return loss_ce + mean_part + cov_part, loss_ce, mean_part, cov_part


def wkd_f_full_case(name, B, K, s_shape, t_shape, grid=1, eps=1e-5, epoch=10, gamma=4.0, weight=0.08):
    params = {"weight": weight, "gamma": gamma, "decay_epoch": 150, "grid": grid, "eps": eps, "ce_weight": 1.0,
              "epoch": epoch, "total_epochs": 240, "cov": "full"}
    fs, ft = feat(B, *s_shape), feat(B, *t_shape)
    inputs = [rn(B, K), fs, ft, labels(B, K)] + conv_reg_weights(fs.shape, ft.shape)
    c = case(name, "wkd_f", wkd_f_full_forward, inputs, params, rtol=1e-3, atol=1e-5, no_grad=[2, 4, 5, 6, 7])
    cases.append(with_param_grads(c))


wkd_f_case("wkd_f_default_grid1", 3, 5, (4, 4, 4), (6, 4, 4))
wkd_f_case("wkd_f_grid2_decayed_epoch200", 2, 4, (4, 4, 4), (5, 4, 4), grid=2, epoch=200)
wkd_f_case("wkd_f_grid3_overlapping_cells_5x5", 2, 4, (3, 5, 5), (4, 5, 5), grid=3, gamma=3.0, weight=0.3)
wkd_f_case("wkd_f_student_twice_conv3x3s2", 3, 5, (3, 6, 6), (4, 3, 3), epoch=151, decay_epoch=150, total_epochs=160)
wkd_f_case("wkd_f_student_half_convT_grid2", 2, 3, (4, 2, 2), (3, 4, 4), grid=2, eps=1e-3, ce_weight=0.5)

wkd_f_full_case("wkd_f_full_cov_grid1", 3, 4, (3, 4, 4), (4, 4, 4), weight=1.0)
wkd_f_full_case("wkd_f_full_cov_grid2_eps1e-3", 2, 3, (3, 4, 4), (3, 4, 4), grid=2, eps=1e-3, gamma=2.0)

write("feature_losses.json", cases)
