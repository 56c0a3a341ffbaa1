#!/usr/bin/env python3
"""The modality-focusing control of docs/RESULTS.md (issue #30): the rgb teacher's test accuracy
and the gray student's gain from KD for each cue probability p, as a markdown table and a plot.

    /usr/bin/python3 scripts/mfh_table.py [RUNS] [--plot FILE.png]

Reads the runs of scripts/experiments_cross_modal.sh: RUNS/xm_mfh_<p>_seed<s> (KD from the
teacher trained with the cue in a fraction p of the images; the teacher's test accuracy, on test
images carrying the cue at the same p, is in its config.json) and RUNS/xm_gray_seed<s> (the gray
baseline, the same for every p: luminance cannot see the cue). Accuracies are the last epoch's.
"""
import glob
import json
import os
import statistics
import sys


def last_acc(run):
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
    return 100.0 * lines[-1]["test_acc"]


def main():
    args = [a for a in sys.argv[1:]]
    plot = None
    if "--plot" in args:
        i = args.index("--plot")
        plot = args[i + 1]
        del args[i:i + 2]
    runs = args[0] if args else "runs"
    base = {}
    for r in glob.glob(os.path.join(runs, "xm_gray_seed*")):
        if os.path.exists(os.path.join(r, "model_last.safetensors")):
            base[int(r.rsplit("seed", 1)[1])] = last_acc(r)
    probs = {"p0": 0.0, "p05": 0.5, "p1": 1.0}
    rows = []
    for tag, p in probs.items():
        students, teachers, gains = [], [], []
        for r in sorted(glob.glob(os.path.join(runs, f"xm_mfh_{tag}_seed*"))):
            if not os.path.exists(os.path.join(r, "model_last.safetensors")):
                continue
            seed = int(r.rsplit("seed", 1)[1])
            acc = last_acc(r)
            students.append(acc)
            cfg = json.load(open(os.path.join(r, "config.json")))
            teachers.append(100.0 * cfg["distillation"]["teacher_test_accuracy"])
            if seed in base:
                gains.append(acc - base[seed])
        if students:
            rows.append((p, teachers[0], students, gains))
    if not base or not rows:
        sys.exit(f"mfh_table: no finished runs under {runs} (scripts/experiments_cross_modal.sh)")

    def ms(v):
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    print(f"gray baseline (no teacher): {ms(list(base.values()))}% over seeds {sorted(base)}")
    print("| cue probability p | rgb teacher test acc (%) | gray student, KD (%) | seeds | gain over the gray baseline |")
    print("|---|---|---|---|---|")
    for p, t, s, g in rows:
        print(f"| {p} | {t:.2f} | {ms(s)} | {len(s)} | {('+' if statistics.mean(g) >= 0 else '') + ms(g) if g else 'n/a'} |")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ps = [r[0] for r in rows]
        ax.plot(ps, [r[1] for r in rows], "o-", label="rgb teacher accuracy (%)")
        ax.set_xlabel("cue probability p")
        ax.set_ylabel("teacher accuracy (%)")
        ax2 = ax.twinx()
        ax2.errorbar(ps, [statistics.mean(r[3]) if r[3] else float("nan") for r in rows],
                     yerr=[statistics.stdev(r[3]) if len(r[3]) > 1 else 0 for r in rows], fmt="s--", color="C1",
                     label="gray student's KD gain (points)")
        ax2.set_ylabel("student gain (points)")
        fig.legend(loc="lower center", fontsize=8)
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"plot: {plot}")


main()
