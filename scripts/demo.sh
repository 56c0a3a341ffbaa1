#!/usr/bin/env bash
# scripts/demo.sh: set up (packages, build), then run the distillation demo:
#   on Fashion-MNIST (Debian's dataset-fashion-mnist; the synthetic set when it is missing),
#   1. train a teacher (resnet14) with kdlab,
#   2. train three resnet8 students: a baseline with cross-entropy only, KD (Hinton: T 4, CE 0.1,
#      KD 0.9) and DKD (alpha 1, beta 2, T 4, warm-up 1 epoch), the two distilled ones reading
#      the teacher's logits from one shared teacher cache,
#   3. print a comparison table and write runs/demo/accuracy.png (bars) and curves.png.
# About 3-4 minutes on a 2-core laptop once built. Every run's full record is in runs/demo/<run>.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$KDLAB_ROOT/scripts/setup.sh"
KDLAB="${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}/kdlab"
OUT="${KDLAB_DEMO_OUT:-$KDLAB_ROOT/runs/demo}"
rm -rf "$OUT"
mkdir -p "$OUT"

"${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}/engine_example" | tail -3   # the engine on its own

if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  DATA=(--dataset fashion-mnist)
else
  echo "Fashion-MNIST not found: using the synthetic data set"
  DATA=(--dataset synthetic)
fi
COMMON=(--epochs 5 --batch-size 64 --lr 0.05 --set train_subset=12000 --test-limit 2000 --threads "$(nproc)")
TEACHER=(--teacher resnet14 --teacher-weights "$OUT/teacher_resnet14/model_last.safetensors"
         --teacher-cache --cache-views 4 --cache-dir "$OUT/teacher_cache")
quiet() { grep -E "^(epoch [0-9]+/[0-9]+:|done|teacher )" || true; }

echo "== teacher resnet14";    "$KDLAB" train --model resnet14 "${DATA[@]}" "${COMMON[@]}" --seed 0 --out "$OUT/teacher_resnet14" | quiet
echo "== baseline resnet8";    "$KDLAB" train --model resnet8 "${DATA[@]}" "${COMMON[@]}" --seed 1 --out "$OUT/baseline_resnet8" | quiet
echo "== KD resnet8";          "$KDLAB" distill --student resnet8 --method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9 \
                                 "${TEACHER[@]}" "${DATA[@]}" "${COMMON[@]}" --seed 1 --out "$OUT/kd_resnet8" | quiet
echo "== DKD resnet8";         "$KDLAB" distill --student resnet8 --method dkd --set alpha=1 --set beta=2 --set T=4 --set warmup=1 \
                                 "${TEACHER[@]}" "${DATA[@]}" "${COMMON[@]}" --seed 1 --out "$OUT/dkd_resnet8" | quiet
RUNS=(teacher_resnet14 baseline_resnet8 kd_resnet8 dkd_resnet8)
"$KDLAB" plot "${RUNS[@]/#/$OUT/}" --out "$OUT/curves.png" --bars "$OUT/accuracy.png" --title "Fashion-MNIST demo" > /dev/null

echo
printf '%-20s %10s %10s %12s\n' run "last acc" "best acc" "s/epoch"
for run in "${RUNS[@]}"; do
  last=$(tail -n 1 "$OUT/$run/metrics.jsonl")
  num() { echo "$last" | grep -o "\"$1\":[-0-9.eE+]*" | cut -d: -f2; }
  printf '%-20s %9.2f%% %9.2f%% %12.1f\n' "$run" "$(echo "$(num test_acc) * 100" | bc -l)" \
    "$(echo "$(num best_acc) * 100" | bc -l)" "$(num time_s)"
done
echo "charts: $OUT/accuracy.png $OUT/curves.png"
