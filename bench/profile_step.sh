#!/usr/bin/env bash
# bench/profile_step.sh: where the time of a training step goes, by op, with Linux perf.
#
# Samples `kdlab bench --phase train` (or infer) with `perf record`, with oneDNN's JIT kernels
# named for perf (ONEDNN_JIT_PROFILE=2 writes /tmp/perf-<pid>.map), then sums the samples into
# the ops they belong to (bench/profile_table.py). Warm-up and start-up are sampled too; the
# default 20 timed steps keep them to a few percent.
#
#   bench/profile_step.sh [--model resnet20] [--batch 64] [--threads 2] [--backend onednn]
#       [--phase train|infer] [--iters 20] [--kdlab build/kdlab] [--symbols 25]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model=resnet20 batch=64 threads=2 backend=onednn phase=train iters=20 symbols=25
kdlab="$here/../build/kdlab"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --phase) phase="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --kdlab) kdlab="$2"; shift 2 ;;
    --symbols) symbols="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "profile_step.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "profile_step.sh: needs Linux perf (apt install linux-perf)" >&2; exit 1; }
data="$(mktemp /tmp/kdlab_profile.XXXXXX.data)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
ONEDNN_JIT_PROFILE=2 perf record -q -F 999 -o "$data" "$kdlab" bench --model "$model" --batch "$batch" \
  --threads "$threads" --backend "$backend" --phase "$phase" --iters "$iters" --warmup 2 --peak-gflops 1 |
  grep -E "^model|^training|^inference" | sed -E 's/, [0-9]+% of sgemm peak//'  # no peak measured here (--peak-gflops 1)
perf report -i "$data" --no-children --sort dso,symbol 2>/dev/null | /usr/bin/python3 "$here/profile_table.py" --symbols "$symbols"
rm -f "$data"
