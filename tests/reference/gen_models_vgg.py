"""Golden fingerprints for the CIFAR VGGs with BatchNorm (nn/models/vgg.cpp).

The PyTorch definition below follows mdistiller/models/cifar/vgg.py with batch_norm=True (its
vgg8/vgg11/vgg13 are vgg8_bn/vgg11_bn/vgg13_bn): five blocks of conv3x3(bias)-BN-ReLU whose last
ReLU is applied outside the block, max pools between blocks 0-1, 1-2, 2-3 (and 3-4 only for 64x64
inputs), adaptive average pool, Linear classifier. Input channels are a parameter.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model_fixture import model_info, model_run, write_models


def make_block(channels, in_channels):
    layers = []
    for v in channels:
        layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, cfg, num_classes, in_channels=3):
        super().__init__()
        self.block0 = make_block(cfg[0], in_channels)
        self.block1 = make_block(cfg[1], cfg[0][-1])
        self.block2 = make_block(cfg[2], cfg[1][-1])
        self.block3 = make_block(cfg[3], cfg[2][-1])
        self.block4 = make_block(cfg[4], cfg[3][-1])
        self.classifier = nn.Linear(cfg[4][-1], num_classes)

    def forward(self, x):
        h = x.shape[2]
        f0 = F.relu(self.block0(x))
        f1_pre = self.block1(F.max_pool2d(f0, 2, 2))
        f1 = F.relu(f1_pre)
        f2_pre = self.block2(F.max_pool2d(f1, 2, 2))
        f2 = F.relu(f2_pre)
        f3_pre = self.block3(F.max_pool2d(f2, 2, 2))
        f3 = F.relu(f3_pre)
        f4_pre = self.block4(F.max_pool2d(f3, 2, 2) if h == 64 else f3)
        f4 = F.relu(f4_pre)
        f5 = F.adaptive_avg_pool2d(f4, 1).reshape(f4.size(0), -1)
        out = self.classifier(f5)
        return out, {"feats": [f0, f1, f2, f3, f4], "preact_feats": [f0, f1_pre, f2_pre, f3_pre, f4_pre],
                     "pooled_feat": f5}


SPECS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def maker(name, num_classes=100, in_channels=3):
    return lambda: VGG(SPECS[name], num_classes, in_channels)


def conv_biases(name):
    """Every conv bias of the model: each conv is followed by a BatchNorm (gradient 0 in train mode)."""
    return [n + ".bias" for n, m in maker(name)().named_modules() if isinstance(m, nn.Conv2d)]


models = {name: model_info(maker(name)()) for name in SPECS}
BNS = ["block0.1", "block2.1", "block4.1"]
runs = [
    model_run("vgg8", maker("vgg8"), "vgg8", 100, 3, 32, bns=BNS, vanishing=conv_biases("vgg8")),
    model_run("vgg8_mnist", maker("vgg8", 10, 1), "vgg8", 10, 1, 28, bns=BNS, vanishing=conv_biases("vgg8")),
    model_run("vgg8_64px", maker("vgg8", 10), "vgg8", 10, 3, 64, batch=1, train=False),
    model_run("vgg11", maker("vgg11"), "vgg11", 100, 3, 32, bns=BNS + ["block3.4"], vanishing=conv_biases("vgg11")),
    model_run("vgg13", maker("vgg13"), "vgg13", 100, 3, 32, bns=["block0.1", "block0.4", "block4.4"],
              vanishing=conv_biases("vgg13")),
]
write_models("golden_models_vgg.json", models, runs)
