#!/usr/bin/env bash
# bench/compare_ort.sh: kdlab's inference against ONNX Runtime's on the same models (issue #31).
#
# For every model: `kdlab export --random-weights` writes its ONNX file once; then, interleaved
# --rounds times (default 5), each in a fresh process: `kdlab bench --phase infer` and
# tools/ort_run.js (onnxruntime-node, CPU, graph optimisations on), at batch 1 (latency, ms) and
# batch 64 (throughput, images/s), with the same threads. The table gives the median [min-max]
# of each side and the ratio of medians (ORT time / kdlab time: above 1 means kdlab is faster).
# Weights do not change the speed of a dense model, so random ones stand in for trained ones.
#
#   bench/compare_ort.sh [--models "resnet20 resnet56"] [--threads 2] [--rounds 5] [--iters 50]
#       [--kdlab build/kdlab]
#
# Run it on a quiet machine (the load average is printed before and after). Needs node and
# onnxruntime-node in .deps/ort (scripts/setup.sh installs both).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.."
models="resnet20 resnet56" threads=2 rounds=5 iters=50
kdlab="$root/build/kdlab"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --kdlab) kdlab="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "compare_ort.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
export NODE_PATH="$root/.deps/ort/node_modules"
[[ -d "$NODE_PATH/onnxruntime-node" ]] || { echo "compare_ort.sh: no onnxruntime-node in $NODE_PATH (scripts/setup.sh)" >&2; exit 1; }
work="$(mktemp -d /tmp/kdlab_ort.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kdlab: $("$kdlab" --version | head -1); onnxruntime-node $(node -e "console.log(require('onnxruntime-node/package.json').version)")"
for m in $models; do "$kdlab" export --model "$m" --random-weights --out "$work/$m.onnx" > /dev/null; done
out="$work/results.jsonl"
for ((r = 1; r <= rounds; ++r)); do
  for m in $models; do
    for b in 1 64; do
      k=$("$kdlab" bench --model "$m" --batch $b --phase infer --threads "$threads" --iters "$iters" --json | tail -1)
      echo "{\"side\":\"kdlab\",\"model\":\"$m\",\"batch\":$b,\"ms\":$(echo "$k" | sed 's/.*"infer_batch_ms":\([0-9.e+-]*\).*/\1/')}" >> "$out"
      /usr/bin/python3 -c "import numpy as np; np.random.default_rng(0).standard_normal(($b, 3, 32, 32), dtype=np.float32).tofile('$work/x.bin')"
      o=$(node "$root/tools/ort_run.js" "$work/$m.onnx" "$work/x.bin" "$b,3,32,32" "$work/y.bin" "$threads" "$iters")
      echo "{\"side\":\"ort\",\"model\":\"$m\",\"batch\":$b,\"ms\":$(echo "$o" | sed 's/.*"median_ms":\([0-9.e+-]*\).*/\1/')}" >> "$out"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); $rounds interleaved rounds, $threads threads, median of $iters runs per process"
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
print("| model | batch | kdlab fp32 | ONNX Runtime fp32 | ORT time / kdlab time |")
print("|---|---|---|---|---|")
def fmt(ms, b):
    med = statistics.median(ms)
    if b == 1:
        return med, f"{med:.3f} ms [{min(ms):.3f}-{max(ms):.3f}]"
    ips = [b * 1000 / x for x in ms]
    return med, f"{b * 1000 / med:.0f} img/s [{min(ips):.0f}-{max(ips):.0f}]"
for m, b in keys:
    k = [r["ms"] for r in rows if r["model"] == m and r["batch"] == b and r["side"] == "kdlab"]
    o = [r["ms"] for r in rows if r["model"] == m and r["batch"] == b and r["side"] == "ort"]
    km, ks = fmt(k, b)
    om, os_ = fmt(o, b)
    print(f"| {m} | {b} | {ks} | {os_} | {om / km:.2f} |")
PY
