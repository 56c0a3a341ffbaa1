#!/usr/bin/env bash
# Estimates the wall time of every full CIFAR-100 recipe (recipes/cifar100/*.json) on this
# machine from measured step times, and writes the table into recipes/cifar100/README.md.
#
#   scripts/cifar100_recipe_costs.sh CIFAR100_DIR [STEPS]
#
# It runs the recipes' end-to-end test (tests/test_recipes.cpp, "every CIFAR-100 recipe trains
# its steps end to end") with KDLAB_RECIPE_COST_STEPS=STEPS (default 12) training steps per recipe
# on the recipe's real models, method, batch size and thread setting (random teacher weights),
# reads each recipe's training images/s, and estimates
#     hours = epochs x 50,000 images / (images/s) / 3600
# (training only; the per-epoch test pass adds about one forward pass over 10,000 images).
# Time it on a quiet machine: stop other jobs first (kill -STOP), and resume them after.
set -euo pipefail
DATA=${1:?usage: scripts/cifar100_recipe_costs.sh CIFAR100_DIR [STEPS]}
STEPS=${2:-12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KDLAB_BUILD_DIR:-$ROOT/build}
OUT=$(mktemp /tmp/kdlab_recipe_costs.XXXXXX.jsonl)
trap 'rm -f "$OUT"' EXIT
KDLAB_CIFAR100_DIR="$DATA" KDLAB_RECIPE_COST_OUT="$OUT" KDLAB_RECIPE_COST_STEPS="$STEPS" \
  "$BUILD/tests/test_recipes" -tc="*CIFAR-100 present*" > /dev/null
/usr/bin/env python3 - "$OUT" "$ROOT/recipes/cifar100/README.md" "$STEPS" <<'EOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
readme, steps = sys.argv[2], sys.argv[3]
cpu = "unknown CPU"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
lines = ["| recipe | batch | epochs | measured images/s | estimated hours (training) |", "|---|---|---|---|---|"]
total = 0.0
for r in sorted(rows, key=lambda r: r["recipe"]):
    hours = r["epochs"] * r["train_images"] / r["images_per_s"] / 3600.0
    total += hours
    lines.append(f"| {r['recipe']} | {r['batch_size']} | {r['epochs']} | {r['images_per_s']:.0f} | {hours:.1f} |")
table = "\n".join(lines)
summary = (f"Measured with `scripts/cifar100_recipe_costs.sh DIR {steps}` ({steps} training steps per recipe, "
           f"{os.cpu_count()} cores, {cpu}): {len(rows)} recipes, {total:.0f} hours in all.")
text = open(readme).read()
begin, end = "<!-- costs:begin -->", "<!-- costs:end -->"
i, j = text.index(begin) + len(begin), text.index(end)
open(readme + ".tmp", "w").write(text[:i] + "\n" + summary + "\n\n" + table + "\n" + text[j:])
os.replace(readme + ".tmp", readme)
print(summary)
EOF
