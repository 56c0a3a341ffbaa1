"""Golden values for PEFT (nn/peft.h): LoRA on Linear, on a fused qkv (some slices), on Conv2d
(grouped and depthwise) and the residual conv adapter; outputs, merged weights, input gradients.

Semantics followed:
  - loralib (microsoft/LoRA, loralib/layers.py): Linear.forward = F.linear(x, W, b)
    + (dropout(x) @ A^T @ B^T) * scaling, scaling = alpha / r; merge: W += B @ A * scaling.
    MergedLinear (a fused qkv with enable_lora, e.g. [True, False, True]): one pair (A_p, B_p) per
    enabled slice, the update zero on the other slices (its zero_pad).
  - HF PEFT's Conv2d LoRA: A a k x k conv C_in -> r (the base conv's stride, padding, dilation),
    B a 1 x 1 conv r -> C_out; for groups g > 1 one pair per group (A grouped C_in -> g r, B grouped
    g r -> C_out), so the merged update keeps the base kernel's shape: for o in group j,
    dW[o, i] = sum_rho B[o, rho] A[j r + rho, i]. (loralib's ConvLoRA gets g > 1 wrong, issue #67.)
  - residual adapters (Rebuffi et al.): y = conv_kxk(x) + conv_1x1(x), the 1x1 merged into the
    kernel's centre tap.
Run with Debian's python3-torch: /usr/bin/python3 tests/reference/gen_peft.py
"""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


cases = []


def lora_linear(x, W, b, A, B, scale):
    y = F.linear(x, W, b) + (x @ A.t() @ B.t()) * scale
    merged = W.detach() + (B.detach() @ A.detach()) * scale
    return y, merged


def lora_qkv(x, W, b, A, B, scale, parts, r):
    d = W.shape[0] // 3
    rows = []
    k = 0
    for p in range(3):
        if p in parts:
            Ap, Bp = A[k * r:(k + 1) * r], B[k * d:(k + 1) * d]
            rows.append(x @ Ap.t() @ Bp.t())
            k += 1
        else:
            rows.append(torch.zeros(x.shape[0], d))
    y = F.linear(x, W, b) + torch.cat(rows, -1) * scale
    dW = []
    k = 0
    for p in range(3):
        if p in parts:
            dW.append(B[k * d:(k + 1) * d].detach() @ A[k * r:(k + 1) * r].detach())
            k += 1
        else:
            dW.append(torch.zeros(d, W.shape[1]))
    return y, W.detach() + torch.cat(dW, 0) * scale


def lora_conv(x, W, b, A, B, scale, stride, padding, dilation, groups, r):
    base = F.conv2d(x, W, b, stride, padding, dilation, groups)
    h = F.conv2d(F.conv2d(x, A, None, stride, padding, dilation, groups), B, None, 1, 0, 1, groups)
    Cout = W.shape[0]
    cout_g = Cout // groups
    dW = torch.zeros_like(W)
    for j in range(groups):
        Bj = B.detach()[j * cout_g:(j + 1) * cout_g].reshape(cout_g, r)
        Aj = A.detach()[j * r:(j + 1) * r].reshape(r, -1)
        dW[j * cout_g:(j + 1) * cout_g] = (Bj @ Aj).reshape(cout_g, *W.shape[1:])
    return base + h * scale, W.detach() + dW * scale


def adapter(x, W, b, Wa, stride, groups):
    y = F.conv2d(x, W, b, stride, 1, 1, groups) + F.conv2d(x, Wa, None, stride, 0, 1, groups)
    merged = W.detach().clone()
    c = W.shape[2] // 2
    merged[:, :, c, c] += Wa.detach()[:, :, 0, 0]
    return y, merged


TOL = dict(rtol=1e-5, atol=1e-5)
# inputs: x, W, b (frozen: no gradient), A, B
cases.append(case("lora_linear_r2", "lora_linear", lora_linear,
                  [rn(3, 6), rn(5, 6), rn(5), rn(2, 6), rn(5, 2)], {"scale": 2.0}, no_grad=[1, 2], **TOL))
cases.append(case("lora_linear_r4_batched", "lora_linear", lora_linear,
                  [rn(2, 3, 8), rn(7, 8), rn(7), rn(4, 8), rn(7, 4)], {"scale": 0.5}, no_grad=[1, 2], **TOL))
cases.append(case("lora_qkv_q_v", "lora_qkv", lora_qkv,
                  [rn(3, 4), rn(12, 4), rn(12), rn(4, 4), rn(8, 2)], {"scale": 1.5, "parts": [0, 2], "r": 2},
                  no_grad=[1, 2], **TOL))
for name, (cin, cout, k, stride, padding, dilation, groups, r) in {
    "lora_conv_3x3": (4, 6, 3, 1, 1, 1, 1, 2),
    "lora_conv_3x3_stride2_groups2": (4, 6, 3, 2, 1, 1, 2, 2),
    "lora_conv_depthwise": (4, 4, 3, 1, 1, 1, 4, 1),
    "lora_conv_3x3_dilated_groups2": (4, 8, 3, 1, 2, 2, 2, 3),
}.items():
    cases.append(case(name, "lora_conv", lora_conv,
                      [rn(2, cin, 6, 6), rn(cout, cin // groups, k, k), rn(cout), rn(groups * r, cin // groups, k, k),
                       rn(cout, r, 1, 1)],
                      {"scale": 2.0, "stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
                       "r": r}, no_grad=[1, 2], **TOL))
for name, (cin, cout, stride, groups) in {"adapter_3x3": (4, 6, 1, 1), "adapter_stride2_groups2": (4, 6, 2, 2)}.items():
    cases.append(case(name, "adapter", adapter,
                      [rn(2, cin, 7, 7), rn(cout, cin // groups, 3, 3), rn(cout), rn(cout, cin // groups, 1, 1)],
                      {"stride": stride, "groups": groups}, no_grad=[1, 2], **TOL))

write("peft.json", cases)
