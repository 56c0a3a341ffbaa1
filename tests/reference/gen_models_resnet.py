"""Golden fingerprints for the CIFAR ResNets (nn/models/resnet.cpp).

The PyTorch definition below follows mdistiller/models/cifar/resnet.py (BasicBlock, 1x1 conv +
BN downsample, feats after each stage's last ReLU, preact_feats before it), with the input
channels a parameter and AvgPool2d(8) replaced by adaptive average pooling (identical on 32x32).
Also checks that resnet56 with 10 classes has exactly the keys and shapes of the shared CIFAR-10
teacher checkpoint, when ../shared/teachers/cifar10_resnet56.safetensors is present.
"""
import json
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_fixture import model_info, model_run, write_models


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):  # returns (out, preact)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        preact = out + residual
        return F.relu(preact), preact


class Stage(nn.Sequential):
    def forward(self, x):
        preact = None
        for block in self:
            x, preact = block(x)
        return x, preact


class ResNet(nn.Module):
    def __init__(self, depth, widths, num_classes, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[1], n)
        self.layer2 = self._make_layer(widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return Stage(*layers)

    def forward(self, x):
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = self.layer1(f0)
        f2, f2_pre = self.layer2(f1)
        f3, f3_pre = self.layer3(f2)
        avg = F.adaptive_avg_pool2d(f3, 1).reshape(f3.size(0), -1)
        out = self.fc(avg)
        return out, {"feats": [f0, f1, f2, f3], "preact_feats": [f0, f1_pre, f2_pre, f3_pre], "pooled_feat": avg}


NARROW, WIDE = [16, 16, 32, 64], [32, 64, 128, 256]
SPECS = {
    "resnet8": (8, NARROW), "resnet14": (14, NARROW), "resnet20": (20, NARROW), "resnet32": (32, NARROW),
    "resnet44": (44, NARROW), "resnet56": (56, NARROW), "resnet110": (110, NARROW),
    "resnet8x4": (8, WIDE), "resnet32x4": (32, WIDE),
}


def maker(name, num_classes=100, in_channels=3):
    depth, widths = SPECS[name]
    return lambda: ResNet(depth, widths, num_classes, in_channels)


def teacher_header():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "teachers",
                        "cifar10_resnet56.safetensors")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


models = {name: model_info(maker(name)()) for name in SPECS}
models["resnet56_c10"] = model_info(maker("resnet56", num_classes=10)())
teacher = teacher_header()
if teacher is None:
    print("note: ../shared/teachers/cifar10_resnet56.safetensors not found; teacher keys not checked")
else:
    ours = {n: s for n, s in models["resnet56_c10"]["state"]}
    assert ours == teacher, f"resnet56 keys differ from the teacher's: {set(ours) ^ set(teacher)}"
    print(f"resnet56 (10 classes) matches the teacher checkpoint's {len(teacher)} keys and shapes")

BNS = ["bn1", "layer1.0.bn2", "layer3.0.downsample.1"]
runs = [
    model_run("resnet8", maker("resnet8"), "resnet8", 100, 3, 32, bns=BNS),
    model_run("resnet8_mnist", maker("resnet8", 10, 1), "resnet8", 10, 1, 28, bns=BNS),
    model_run("resnet20", maker("resnet20"), "resnet20", 100, 3, 32, bns=BNS),
    model_run("resnet56_c10", maker("resnet56", 10), "resnet56", 10, 3, 32, grads=False, bns=BNS),
    model_run("resnet110", maker("resnet110"), "resnet110", 100, 3, 32, train=False),
    model_run("resnet8x4", maker("resnet8x4"), "resnet8x4", 100, 3, 32, bns=BNS + ["layer1.0.downsample.1"]),
    model_run("resnet32x4", maker("resnet32x4"), "resnet32x4", 100, 3, 32, grads=False, bns=BNS),
]
write_models("golden_models_resnet.json", models, runs)
