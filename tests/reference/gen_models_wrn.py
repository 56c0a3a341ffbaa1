"""Golden fingerprints for the CIFAR Wide ResNets (nn/models/wrn.cpp).

The PyTorch definition below follows mdistiller/models/cifar/wrn.py: pre-activation blocks
(bn1 - relu - conv1 - bn2 - relu - conv2, 1x1 convShortcut on the activated input when the width
changes), feats = stage outputs, preact_feats = [f0, block2.layer.0.bn1(f1), block3.layer.0.bn1(f2),
bn1(f3)] computed by calling those BNs a second time (so in train mode their running statistics
move twice per forward, as in mdistiller). Input channels are a parameter and avg_pool2d(8) is
adaptive average pooling (identical on 32x32).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model_fixture import model_info, model_run, write_models


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride,
                                                                      bias=False)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return (x if self.equal_in_out else self.convShortcut(a)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes, in_channels=3):
        super().__init__()
        c = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, c[0], c[1], 1)
        self.block2 = NetworkBlock(n, c[1], c[2], 2)
        self.block3 = NetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x):
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        out = F.relu(self.bn1(f3))
        f4 = F.adaptive_avg_pool2d(out, 1).reshape(out.size(0), -1)
        out = self.fc(f4)
        f1_pre = self.block2.layer[0].bn1(f1)
        f2_pre = self.block3.layer[0].bn1(f2)
        f3_pre = self.bn1(f3)
        return out, {"feats": [f0, f1, f2, f3], "preact_feats": [f0, f1_pre, f2_pre, f3_pre], "pooled_feat": f4}


SPECS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}


def maker(name, num_classes=100, in_channels=3):
    depth, widen = SPECS[name]
    return lambda: WideResNet(depth, widen, num_classes, in_channels)


models = {name: model_info(maker(name)()) for name in SPECS}
# block2.layer.0.bn1 and bn1 are the BNs mdistiller calls twice; block1.layer.0.bn1 once.
BNS = ["block1.layer.0.bn1", "block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"]
runs = [
    model_run("wrn_16_1", maker("wrn_16_1"), "wrn_16_1", 100, 3, 32, bns=BNS),
    model_run("wrn_16_1_mnist", maker("wrn_16_1", 10, 1), "wrn_16_1", 10, 1, 28, bns=BNS),
    model_run("wrn_16_2", maker("wrn_16_2"), "wrn_16_2", 100, 3, 32, bns=BNS + ["block1.layer.1.bn2"]),
    model_run("wrn_40_1", maker("wrn_40_1"), "wrn_40_1", 100, 3, 32, grads=False, bns=BNS),
    model_run("wrn_40_2", maker("wrn_40_2"), "wrn_40_2", 100, 3, 32, grads=False, bns=BNS),
]
write_models("golden_models_wrn.json", models, runs)
