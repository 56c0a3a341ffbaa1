"""Learning rates of PyTorch's schedulers (and mdistiller's rule) for tests/test_schedule.cpp.

Each case records the LR a torch optimizer holds at every iteration (or epoch) of a run when
the scheduler is stepped as usual: per iteration (scheduler.step() after each batch) or per
epoch (after each epoch). The cosine-with-warm-up rule has no single torch class; it is computed
here from its formula and cross-checked against torch's LinearLR (warm-up part) and
CosineAnnealingLR's closed form (annealing part). Run with Debian's python3-torch:
    /usr/bin/python3 tests/reference/gen_schedule.py
"""
import math

import numpy as np
import torch

from golden import write


def optimizer(lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)


def record(opt, sched, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def base(kind, lr, per_iteration, **kw):
    s = {"kind": kind, "base_lr": lr, "per_iteration": per_iteration}
    s.update(kw)
    return s


cases = []

# MultiStepLR stepped per epoch: mdistiller's CIFAR recipe (240 epochs, x0.1 at 150, 180, 210).
opt = optimizer(0.05)
sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[150, 180, 210], gamma=0.1)
cases.append({"name": "multistep_mdistiller", "schedule": base("multistep", 0.05, False, milestones=[150, 180, 210],
                                                                   gamma=0.1),
              "iters_per_epoch": 3, "epochs": 240, "per_epoch_values": True, "lrs": record(opt, sched, 240)})
opt = optimizer(0.1)
sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5, 5, 9], gamma=0.5)  # a repeated milestone
cases.append({"name": "multistep_repeated", "schedule": base("multistep", 0.1, False, milestones=[2, 5, 5, 9],
                                                                 gamma=0.5),
              "iters_per_epoch": 4, "epochs": 12, "per_epoch_values": True, "lrs": record(opt, sched, 12)})

# OneCycleLR with its defaults, per iteration (6 epochs x 50 iterations) and per epoch.
opt = optimizer(0.1)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=300)
cases.append({"name": "onecycle_per_iteration", "schedule": base("onecycle", 0.1, True, total_epochs=6),
              "iters_per_epoch": 50, "epochs": 6, "per_epoch_values": False, "lrs": record(opt, sched, 300)})
opt = optimizer(0.2)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=30)
cases.append({"name": "onecycle_per_epoch", "schedule": base("onecycle", 0.2, False, total_epochs=30),
              "iters_per_epoch": 7, "epochs": 30, "per_epoch_values": True, "lrs": record(opt, sched, 30)})
opt = optimizer(0.5)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=7 * 37, pct_start=0.25, div_factor=10.0,
                                            final_div_factor=100.0, three_phase=True)
cases.append({"name": "onecycle_three_phase", "schedule": base("onecycle", 0.5, True, total_epochs=7, pct_start=0.25,
                                                                   div_factor=10.0, final_div_factor=100.0,
                                                                   three_phase=True),
              "iters_per_epoch": 37, "epochs": 7, "per_epoch_values": False, "lrs": record(opt, sched, 7 * 37)})


def warmup_cosine(base_lr, min_lr, warmup, total, f0, s, anneal=True):
    if s < warmup:
        return base_lr * (f0 + (1 - f0) * s / warmup)
    if not anneal:
        return base_lr
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / (total - warmup))))


# Cross-check the formula with torch: LinearLR for the warm-up, CosineAnnealingLR's closed form after it.
W, S, F0, LR, MIN = 40, 320, 0.1, 0.3, 1e-3
opt = optimizer(LR)
lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=F0, total_iters=W)
for s, v in enumerate(record(opt, lin, W)):
    assert abs(v - warmup_cosine(LR, MIN, W, S, F0, s)) < 1e-12, (s, v)
opt = optimizer(LR)
cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=S - W, eta_min=MIN)
for s in range(W, S):
    v = cos._get_closed_form_lr()[0] if hasattr(cos, "_get_closed_form_lr") else None
    assert v is None or abs(v - warmup_cosine(LR, MIN, W, S, F0, s)) < 1e-12, (s, v)
    opt.step()
    cos.step()

# The teacher's recipe shape: 1 epoch linear warm-up from 0, cosine to 0, per iteration (8 x 40).
cases.append({"name": "cosine_warmup_per_iteration", "schedule": base("cosine", 0.3, True, total_epochs=8,
                                                                          warmup_epochs=1),
              "iters_per_epoch": 40, "epochs": 8, "per_epoch_values": False,
              "lrs": [warmup_cosine(0.3, 0.0, 40, 320, 0.0, s) for s in range(320)]})
cases.append({"name": "cosine_warmup_min_lr_per_epoch", "schedule": base("cosine", 0.1, False, total_epochs=20,
                                                                             warmup_epochs=2, min_lr=1e-3,
                                                                             warmup_start_factor=0.1),
              "iters_per_epoch": 5, "epochs": 20, "per_epoch_values": True,
              "lrs": [warmup_cosine(0.1, 1e-3, 2, 20, 0.1, s) for s in range(20)]})
cases.append({"name": "cosine_no_warmup", "schedule": base("cosine", 0.05, True, total_epochs=5),
              "iters_per_epoch": 10, "epochs": 5, "per_epoch_values": False,
              "lrs": [warmup_cosine(0.05, 0.0, 0, 50, 0.0, s) for s in range(50)]})
# Linear warm-up alone (PyTorch's LinearLR, then constant), per iteration.
opt = optimizer(0.4)
lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=24)
cases.append({"name": "warmup_linear", "schedule": base("warmup", 0.4, True, warmup_epochs=2,
                                                          warmup_start_factor=0.25),
              "iters_per_epoch": 12, "epochs": 5, "per_epoch_values": False, "lrs": record(opt, lin, 60)})


# mdistiller's adjust_learning_rate (mdistiller/engine/utils.py), epochs counted from 1.
def mdistiller_adjust(epoch, lr, stages, rate):
    steps = np.sum(epoch > np.asarray(stages))
    if steps > 0:
        return lr * (rate ** steps)
    return lr


cases.append({"name": "mdistiller_adjust_learning_rate", "mdistiller": True, "base_lr": 0.05,
              "stages": [150, 180, 210], "rate": 0.1,
              "lrs": [float(mdistiller_adjust(e, 0.05, [150, 180, 210], 0.1)) for e in range(1, 241)]})

write("golden_schedule.json", cases)
