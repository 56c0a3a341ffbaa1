"""Golden values for CAT-KD (distill/feature/catkd.h), following its OFFICIAL code
(GzyAftermath/CAT-KD, built on mdistiller):

  mdistiller/distillers/CAT_KD.py   CAT_KD.forward_train (IF_BINARIZE, loss_CE, loss_CAT), CAT_loss,
                                    _Normalize
  tools/train.py                    the teacher's conversion: conv_test.weight = fc.weight.view(K, C, 1, 1),
                                    the FC's bias dropped
  mdistiller/models/cifar/resnet.py ResNet_test.forward: x = conv_test(x) (bias-free 1x1 conv on the last
                                    map), f3 = x, logits = avgpool(x) (the student is this "_test" variant)

Two kinds of case:
  catkd      inputs: the student's map f_s, the teacher's map f_t, the student's classifier weight W_s, the
             teacher's FC weight W_t and bias b_t, labels. The student's CAMs and logits come from W_s as
             ResNet_test computes them; the teacher's FC is converted as tools/train.py does. Gradients w.r.t.
             f_s and W_s (the CAT loss and CE both train the student's classifier).
  catkd_cam  inputs: student logits, the student's and the teacher's CAMs given directly (the `cam` tap of
             `kdlab loss`), labels. Gradients w.r.t. the logits and the student's CAMs.
Run: /usr/bin/python3 tests/reference/gen_catkd.py
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def feat(*shape):
    """A post-ReLU feature map, kept away from 0."""
    return F.relu(rn(*shape)) + 0.1 * torch.rand(*shape, generator=g)


def labels(n, k):
    return torch.randint(0, k, (n,), generator=g)


# ------------------------------------------------------------------ the official code's functions


def _Normalize(feat, IF_NORMALIZE):
    if IF_NORMALIZE:
        feat = F.normalize(feat, dim=(2, 3))
    return feat


def CAT_loss(CAM_Student, CAM_Teacher, CAM_RESOLUTION, IF_NORMALIZE):
    CAM_Student = F.adaptive_avg_pool2d(CAM_Student, (CAM_RESOLUTION, CAM_RESOLUTION))
    CAM_Teacher = F.adaptive_avg_pool2d(CAM_Teacher, (CAM_RESOLUTION, CAM_RESOLUTION))
    loss = F.mse_loss(_Normalize(CAM_Student, IF_NORMALIZE), _Normalize(CAM_Teacher, IF_NORMALIZE))
    return loss


def forward_train(logits_student, stu, tea, target, ce_weight, beta, r, normalize, binarize):
    """CAT_KD.forward_train after the two forward passes (stu, tea = feats[-1], the CAMs)."""
    if binarize:  # IF_BINARIZE
        n, c, h, w = tea.shape
        threshold = torch.norm(tea, dim=(2, 3), keepdim=True, p=1) / (h * w)
        tea = tea - threshold
        tea = F.relu(tea).bool() * torch.ones_like(tea)
    loss_feat = beta * CAT_loss(stu, tea, r, normalize)
    loss_ce = ce_weight * F.cross_entropy(logits_student, target)
    return loss_ce + loss_feat, loss_ce, loss_feat


def student_test_tail(f_s, W_s):
    """ResNet_test.forward from layer3's output: conv_test (bias-free 1x1), then the average pool."""
    K, C = W_s.shape
    conv_test = nn.Conv2d(C, K, kernel_size=1, padding=0, bias=False)
    del conv_test.weight
    conv_test.weight = W_s.view(K, C, 1, 1)  # the leaf W_s itself, so that its gradient is recorded
    x = conv_test(f_s)
    cam = x
    x = F.avg_pool2d(x, x.shape[2:])  # nn.AvgPool2d(8) on the 8x8 map: the global mean
    logits = x.reshape(x.size(0), -1)
    return logits, cam


def teacher_converted_tail(f_t, W_t, b_t):
    """tools/train.py: the teacher's FC becomes conv_test (weight viewed as (K, C, 1, 1), bias dropped)."""
    K, C = W_t.shape
    fc = nn.Linear(C, K)
    with torch.no_grad():
        fc.weight.copy_(W_t)
        fc.bias.copy_(b_t)
    conv_test = nn.Conv2d(C, K, kernel_size=1, padding=0, bias=False)
    with torch.no_grad():
        conv_test.weight.copy_(fc.weight.view(fc.out_features, fc.in_features, 1, 1))
        return conv_test(f_t)


cases = []


def catkd_forward(f_s, f_t, W_s, W_t, b_t, y, beta, r, normalize, ce_weight, binarize):
    logits_student, cam_s = student_test_tail(f_s, W_s)
    cam_t = teacher_converted_tail(f_t.detach(), W_t.detach(), b_t.detach())
    return forward_train(logits_student, cam_s, cam_t, y, ce_weight, beta, r, normalize, binarize)


def catkd_case(name, B, K, s_map, t_map, beta=15.0, r=2, normalize=False, ce_weight=1.0, binarize=False):
    params = {"beta": beta, "r": r, "normalize": normalize, "ce_weight": ce_weight, "binarize": binarize}
    f_s, f_t = feat(B, *s_map), feat(B, *t_map)
    W_s = rn(K, s_map[0], scale=0.5)
    W_t = rn(K, t_map[0], scale=0.5)
    b_t = rn(K)
    inputs = [f_s, f_t, W_s, W_t, b_t, labels(B, K)]
    cases.append(case(name, "catkd", catkd_forward, inputs, params, rtol=1e-4, atol=1e-6, no_grad=[1, 3, 4]))


def catkd_cam_forward(zs, cam_s, cam_t, y, beta, r, normalize, ce_weight, binarize):
    return forward_train(zs, cam_s, cam_t.detach(), y, ce_weight, beta, r, normalize, binarize)


def catkd_cam_case(name, B, K, s_hw, t_hw, beta=15.0, r=2, normalize=False, ce_weight=1.0, binarize=False):
    params = {"beta": beta, "r": r, "normalize": normalize, "ce_weight": ce_weight, "binarize": binarize}
    inputs = [rn(B, K), rn(B, K, *s_hw), rn(B, K, *t_hw, scale=2.0), labels(B, K)]
    cases.append(case(name, "catkd_cam", catkd_cam_forward, inputs, params, rtol=1e-4, atol=1e-6, no_grad=[2]))


# resnet32x4 -> resnet8x4 (both 8x8 maps; here 4x4), the official default: beta 15, r 2, no normalisation
catkd_case("catkd_r2_plain_same_size", 3, 5, (4, 4, 4), (6, 4, 4))
# resnet32x4 -> ShuffleV1: beta 600, r 4, normalised; the student's map is half the teacher's
catkd_case("catkd_r4_normalized_student_half", 2, 4, (3, 4, 4), (5, 8, 8), beta=600.0, r=4, normalize=True)
# r = 1: the CAT loss is the MSE of the bias-free logits
catkd_case("catkd_r1", 3, 4, (4, 3, 3), (3, 3, 3), r=1)
# uneven adaptive pooling (5x5 and 3x3 to 2x2: overlapping windows), CE weighted 0.5
catkd_case("catkd_r2_uneven_windows", 2, 3, (3, 5, 5), (4, 3, 3), beta=4.5, normalize=True, ce_weight=0.5)
# IF_BINARIZE: the teacher's CAMs thresholded at their mean absolute value
catkd_case("catkd_binarize", 3, 4, (4, 4, 4), (4, 4, 4), binarize=True, beta=2.0)
# onlyCAT: no CE
catkd_case("catkd_only_cat", 2, 5, (3, 4, 4), (3, 4, 4), ce_weight=0.0, beta=1.0)

catkd_cam_case("catkd_cam_r2", 3, 5, (4, 4), (4, 4))
catkd_cam_case("catkd_cam_r4_normalized", 2, 4, (4, 4), (8, 8), beta=600.0, r=4, normalize=True)
catkd_cam_case("catkd_cam_r2_binarize", 2, 3, (3, 3), (5, 5), binarize=True, beta=3.0, ce_weight=0.3)

write("catkd_losses.json", cases)
