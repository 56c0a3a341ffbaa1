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


# ---------------------------------------------------------------------------------------------
# Deterministic values both sides compute, and tensor fingerprints, for whole-model fixtures.
#
# Model weights are not shipped: every parameter/buffer named n gets values from
# det_uniform(fnv1a(n), i) in [-1, 1) (scaled per kind by the scripts), which the C++ tests
# reproduce bit for bit (kdtest::det_uniform). Large outputs are compared by fingerprint: sum,
# sum of |x|, a dot product with det_uniform(12345, i), and 32 evenly spaced samples.

MASK = (1 << 64) - 1


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def det_uniform(seed, n):
    """n float32 values in [-1, 1): u_i = splitmix64(seed ^ i) / 2^64 * 2 - 1 (via 53 bits)."""
    import numpy as np
    vals = [((splitmix64((seed ^ i) & MASK) >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0 for i in range(n)]
    return torch.tensor(np.array(vals, dtype=np.float32))


def fingerprint(t):
    t = t.detach().reshape(-1).double()
    n = t.numel()
    r = det_uniform(12345, n).double()
    idx = [(k * n) // 32 for k in range(32)] if n > 0 else []
    return {
        "shape": None,  # filled by caller when useful
        "numel": n,
        "sum": float(t.sum()),
        "abs_sum": float(t.abs().sum()),
        "dot": float((t * r).sum()),
        "samples": [float(t[i]) for i in idx],
    }


def det_value_tensor(name, shape):
    """The deterministic value of the state-dict entry `name` (see det_fill)."""
    n = 1
    for s in shape:
        n *= s
    u = det_uniform(fnv1a(name), n).reshape(shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        return 0.75 + 0.25 * u
    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        return u * (3.0 / fan_in) ** 0.5
    if name.endswith("weight"):  # 1-D weights: norm layers
        return 1.0 + 0.1 * u
    return 0.1 * u  # biases, running_mean, other vectors


def det_fill(model):
    """Overwrite every parameter and buffer of `model` with det_value_tensor(name, shape)."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(det_value_tensor(name, list(t.shape)).to(t.dtype))


def det_input(shape):
    n = 1
    for s in shape:
        n *= s
    return det_uniform(fnv1a("input"), n).reshape(shape)
