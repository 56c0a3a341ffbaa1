#!/usr/bin/env bash
# scripts/demo.sh: set up (packages, build), then run the main job:
#   on Fashion-MNIST (Debian's dataset-fashion-mnist; the synthetic set when it is missing),
#   train a small teacher (resnet14) and a baseline student (resnet8) with kdlab, print a
#   comparison table and write the training curves to runs/demo/curves.png.
# The distillation issue turns this into the distillation demo (KD and DKD students).
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$KDLAB_ROOT/scripts/setup.sh"
KDLAB="${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}/kdlab"
OUT="${KDLAB_DEMO_OUT:-$KDLAB_ROOT/runs/demo}"

"${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}/engine_example" | tail -3   # the engine on its own

if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  DATA=(--dataset fashion-mnist)
else
  echo "Fashion-MNIST not found: using the synthetic data set"
  DATA=(--dataset synthetic)
fi
COMMON=(--epochs 3 --batch-size 64 --lr 0.05 --train-limit 6000 --test-limit 2000 --threads "$(nproc)" --seed 0)

"$KDLAB" train --model resnet14 "${DATA[@]}" "${COMMON[@]}" --out "$OUT/teacher_resnet14"
"$KDLAB" train --model resnet8 "${DATA[@]}" "${COMMON[@]}" --out "$OUT/student_resnet8"
"$KDLAB" plot "$OUT/teacher_resnet14" "$OUT/student_resnet8" --out "$OUT/curves.png"

echo
printf '%-22s %10s %10s %12s\n' run "last acc" "best acc" "s/epoch"
for run in teacher_resnet14 student_resnet8; do
  last=$(tail -n 1 "$OUT/$run/metrics.jsonl")
  num() { echo "$last" | grep -o "\"$1\":[-0-9.eE+]*" | cut -d: -f2; }
  printf '%-22s %9.2f%% %9.2f%% %12.1f\n' "$run" "$(echo "$(num test_acc) * 100" | bc -l)" \
    "$(echo "$(num best_acc) * 100" | bc -l)" "$(num time_s)"
done
echo "curves: $OUT/curves.png"
