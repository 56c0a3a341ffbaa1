#!/usr/bin/env bash
# bench/compare_pytorch.sh: kdlab (cpu and onednn backends) against PyTorch, side by side.
#
# For every model, in this order and each in a fresh process: `kdlab bench --backend cpu`,
# `kdlab bench --backend onednn` (when built in) and bench/pytorch_bench.py, all with the same
# threads, batch, warm-up and timed iterations (the protocol is in examples/cli/bench.cpp).
# The three are interleaved --rounds times (default 5) and the median of each is reported with
# its min-max, so a burst of load on a shared machine hits all sides alike and shows. The environment (OPENBLAS_CORETYPE,
# OMP_*, ...) is the same for both sides: this script changes nothing in it.
#
#   bench/compare_pytorch.sh [--models "resnet20 resnet56 ..."] [--threads 2] [--batch 64]
#       [--iters 10] [--warmup 3] [--rounds 5] [--kdlab build/kdlab] [--out FILE.jsonl]
#
# The default models are the performance targets' seven: resnet20 resnet56 resnet8x4 resnet32x4
# wrn_40_2 mobilenetv2 shufflenetv2.
#
# Prints the machine, the load average before and after, the sgemm peak, and a table of
# images/s, peak RSS and their ratios (ours / PyTorch). The raw JSON lines go to --out.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
models="resnet20 resnet56 resnet8x4 resnet32x4 wrn_40_2 mobilenetv2 shufflenetv2"
threads=2 batch=64 iters=10 warmup=3 rounds=5
kdlab="$here/../build/kdlab"
out=""
python=/usr/bin/python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --kdlab) kdlab="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "compare_pytorch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$kdlab" ]] || { echo "compare_pytorch.sh: no kdlab binary at $kdlab; build it or pass --kdlab PATH" >&2; exit 1; }
"$python" -c "import torch" 2>/dev/null || { echo "compare_pytorch.sh: $python cannot import torch (apt install python3-torch)" >&2; exit 1; }
[[ -n "$out" ]] || out="$(mktemp /tmp/kdlab_compare.XXXXXX.jsonl)"
: > "$out"

backends="cpu"
if "$kdlab" bench --backend onednn --sgemm --json >/dev/null 2>&1; then backends="cpu onednn"; fi

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "kdlab: $("$kdlab" --version | head -1); PyTorch $("$python" -c 'import torch; print(torch.__version__)')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
peak=$("$kdlab" bench --sgemm --threads "$threads" --json)
echo "sgemm peak ($threads threads): $peak"
peak_gflops=$("$python" -c "import json,sys; print(json.loads(sys.argv[1])['sgemm_peak_gflops'])" "$peak")

common=(--batch "$batch" --threads "$threads" --iters "$iters" --warmup "$warmup" --peak-gflops "$peak_gflops")
for ((r = 1; r <= rounds; ++r)); do
  for m in $models; do
    for b in $backends; do
      "$kdlab" bench --model "$m" --backend "$b" "${common[@]}" --json | tee -a "$out" >/dev/null
    done
    "$python" "$here/pytorch_bench.py" --model "$m" "${common[@]}" | tee -a "$out" >/dev/null
    echo "  round $r: $m done (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw results: $out"
"$python" "$here/compare_table.py" "$out"
