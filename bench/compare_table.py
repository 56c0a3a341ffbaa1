"""The table of bench/compare_pytorch.sh from its JSON lines (one per run of `kdlab bench --json` or
bench/pytorch_bench.py): per model, the median over rounds of each side, and the ratios ours / PyTorch.

  /usr/bin/python3 bench/compare_table.py results.jsonl [--markdown]
"""
import json
import statistics
import sys


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    models = list(dict.fromkeys(r["model"] for r in runs))
    sides = list(dict.fromkeys(r["backend"] for r in runs))  # cpu, onednn, pytorch

    def values(model, side, key):
        return [r[key] for r in runs if r["model"] == model and r["backend"] == side and r.get(key) is not None]

    def med(model, side, key):
        v = values(model, side, key)
        return statistics.median(v) if v else None

    ours = [s for s in sides if s != "pytorch"]
    header = ["model", "metric"] + ours + ["pytorch"] + [f"{s}/pytorch" for s in ours]
    rows = []
    for m in models:
        for key, label in [("train_images_per_s", "train img/s"), ("infer_images_per_s", "infer img/s"),
                           ("peak_rss_mib", "peak RSS MiB"), ("train_fraction_of_peak", "train % sgemm peak"),
                           ("infer_fraction_of_peak", "infer % sgemm peak")]:
            vals = {s: med(m, s, key) for s in sides}
            pct = "%" in label
            one = (lambda v: f"{100 * v:.0f}%" if pct else f"{v:.1f}")

            def cell(s):  # the median, and [min-max] when there are several rounds
                v = values(m, s, key)
                if not v:
                    return "-"
                spread = f" [{one(min(v))}-{one(max(v))}]" if len(v) > 1 and not pct else ""
                return one(statistics.median(v)) + spread
            ratio = [("-" if pct or vals[s] is None or not vals.get("pytorch") else f"{vals[s] / vals['pytorch']:.2f}x")
                     for s in ours]
            rows.append([m, label] + [cell(s) for s in ours] + [cell("pytorch")] + ratio)
    n = sum(1 for r in runs if r["backend"] == "pytorch")
    print(f"\n{len(runs)} runs ({n} PyTorch); medians over rounds [min-max]; ratios = ours / PyTorch (of the medians; "
          "for RSS, lower is better)\n")
    if "--markdown" in sys.argv:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for r in [header] + rows:
            print("  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
