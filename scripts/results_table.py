#!/usr/bin/env python3
"""Markdown table of CIFAR-10 experiment runs (scripts/experiments_cifar10.sh): for each method,
last and best test accuracy as mean ± std over its seeds, and the median seconds per epoch.

    scripts/results_table.py [RUNS_DIR]        (default: runs)
"""
import json, os, re, statistics, sys

runs_dir = sys.argv[1] if len(sys.argv) > 1 else "runs"
groups = {}
for name in sorted(os.listdir(runs_dir)):
    m = re.match(r"c10_(.+)_seed(\d+)$", name)
    path = os.path.join(runs_dir, name, "metrics.jsonl")
    if not m or not os.path.exists(path):
        continue
    lines = [json.loads(l) for l in open(path) if l.strip()]
    cfg = json.load(open(os.path.join(runs_dir, name, "config.json")))
    if not lines or lines[-1]["epoch"] != cfg["config"]["epochs"]:
        continue  # unfinished
    groups.setdefault(m.group(1), []).append({
        "seed": int(m.group(2)),
        "last": 100 * lines[-1]["test_acc"],
        "best": 100 * max(l["test_acc"] for l in lines),
        "s_epoch": statistics.median(l["time_s"] for l in lines),
        "model": cfg["config"]["model"],
    })

def ms(xs):
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"

print("| run | student | seeds | last test acc (%) | best test acc (%) | median s/epoch |")
print("|---|---|---|---|---|---|")
for name, rs in groups.items():
    print(f"| {name} | {rs[0]['model']} | {','.join(str(r['seed']) for r in rs)} | {ms([r['last'] for r in rs])} | "
          f"{ms([r['best'] for r in rs])} | {statistics.median(r['s_epoch'] for r in rs):.1f} |")
