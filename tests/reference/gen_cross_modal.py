"""Golden values for cross-modal distillation (issue #30): the modality transforms of
datasets/modality.h and supervision transfer's loss (distill/cross_modal/supervision_transfer.h).

Semantics followed:
  - gray: Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, ../shared/METHODS.md), on pixel values.
  - edges: Sobel of Y as F.conv2d correlations with Gx = [[-1,0,1],[-2,0,2],[-1,0,1]], Gy = Gx^T,
    the border replicated (F.pad mode="replicate"), magnitude sqrt(Gx^2 + Gy^2) / 4.
  - lowres:K: F.adaptive_avg_pool2d(x, K), then F.interpolate(size=(H, W), mode="nearest").
  - rgb+edges: torch.cat([x, edges(x)]).
  - supervision transfer (Gupta, Hoffman & Malik, CVPR 2016): L = w * mean((t(f_T) - g_S)^2) with
    t = F.conv2d(f_T, W, b) a 1x1 connector on the teacher's map (METHODS.md's equation), or on the
    student's map (connector "student"), or none (identity); f_T is a constant (no gradient).
Run with Debian's python3-torch: /usr/bin/python3 tests/reference/gen_cross_modal.py
"""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(30)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def pixels(*shape):
    return torch.rand(*shape, generator=g) * 255.0


def luma(x):
    if x.shape[0] == 1:
        return x
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def edges(x):
    y = F.pad(luma(x).unsqueeze(0), (1, 1, 1, 1), mode="replicate")
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).reshape(1, 1, 3, 3)
    gy = gx.transpose(2, 3)
    return (torch.sqrt(F.conv2d(y, gx) ** 2 + F.conv2d(y, gy) ** 2) / 4.0)[0]


def lowres(x, k):
    small = F.adaptive_avg_pool2d(x.unsqueeze(0), k)
    return F.interpolate(small, size=x.shape[1:], mode="nearest")[0]


def modality(x, kind, k=0):
    if kind == "gray":
        return luma(x)
    if kind == "edges":
        return edges(x)
    if kind == "lowres":
        return lowres(x, k)
    if kind == "rgb+edges":
        return torch.cat([x, edges(x)], 0)
    raise ValueError(kind)


def st_loss(fs, ft, W, b, side, w):
    ft = ft.detach()
    if side == "teacher":
        ft = F.conv2d(ft, W, b)
    elif side == "student":
        fs = F.conv2d(fs, W, b)
    return w * F.mse_loss(fs, ft)


cases = []
TOL = dict(rtol=1e-5, atol=1e-4, grad=False)
for name, (shape, kind, k) in {
    "gray_rgb": ((3, 7, 9), "gray", 0),
    "gray_single_channel": ((1, 5, 5), "gray", 0),
    "edges_rgb": ((3, 8, 6), "edges", 0),
    "edges_single_channel": ((1, 6, 7), "edges", 0),
    "lowres_4_divisible": ((3, 8, 8), "lowres", 4),
    "lowres_3_not_divisible": ((3, 7, 10), "lowres", 3),
    "lowres_1": ((2, 5, 6), "lowres", 1),
    "rgb_edges": ((3, 6, 6), "rgb+edges", 0),
}.items():
    cases.append(case(name, "modality", lambda x, kind, k: modality(x, kind, k), [pixels(*shape)],
                      {"kind": kind, "k": k}, **TOL))

# a step edge: the magnitude reads the step's height inside, and the replicated border adds none
step = torch.zeros(1, 5, 6)
step[:, :, 3:] = 100.0
cases.append(case("edges_step", "modality", lambda x, kind, k: modality(x, kind, k), [step],
                  {"kind": "edges", "k": 0}, **TOL))

GTOL = dict(rtol=1e-4, atol=1e-6)
# inputs: fs (B, Cs, H, W), ft (B, Ct, H, W) (no gradient), W, b of the connector
cases.append(case("st_teacher_connector", "st", st_loss,
                  [rn(2, 3, 4, 4), rn(2, 5, 4, 4), rn(3, 5, 1, 1, scale=0.4), rn(3, scale=0.1)],
                  {"side": "teacher", "w": 1.0}, no_grad=[1], **GTOL))
cases.append(case("st_student_connector", "st", st_loss,
                  [rn(2, 3, 4, 4), rn(2, 5, 4, 4), rn(5, 3, 1, 1, scale=0.4), rn(5, scale=0.1)],
                  {"side": "student", "w": 2.5}, no_grad=[1], **GTOL))
cases.append(case("st_identity", "st", lambda fs, ft, side, w: st_loss(fs, ft, None, None, side, w),
                  [rn(3, 4, 2, 2), rn(3, 4, 2, 2)], {"side": "identity", "w": 0.5}, no_grad=[1], **GTOL))

write("cross_modal.json", cases)
