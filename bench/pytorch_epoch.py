"""The PyTorch side of bench/compare_epoch.sh: one epoch of a kdlab recipe in a plain PyTorch loop.

The recipe (recipes/cifar10_laptop.json by default) gives the model, batch, optimizer and LR
schedule, as kdlab reads them:
  data       the training split preloaded as one uint8 tensor (N, 3, 32, 32) from a CIFAR binary
             file (kdlab data pack writes one from the JPEG archive), shuffled every epoch by a
             seeded permutation, the last partial batch kept (drop_last false, as kdlab)
  augment    per image: random crop 32 from the image zero-padded by 4, horizontal flip with
             probability 1/2 (torchvision's RandomCrop(32, 4) + RandomHorizontalFlip), then the
             data set's mean/std normalisation; done in the loop, on the preloaded tensor
  step       zero the gradients, forward, loss, backward, SGD (momentum, weight decay, no decay
             on 1-D parameters when the recipe says so), the LR of the step from the cosine schedule
             stepped per iteration (lr_t = min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2)
  loss       ce: cross-entropy; kd: 0.1 CE + 0.9 T^2 KL(softmax(zt/T) || softmax(zs/T)), T = 4,
             with the teacher (resnet56, eval mode, no gradient) run on every batch (uncached KD).
             The teacher's weights do not change the time; they are PyTorch's initialisation.
Only the training loop is timed (evaluation is not), as kdlab's metrics.jsonl `time_s`.
The model definitions are those of tests/reference/gen_models_resnet.py (bench/pytorch_bench.py loads them).

  /usr/bin/python3 bench/pytorch_epoch.py --bin train.bin --recipe recipes/cifar10_laptop.json \
      --loss ce|kd [--threads 2] [--teacher resnet56] [--limit N]
prints one JSON object: {"side": "pytorch", "loss": ..., "seconds": ..., "images": ..., ...}
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_bench import make_model  # noqa: E402  (the reference model definitions)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # datasets/transforms.cpp's CIFAR-10 normalisation
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def load_cifar_bin(path, limit):
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels from CIFAR-10's binary layout (1 + 3072 bytes)."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    if limit > 0:
        raw = raw[:limit]
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def augment(batch_u8, gen):
    """Random crop 32 of the 4-padded image and a horizontal flip with probability 1/2, per image."""
    B = batch_u8.size(0)
    padded = F.pad(batch_u8, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (B, 2), generator=gen)
    flips = torch.rand(B, generator=gen) < 0.5
    out = torch.empty_like(batch_u8)
    for b in range(B):
        i, j = int(offsets[b, 0]), int(offsets[b, 1])
        crop = padded[b, :, i:i + 32, j:j + 32]
        out[b] = crop.flip(2) if flips[b] else crop
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the training split in CIFAR-10's binary layout")
    ap.add_argument("--recipe", default="recipes/cifar10_laptop.json")
    ap.add_argument("--loss", choices=["ce", "kd"], default="ce")
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (a smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = json.load(open(args.recipe))
    assert recipe.get("schedule", "cosine") == "cosine" and recipe.get("optimizer", "sgd") == "sgd", \
        "pytorch_epoch.py follows SGD with a cosine schedule (the laptop recipes)"

    images, labels = load_cifar_bin(args.bin, args.limit)
    num_classes = int(labels.max()) + 1
    model = make_model(recipe["model"], num_classes)
    teacher = None
    if args.loss == "kd":
        teacher = make_model(args.teacher, num_classes)
        teacher.eval()
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() == 1 and recipe.get("no_decay_1d", False) else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe.get("nesterov", False))
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

    B = recipe["batch_size"]
    N = images.size(0)
    steps = math.ceil(N / B)
    total_steps = steps * recipe["epochs"]
    base_lr, min_lr = recipe["lr"], recipe.get("min_lr", 0.0)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(N, generator=gen)
    loss_sum, seen = 0.0, 0
    for k in range(steps):
        lr = min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * k / total_steps)) / 2
        for g in opt.param_groups:
            g["lr"] = lr
        idx = perm[k * B:(k + 1) * B]
        x = (augment(images[idx], gen).float() / 255.0 - mean) / std
        y = labels[idx]
        opt.zero_grad(set_to_none=True)
        zs, _ = model(x)
        if teacher is None:
            loss = F.cross_entropy(zs, y)
        else:
            with torch.no_grad():
                zt, _ = teacher(x)
            T = 4.0
            kl = F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="batchmean") * T * T
            loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * kl
        loss.backward()
        opt.step()
        loss_sum += loss.item() * y.numel()
        seen += y.numel()
    seconds = time.perf_counter() - t0
    print(json.dumps({"side": "pytorch", "framework": f"pytorch {torch.__version__}", "loss": args.loss,
                      "model": recipe["model"], "seconds": seconds, "images": seen, "images_per_s": seen / seconds,
                      "train_loss": loss_sum / seen, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
