"""Whole-model fixtures for the model zoo (used by gen_models_<family>.py).

For a PyTorch model that mirrors a kdlab model, `model_info` records the state-dict names and
shapes (in order) and the parameter count; `model_run` fills the model with golden.det_fill,
runs golden.det_input through it in eval mode and, separately with fresh values, in train mode,
and records fingerprints of logits, every feats / preact_feats tap and pooled; in train mode
also the gradient of every parameter after backpropagating
    (logits * det_uniform(99, numel).reshape(logits.shape)).sum()
and the updated running statistics of the BatchNorms named in `bns`.

The model's forward must return (logits, {"feats": [...], "preact_feats": [...], "pooled_feat": t})
as mdistiller's models do.
"""
import numpy as np
import torch

import golden
from golden import det_fill, det_input, fingerprint, fnv1a

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _det_uniform_fast(seed, n):
    """golden.det_uniform vectorised with numpy's wrapping uint64 arithmetic (bit-identical)."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed) ^ np.arange(n, dtype=np.uint64)
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0) * 2.0 - 1.0
    return torch.tensor(u.astype(np.float32))


# The pure-Python det_uniform takes minutes for a 10M-parameter model; use the vectorised one
# after checking that both agree bit for bit.
for _seed, _n in [(fnv1a("input"), 1000), (12345, 777), (fnv1a("layer1.0.conv1.weight"), 2304), (99, 64)]:
    assert torch.equal(golden.det_uniform(_seed, _n), _det_uniform_fast(_seed, _n)), "det_uniform mismatch"
golden.det_uniform = _det_uniform_fast


def _round(x):
    """Keep 9 significant digits (float32 needs at most 9): halves the fixture size."""
    if isinstance(x, float):
        return float(f"{x:.9g}")
    if isinstance(x, list):
        return [_round(v) for v in x]
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def fp(t):
    f = fingerprint(t)
    f["shape"] = list(t.shape)
    return _round(f)


def model_info(model):
    state = [[name, list(t.shape)] for name, t in model.state_dict().items()]
    return {"param_count": sum(p.numel() for p in model.parameters()), "state": state}


def _taps(logits, feats):
    return {
        "logits": fp(logits),
        "feats": [fp(t) for t in feats["feats"]],
        "preact_feats": [fp(t) for t in feats["preact_feats"]],
        "pooled": fp(feats["pooled_feat"]),
    }


def model_run(name, make, model_name, num_classes, in_channels, image_size, batch=2, train=True, grads=True,
              bns=(), rtol=1e-4, grad_rtol=1e-4, vanishing=()):
    """One fixture run: `make()` builds the PyTorch model with the given classes and channels.

    vanishing: names of parameters whose gradient is zero in exact arithmetic (a conv bias
    followed by a training-mode BatchNorm, which subtracts it again with the batch mean). Their
    computed gradient is rounding noise, so instead of a fingerprint the fixture holds a bound,
    1e-5 of the largest gradient entry of the model, that |grad| must stay under.
    """
    shape = (batch, in_channels, image_size, image_size)
    run = {"name": name, "model": model_name, "num_classes": num_classes, "in_channels": in_channels,
           "image_size": image_size, "input_shape": list(shape), "rtol": rtol, "grad_rtol": grad_rtol}

    torch.manual_seed(0)
    model = make()
    det_fill(model)
    model.eval()
    with torch.no_grad():
        logits, feats = model(det_input(shape))
    run["eval"] = _taps(logits, feats)

    if train:
        model = make()
        det_fill(model)
        model.train()
        logits, feats = model(det_input(shape))
        out = _taps(logits, feats)
        if grads:
            w = golden.det_uniform(99, logits.numel()).reshape(logits.shape)
            (logits * w).sum().backward()
            scale = max(float(p.grad.abs().max()) for p in model.parameters())
            out["grads"] = []
            for n, p in model.named_parameters():
                if n in vanishing:
                    bound = 1e-5 * scale
                    assert float(p.grad.abs().max()) < 0.1 * bound, f"{name}: gradient of {n} is not ~0"
                    out["grads"].append([n, {"vanishing": True, "shape": list(p.shape), "bound": _round(bound)}])
                else:
                    out["grads"].append([n, fp(p.grad)])
        state = model.state_dict()
        out["bn"] = {
            bn: {
                "running_mean": fp(state[bn + ".running_mean"]),
                "running_var": fp(state[bn + ".running_var"]),
                "num_batches_tracked": int(state[bn + ".num_batches_tracked"]),
            }
            for bn in bns
        }
        run["train"] = out
    return run


def write_models(fixture_name, models, runs):
    """tests/fixtures/<fixture_name>: {"models": {name: model_info}, "runs": [model_run, ...]}."""
    import json
    import os

    os.makedirs(golden.FIXTURES, exist_ok=True)
    path = os.path.join(golden.FIXTURES, fixture_name)
    with open(path + ".tmp", "w") as f:
        json.dump({"generator": "tests/reference", "torch": torch.__version__, "models": models, "runs": runs}, f,
                  separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: {len(models)} models, {len(runs)} runs, {os.path.getsize(path) // 1024} KiB")
