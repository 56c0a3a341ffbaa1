"""The PyTorch side of bench/compare_pytorch.sh: `kdlab bench` measured on PyTorch.

Same protocol as examples/cli/bench.cpp:
  training   one step = zero the gradients (set to None), forward, cross-entropy, backward, SGD step
             (lr 0.01, momentum 0.9, weight decay 5e-4) on a fixed random batch of B 3x32x32 images with
             100 classes; `warmup` steps first, then the median of `iters` timed steps
  inference  eval mode under torch.no_grad(), the forward pass alone, timed the same way
  peak RSS   resource.getrusage(RUSAGE_SELF).ru_maxrss at the end
The model definitions are the PyTorch modules of tests/reference/gen_models_<family>.py (the ones our
models are tested against, following mdistiller); only their class and function definitions are
loaded, the fixture-writing code of those scripts does not run.

  /usr/bin/python3 bench/pytorch_bench.py --model resnet20 --batch 64 --threads 2 [--iters 10 --warmup 3]
prints one JSON object with the keys `kdlab bench --json` prints.
"""
import argparse
import ast
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference")
FAMILIES = {  # model name -> the fixture script that defines it
    "resnet": "gen_models_resnet.py",
    "wrn": "gen_models_wrn.py",
    "mobilenetv2": "gen_models_mobile.py",
    "shufflenet": "gen_models_mobile.py",
}
FIXTURE_MODULES = {"golden", "model_fixture"}


def load_definitions(filename):
    """The imports, classes, functions and UPPER_CASE constants of a fixture script, run in a fresh namespace."""
    with open(os.path.join(REFERENCE, filename)) as f:
        tree = ast.parse(f.read(), filename)
    namespace = {"__name__": "kdlab_bench_models"}
    for node in tree.body:
        if isinstance(node, ast.Import):
            keep = all(a.name not in FIXTURE_MODULES for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            keep = node.module not in FIXTURE_MODULES
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            keep = True
        elif isinstance(node, ast.Assign):
            names = [n for t in node.targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
            keep = all(isinstance(n, ast.Name) and n.id.isupper() for n in names)
        else:
            keep = False
        if not keep:
            continue
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), filename, "exec"), namespace)
        except NameError:  # a constant built from fixture helpers: not needed for the models
            pass
    return namespace


def make_model(name, num_classes=100):
    family = next(f for f in FAMILIES if name.startswith(f))
    return load_definitions(FAMILIES[family])["maker"](name, num_classes)()


def time_steps(warmup, iters, step):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def count_macs(model):
    """Forward multiply-accumulates of conv and linear layers for one 3x32x32 image (as nn::describe_model)."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            macs += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    model.train(was_training)
    for h in handles:
        h.remove()
    return macs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-gflops", type=float, default=0.0)
    ap.add_argument("--phase", choices=["train", "infer", "both"], default="both",
                    help="one phase alone, e.g. for a profiler")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = make_model(args.model)
    macs = count_macs(model)
    x = torch.randn(args.batch, 3, 32, 32)
    labels = torch.randint(0, 100, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step():
        opt.zero_grad(set_to_none=True)
        logits, _ = model(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            model(x)

    nan = float("nan")
    model.train()
    train_s = statistics.median(time_steps(args.warmup, args.iters, train_step)) if args.phase != "infer" else nan
    model.eval()
    infer_s = statistics.median(time_steps(args.warmup, args.iters, infer_step)) if args.phase != "train" else nan
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    train_gflops = 3 * 2 * macs * args.batch / train_s / 1e9
    infer_gflops = 2 * macs * args.batch / infer_s / 1e9
    peak = args.peak_gflops
    result = {
        "framework": f"pytorch {torch.__version__}",
        "model": args.model,
        "backend": "pytorch",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "iters": args.iters,
        "macs_per_image": macs,
        "train_step_ms": train_s * 1e3,
        "train_images_per_s": args.batch / train_s,
        "infer_batch_ms": infer_s * 1e3,
        "infer_images_per_s": args.batch / infer_s,
        "peak_rss_mib": rss_mib,
        "train_gflops": train_gflops,
        "infer_gflops": infer_gflops,
        "sgemm_peak_gflops": peak,
        "train_fraction_of_peak": train_gflops / peak if peak > 0 else None,
        "infer_fraction_of_peak": infer_gflops / peak if peak > 0 else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
