"""Golden values for the ViT (nn/models/vit.cpp) and its attention / block layers (nn/layers.cpp).

timm is not installed: the ViT below is plain torch with timm's module names and layout
(PatchEmbed.proj, cls_token, pos_embed, Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2, final norm, head; LayerNorm eps 1e-6, exact GELU, no dropout). Its feature taps are
kdlab's (see nn/models/vit.h): feats = [embedded tokens, outputs of blocks 2, 4, 6] as
(B, 1 + N, D), preact_feats = feats, pooled = the normed class token.

Writes two fixtures:
  golden_models_vit.json  whole-model fingerprints (model_fixture.py)
  golden_attention.json   MultiheadSelfAttention and TransformerBlock values and gradients of the
                          input and of every weight, at tiny sizes (golden.py cases)
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import golden
from golden import FIXTURES, case, write
from model_fixture import model_info, model_run, write_models


def attention(x, qkv_w, qkv_b, proj_w, proj_b, num_heads):
    """timm's Attention.forward: x (B, N, D) -> (B, N, D)."""
    B, N, D = x.shape
    hd = D // num_heads
    qkv = F.linear(x, qkv_w, qkv_b).reshape(B, N, 3, num_heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (B, H, N, N)
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, D)
    return F.linear(out, proj_w, proj_b)


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return attention(x, self.qkv.weight, self.qkv.bias, self.proj.weight, self.proj.bias, self.num_heads)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class VisionTransformer(nn.Module):
    def __init__(self, num_classes=100, in_channels=3, image_size=32, patch=4, dim=192, depth=6, heads=3,
                 mlp_ratio=4.0, taps=(2, 4, 6)):
        super().__init__()
        self.taps = taps
        n = (image_size // patch) ** 2
        self.patch_embed = PatchEmbed(in_channels, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        feats = [t]
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i + 1 in self.taps:
                feats.append(t)
        pooled = self.norm(t)[:, 0]
        return self.head(pooled), {"feats": feats, "preact_feats": feats, "pooled_feat": pooled}


# ---------------------------------------------------------------- whole model

models = {
    "vit_small_cifar": model_info(VisionTransformer()),
    "vit_small_cifar_c10_1x28": model_info(VisionTransformer(10, 1, 28)),
}
runs = [
    model_run("vit_small_cifar", lambda: VisionTransformer(), "vit_small_cifar", 100, 3, 32),
    model_run("vit_small_cifar_mnist", lambda: VisionTransformer(10, 1, 28), "vit_small_cifar", 10, 1, 28,
              grads=False),
]
for run in runs:  # 8 gradient samples instead of 32; sums and projection still cover every element
    for _, fp in run.get("train", {}).get("grads", []):
        fp["samples"] = fp["samples"][:8]
write_models("golden_models_vit.json", models, runs)


def stability(make, shape, perturb=1e-6):
    """Worst relative change of the train-mode float64 gradients when the input moves by `perturb`
    (relative). The ViT is smooth (GELU, LayerNorm, no BatchNorm), so its gradients are well
    conditioned and a float32 engine can match them to 1e-4, unlike the BN+ReLU CNNs at batch 2."""
    out = []
    for p in (0.0, perturb):
        m = make().double()
        golden.det_fill(m)
        m.train()
        x = golden.det_input(shape).double()
        x = x * (1 + p * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
        logits, _ = m(x)
        w = golden.det_uniform(99, logits.numel()).reshape(logits.shape).double()
        (logits * w).sum().backward()
        out.append([q.grad.clone() for q in m.parameters()])
    return max(((b - a).abs().sum() / a.abs().sum()).item() for a, b in zip(*out) if a.abs().sum() > 1e-6)


worst = stability(lambda: VisionTransformer(), (2, 3, 32, 32))
assert worst < 2e-5, f"ViT gradients are not stable under a 1e-6 input change ({worst:.2g})"
print(f"vit_small_cifar: train-mode gradients stable (worst relative change {worst:.1e} under a 1e-6 input change)")

# ---------------------------------------------------------------- layers

g = torch.Generator().manual_seed(5)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def attn_case(name, B, N, D, H, qkv_bias=True, transposed_input=False):
    x = rn(B, N, D)  # transposed_input: the C++ side feeds x as a non-contiguous (transposed) view
    s = 1.0 / math.sqrt(D)
    inputs = [x, rn(3 * D, D, scale=s), rn(3 * D, scale=0.1) if qkv_bias else None, rn(D, D, scale=s),
              rn(D, scale=0.1)]

    def fn(x, qw, qb, pw, pb, heads, transposed_input):
        return attention(x, qw, qb, pw, pb, heads)

    return case(name, "attention", fn, inputs, params={"heads": H, "transposed_input": transposed_input},
                rtol=1e-5, atol=1e-5)


def block_case(name, B, N, D, H, mlp_ratio):
    hidden = int(D * mlp_ratio)
    s, sh = 1.0 / math.sqrt(D), 1.0 / math.sqrt(hidden)
    inputs = [rn(B, N, D),
              1.0 + rn(D, scale=0.1), rn(D, scale=0.1),                    # norm1
              rn(3 * D, D, scale=s), rn(3 * D, scale=0.1),               # attn.qkv
              rn(D, D, scale=s), rn(D, scale=0.1),                       # attn.proj
              1.0 + rn(D, scale=0.1), rn(D, scale=0.1),                  # norm2
              rn(hidden, D, scale=s), rn(hidden, scale=0.1),             # mlp.fc1
              rn(D, hidden, scale=sh), rn(D, scale=0.1)]                 # mlp.fc2

    def fn(x, n1w, n1b, qw, qb, pw, pb, n2w, n2b, f1w, f1b, f2w, f2b, heads, mlp_ratio):
        h = x + attention(F.layer_norm(x, (D,), n1w, n1b, 1e-6), qw, qb, pw, pb, heads)
        m = F.linear(F.gelu(F.linear(F.layer_norm(h, (D,), n2w, n2b, 1e-6), f1w, f1b)), f2w, f2b)
        return h + m

    return case(name, "block", fn, inputs, params={"heads": H, "mlp_ratio": mlp_ratio}, rtol=1e-5, atol=1e-5)


cases = [
    attn_case("attn_d8_h2_n3", 2, 3, 8, 2),
    attn_case("attn_d4_h1_n4", 1, 4, 4, 1),
    attn_case("attn_d6_h3_n4", 1, 4, 6, 3),
    attn_case("attn_no_qkv_bias", 1, 3, 4, 2, qkv_bias=False),
    attn_case("attn_transposed_input", 2, 3, 4, 2, transposed_input=True),
    block_case("block_d8_h2_n3", 1, 3, 8, 2, 2.0),
    block_case("block_d4_h2_n3_mlp4", 2, 3, 4, 2, 4.0),
]
write("golden_attention.json", cases)


def compact(path):
    """Rewrite a golden.py fixture with 9 significant digits (enough for float32), no spaces."""
    def rnd(v):
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if isinstance(v, list):
            return [rnd(x) for x in v]
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in v.items()}
        return v

    with open(path) as f:
        doc = rnd(json.load(f))
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"compacted {path}: {os.path.getsize(path) // 1024} KiB")


compact(os.path.join(FIXTURES, "golden_attention.json"))
