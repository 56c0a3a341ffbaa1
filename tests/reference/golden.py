"""Shared helpers for the reference scripts that write golden fixtures.

Each generator builds a list of cases with `case(...)`: inputs (torch tensors; float inputs
with requires_grad get gradients), the outputs PyTorch computes, a random upstream gradient for
output 0, and the input gradients. `write(path, cases)` writes tests/fixtures/<path> as JSON,
which the C++ tests read with kdtest::run_golden_file. Run with Debian's python3-torch:
    /usr/bin/python3 tests/reference/gen_<area>.py
"""
import json
import math
import os

import torch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def _num(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def tensor_json(t, requires_grad=False):
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    dtype = {torch.float32: "float32", torch.int64: "int64", torch.uint8: "uint8"}[t.dtype]
    data = t.reshape(-1).tolist()
    if dtype == "float32":
        data = [_num(float(v)) for v in data]
    out = {"shape": list(t.shape), "dtype": dtype, "data": data}
    if requires_grad:
        out["requires_grad"] = True
    return out


def case(name, op, fn, inputs, params=None, rtol=1e-5, atol=1e-6, grad=True, seed=0, **extra):
    """Run fn(*inputs, **params) in PyTorch and record outputs and gradients.

    inputs: list of tensors (or None). Float tensors are made leaves that require grad unless
    grad=False or the tensor is listed in extra["no_grad"] (indices).
    fn must return a tensor or a tuple of tensors; output 0 is the one backpropagated.
    """
    params = params or {}
    no_grad = set(extra.pop("no_grad", []))
    leaves = []
    for i, t in enumerate(inputs):
        if t is None:
            leaves.append(None)
            continue
        t = t.detach().clone()
        if grad and t.dtype == torch.float32 and i not in no_grad:
            t.requires_grad_(True)
        leaves.append(t)
    outs = fn(*leaves, **params)
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    c = {
        "name": name,
        "op": op,
        "params": params,
        "inputs": [tensor_json(t, t is not None and t.requires_grad) for t in leaves],
        "outputs": [tensor_json(o) for o in outs],
        "rtol": rtol,
        "atol": atol,
    }
    c.update(extra)
    if grad and outs[0].requires_grad:
        g = torch.Generator().manual_seed(seed + 7)
        go = torch.randn(outs[0].shape, generator=g)
        outs[0].backward(go)
        c["grad_outputs"] = [tensor_json(go)]
        c["grads"] = [tensor_json(t.grad) if (t is not None and t.requires_grad and t.grad is not None) else None
                      for t in leaves]
    return c


def write(name, cases):
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, name)
    with open(path + ".tmp", "w") as f:
        json.dump({"generator": "tests/reference", "torch": torch.__version__, "cases": cases}, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: {len(cases)} cases")
