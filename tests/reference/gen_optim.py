"""Golden trajectories of torch.optim.SGD / Adam / AdamW for tests/test_optim.cpp.

No model is involved: each case fixes the initial parameters and the gradient of every
parameter at every step (None = the parameter gets no gradient that step and must be skipped),
runs five optimizer steps in PyTorch, and records the parameters after each step and the
optimizer state at the end. Before step k every group's lr is set to initial_lr * lr_scale[k]
(what a schedule does). Run with Debian's python3-torch:
    /usr/bin/python3 tests/reference/gen_optim.py
"""
import torch

from golden import tensor_json, write

STEPS = 5
SHAPES = [(3, 4), (4,), (2, 3, 2)]  # a weight, a bias-like vector, a conv-like weight


def run_case(name, optimizer, groups, options, seed, none_grads=(), lr_scale=None, rtol=1e-5, atol=1e-7):
    """groups: [{"name", "params": [indices], "lr", "weight_decay", "momentum"}];
    none_grads: (step, param) pairs without a gradient."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(*s, generator=g).requires_grad_() for s in SHAPES]
    initial = [p.detach().clone() for p in params]
    grads = [[None if (k, i) in none_grads else torch.randn(*s, generator=g) * (0.5 + i)
              for i, s in enumerate(SHAPES)] for k in range(STEPS)]
    lr_scale = lr_scale or [1.0] * STEPS

    torch_groups = []
    for gr in groups:
        d = {"params": [params[i] for i in gr["params"]], "lr": gr["lr"], "weight_decay": gr["weight_decay"]}
        if optimizer == "SGD":
            d["momentum"] = gr["momentum"]
        torch_groups.append(d)
    if optimizer == "SGD":
        opt = torch.optim.SGD(torch_groups, lr=0.1, momentum=groups[0]["momentum"], dampening=options["dampening"], nesterov=options["nesterov"])
    else:
        cls = torch.optim.Adam if optimizer == "Adam" else torch.optim.AdamW
        opt = cls(torch_groups, lr=0.1, betas=(options["beta1"], options["beta2"]), eps=options["eps"])

    expected = []
    for k in range(STEPS):
        for gr, tg in zip(groups, opt.param_groups):
            tg["lr"] = gr["lr"] * lr_scale[k]
        for p, gk in zip(params, grads[k]):
            p.grad = None if gk is None else gk.clone()
        opt.step()
        expected.append([tensor_json(p) for p in params])

    state = []
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        entry = {}
        for key, v in st.items():
            if key == "step":
                entry["step"] = int(v)
            elif v is not None:
                entry[key] = tensor_json(v)
        state.append(entry)

    return {
        "name": name,
        "optimizer": optimizer,
        "options": options,
        "groups": groups,
        "lr_scale": lr_scale,
        "params": [tensor_json(p) for p in initial],
        "grads": [[tensor_json(gk) for gk in step] for step in grads],
        "expected": expected,
        "state": state,
        "rtol": rtol,
        "atol": atol,
    }


def one_group(lr, wd, momentum=0.0):
    return [{"name": "params", "params": [0, 1, 2], "lr": lr, "weight_decay": wd, "momentum": momentum}]


def two_groups(lr, wd, no_decay_lr, momentum=0.0):
    return [{"name": "decay", "params": [0, 2], "lr": lr, "weight_decay": wd, "momentum": momentum},
            {"name": "no_decay", "params": [1], "lr": no_decay_lr, "weight_decay": 0.0, "momentum": momentum}]


sgd = lambda dampening=0.0, nesterov=False: {"dampening": dampening, "nesterov": nesterov}
adam = lambda b1=0.9, b2=0.999, eps=1e-8: {"beta1": b1, "beta2": b2, "eps": eps}

cases = [
    run_case("sgd_momentum_wd", "SGD", one_group(0.1, 5e-4, 0.9), sgd(), seed=1),
    run_case("sgd_nesterov_wd", "SGD", one_group(0.1, 5e-4, 0.9), sgd(nesterov=True), seed=2),
    run_case("sgd_plain", "SGD", one_group(0.05, 0.0, 0.0), sgd(), seed=3),
    run_case("sgd_plain_wd", "SGD", one_group(0.05, 1e-2, 0.0), sgd(), seed=4),
    run_case("sgd_dampening", "SGD", one_group(0.1, 5e-4, 0.9), sgd(dampening=0.1), seed=5),
    run_case("adam_wd", "Adam", one_group(1e-2, 5e-4), adam(), seed=6),
    run_case("adam_betas_eps", "Adam", one_group(3e-3, 0.0), adam(0.8, 0.99, 1e-6), seed=7),
    run_case("adamw_wd", "AdamW", one_group(1e-2, 5e-2), adam(), seed=8),
    # parameter groups with different LRs, a no-decay group, skipped gradients and an LR schedule
    run_case("sgd_groups", "SGD", two_groups(0.1, 5e-4, 0.01, 0.9), sgd(nesterov=True), seed=9,
             none_grads={(0, 1), (2, 1), (3, 0)}, lr_scale=[1.0, 1.0, 0.5, 0.5, 0.1]),
    run_case("adam_groups", "Adam", two_groups(1e-2, 1e-3, 5e-3), adam(), seed=10,
             none_grads={(0, 2), (1, 1)}, lr_scale=[1.0, 0.8, 0.6, 0.4, 0.2]),
    run_case("adamw_groups", "AdamW", two_groups(1e-2, 5e-2, 2e-2), adam(), seed=11,
             none_grads={(1, 0), (4, 1)}, lr_scale=[0.5, 1.0, 1.0, 0.5, 0.25]),
]

write("golden_optim.json", cases)
