#!/usr/bin/env bash
# scripts/check_numerics.sh [--record]: the run layer's numerics guard (issue "one run layer").
#
# Runs seven short trainings on one thread with a fixed seed on a small Fashion-MNIST subset
# (2 epochs each): a cross-entropy teacher (train), KD, DKD, FitNets two-stage, DGKD with one
# assistant, a fusion (dkd+at) and ACD-U (symmetric label noise; 5 epochs, so that its split,
# selection and unlearning phases all run), then compares every run's
# metrics.jsonl with the records committed in scripts/numerics_records/: losses (every loss_*
# column, train_loss, test_loss) equal to 1e-5 relative, accuracies identical. Times, image
# rates and the LR are not compared (the LR is a function of the step only and would show up in
# the losses).
#
#   --record   write the records instead of comparing (done once, before a change of the loop)
#
# Needs the build (build/ or $KDLAB_BUILD_DIR) and Fashion-MNIST (Debian's dataset-fashion-mnist,
# installed by scripts/setup.sh). About 1 minute on one core.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KDLAB="${KDLAB_BUILD_DIR:-$ROOT/build}/kdlab"
RECORDS="$ROOT/scripts/numerics_records"
RECORD=0
[ "${1:-}" = "--record" ] && RECORD=1
[ -x "$KDLAB" ] || { echo "check_numerics: $KDLAB not found: run scripts/setup.sh first" >&2; exit 2; }
FM=/usr/share/datasets/fashion-mnist
[ -d "$FM" ] || { echo "check_numerics: $FM missing: apt-get install dataset-fashion-mnist" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kdlab_numerics.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
COMMON=(--dataset fashion-mnist --data-dir "$FM" --batch-size 32 --lr 0.05
        --threads 1 --train-limit 512 --test-limit 256)
run() {  # run NAME ARGS...: one kdlab command into $WORK/NAME, quiet unless it fails
  local name="$1"; shift
  if ! "$KDLAB" "$@" > "$WORK/$name.log" 2>&1; then
    cat "$WORK/$name.log" >&2; echo "check_numerics: run $name failed" >&2; exit 1
  fi
}
run train train --model resnet14 "${COMMON[@]}" --epochs 2 --seed 0 --out "$WORK/train"
T=(--teacher resnet14 --teacher-weights "$WORK/train/model_last.safetensors" --student resnet8 "${COMMON[@]}" --epochs 2 --seed 0)
run assistant train --model resnet8 "${COMMON[@]}" --epochs 2 --seed 1 --out "$WORK/assistant"
run kd distill "${T[@]}" --method kd --out "$WORK/kd"
run dkd distill "${T[@]}" --method dkd --set beta=2 --set warmup=1 --out "$WORK/dkd"
run fitnet2st distill "${T[@]}" --method fitnet --set stages=2 --set hint_epochs=1 --out "$WORK/fitnet2st"
run dgkd distill "${T[@]}" --method dgkd --assistant "resnet8:$WORK/assistant/model_last.safetensors" --out "$WORK/dgkd"
run fusion distill "${T[@]}" --method dkd+at --set dkd.beta=2 --out "$WORK/fusion"
run acd_u distill --teacher resnet14 --teacher-weights "$WORK/train/model_last.safetensors" --student resnet8 \
    "${COMMON[@]}" --seed 0 --method acd_u --label-noise sym:0.4 --epochs 5 --set warmup=1 \
    --set select_start=2 --set select_every=1 --set forget_epochs=1 --set rampup=1 --out "$WORK/acd_u"

RUNS=(train assistant kd dkd fitnet2st dgkd fusion acd_u)
if [ $RECORD -eq 1 ]; then
  mkdir -p "$RECORDS"
  for r in "${RUNS[@]}"; do cp "$WORK/$r/metrics.jsonl" "$RECORDS/$r.jsonl"; done
  echo "check_numerics: records written to $RECORDS (${RUNS[*]})"
  exit 0
fi
python3 - "$RECORDS" "$WORK" "${RUNS[@]}" <<'PY'
import json, sys
records, work, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
SKIP = {"time_s", "images_per_s", "lr", "cache_build_s", "teacher_time_s"}
bad = 0
for r in runs:
    before = [json.loads(l) for l in open(f"{records}/{r}.jsonl")]
    after = [json.loads(l) for l in open(f"{work}/{r}/metrics.jsonl")]
    if len(before) != len(after):
        print(f"{r}: {len(before)} records before, {len(after)} after"); bad += 1; continue
    for b, a in zip(before, after):
        for k, vb in b.items():
            if k in SKIP or k.endswith("_s"):
                continue
            if k not in a:
                print(f"{r} epoch {b.get('epoch')}: column {k} missing after"); bad += 1; continue
            va = a[k]
            if "acc" in k or k == "epoch" or not isinstance(vb, float):
                if va != vb:
                    print(f"{r} epoch {b.get('epoch')}: {k} {vb} before, {va} after"); bad += 1
            elif abs(va - vb) > 1e-5 * max(abs(vb), 1e-12):
                print(f"{r} epoch {b.get('epoch')}: {k} {vb!r} before, {va!r} after "
                      f"(relative {abs(va - vb) / max(abs(vb), 1e-12):.2e})"); bad += 1
    print(f"{r}: {len(after)} epochs compared")
print(f"check_numerics: {'OK' if bad == 0 else f'{bad} differences'}")
sys.exit(1 if bad else 0)
PY
