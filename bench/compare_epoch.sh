#!/usr/bin/env bash
# bench/compare_epoch.sh: one epoch of the laptop recipe end to end, kdlab against PyTorch.
#
# kdlab: `kdlab train` (cross-entropy) and `kdlab distill --method kd` without the teacher cache
# (the resnet56 teacher runs on every batch), one epoch of recipes/cifar10_laptop.json on the
# JPEG archive, as a user runs them; the time is the epoch's training time that kdlab records
# (metrics.jsonl `time_s`: data loading, augmentation, forward, backward, optimizer; evaluation
# excluded). PyTorch: bench/pytorch_epoch.py, the same recipe in a plain loop on the training
# split preloaded as a tensor (decoded once by `kdlab data pack`), augmentation in the loop.
# The four runs are interleaved --rounds times (default 5), each in a fresh process; the table
# gives the median and the min-max of each side and the ratio of medians (PyTorch s / kdlab s:
# above 1 means kdlab is faster).
#
#   bench/compare_epoch.sh [--data cifar10-jpg.tar.gz] [--teacher W.safetensors] [--rounds 5]
#       [--threads 2] [--kdlab build/kdlab] [--limit N] [--out FILE.jsonl]
#
# --limit N trains on the first N images only (a smoke test, not a result). Run it on a quiet
# machine: the load average is printed before and after.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.."
data="$root/../shared/data/cifar10-jpg.tar.gz"
teacher="$root/../shared/teachers/cifar10_resnet56.safetensors"
rounds=5 threads=2 limit=0
kdlab="$root/build/kdlab"
recipe="$root/recipes/cifar10_laptop.json"
out=""
python=/usr/bin/python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --teacher) teacher="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --kdlab) kdlab="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compare_epoch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$kdlab" ]] || { echo "compare_epoch.sh: no kdlab binary at $kdlab; build it or pass --kdlab PATH" >&2; exit 1; }
[[ -e "$data" ]] || { echo "compare_epoch.sh: no data at $data; give --data (a CIFAR-10 image folder or .tar.gz)" >&2; exit 1; }
[[ -f "$teacher" ]] || { echo "compare_epoch.sh: no teacher weights at $teacher; give --teacher W.safetensors (resnet56)" >&2; exit 1; }
"$python" -c "import torch" 2>/dev/null || { echo "compare_epoch.sh: $python cannot import torch (apt install python3-torch)" >&2; exit 1; }
[[ -n "$out" ]] || out="$(mktemp /tmp/kdlab_epoch.XXXXXX.jsonl)"
: > "$out"
work="$(mktemp -d /tmp/kdlab_epoch.XXXXXX)"
trap 'rm -rf "$work"' EXIT

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "kdlab: $("$kdlab" --version | head -1); PyTorch $("$python" -c 'import torch; print(torch.__version__)')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$kdlab" data pack --data-dir "$data" --split train --out "$work/train.bin" > /dev/null

lim=()
[[ $limit -gt 0 ]] && lim=(--train-limit "$limit" --test-limit 256)
common=(--recipe "$recipe" --dataset imagefolder --data-dir "$data" --threads "$threads" --epochs 1 "${lim[@]}")
kdlab_run() {  # kdlab_run ce|kd: one epoch, its time_s as a JSON line
  local loss=$1 dir="$work/run_$1"
  rm -rf "$dir"
  if [[ $loss == ce ]]; then
    "$kdlab" train "${common[@]}" --out "$dir" > "$dir.log" 2>&1
  else
    "$kdlab" distill "${common[@]}" --method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9 \
      --teacher resnet56 --teacher-weights "$teacher" --out "$dir" > "$dir.log" 2>&1
  fi
  "$python" - "$dir/metrics.jsonl" "$loss" <<'PY'
import json, sys
m = json.loads(open(sys.argv[1]).readline())
print(json.dumps({"side": "kdlab", "loss": sys.argv[2], "seconds": m["time_s"], "images_per_s": m["images_per_s"],
                  "train_loss": m["train_loss"]}))
PY
}
for ((r = 1; r <= rounds; ++r)); do
  for loss in ce kd; do
    kdlab_run "$loss" | tee -a "$out" > /dev/null
    "$python" "$here/pytorch_epoch.py" --bin "$work/train.bin" --recipe "$recipe" --loss "$loss" \
      --threads "$threads" --limit "$limit" | tee -a "$out" > /dev/null
  done
  echo "  round $r done (load $(cut -d' ' -f1 /proc/loadavg))"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw results: $out"
"$python" - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"\n{len(runs)} runs; seconds per epoch, median [min-max]; ratio = PyTorch median / kdlab median\n")
print("| loss | kdlab s | PyTorch s | PyTorch / kdlab |")
print("|---|---|---|---|")
for loss in ("ce", "kd"):
    side = {s: [r["seconds"] for r in runs if r["loss"] == loss and r["side"] == s] for s in ("kdlab", "pytorch")}
    if not side["kdlab"] or not side["pytorch"]:
        continue
    k, p = statistics.median(side["kdlab"]), statistics.median(side["pytorch"])
    cell = lambda v, m: f"{m:.1f} [{min(v):.1f}-{max(v):.1f}]"
    name = "CE" if loss == "ce" else "KD, uncached (resnet56 teacher every step)"
    print(f"| {name} | {cell(side['kdlab'], k)} | {cell(side['pytorch'], p)} | {p / k:.2f}x |")
PY
