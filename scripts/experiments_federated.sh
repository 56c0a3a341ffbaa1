#!/usr/bin/env bash
# scripts/experiments_federated.sh: issue 28's CIFAR-10 federated experiments, resumable.
#
#   DATA10=cifar-10-binary.tar.gz DATA100=cifar-100-binary.tar.gz OUT=runs/federated \
#     scripts/experiments_federated.sh
#
# ResNet-8 clients, 10 clients all participating, Dirichlet alpha 0.1 (seeds 0 and 1, the
# headline) and alpha 1 (seed 0); FedAvg, FedDF (CIFAR-100 images as the unlabelled public set)
# and FD with the same rounds and local epochs; then one heterogeneous FedMD run (resnet8 and
# resnet14 clients) at alpha 0.1. Every run goes into OUT/<algorithm>_a<alpha>_seed<s>: a finished
# run (model_last / client0_last present) is skipped, an interrupted one resumes from its
# checkpoint, so the script can be stopped and started again at any time.
#
# The budget knobs (environment): ROUNDS (20), LOCAL_EPOCHS (1), SERVER_STEPS (FedDF's server
# steps per round, 500: the paper's 1e4 is hours per round on 2 cores), PUBLIC_LIMIT (CIFAR-100
# images in the public set, 10000), THREADS (1: on a machine shared with other jobs, 2 OpenMP
# threads were 15x slower than 1 in our measurement), EVAL_CLIENTS (true: each client's test accuracy
# every round, 10 test-set passes per round; false leaves only the global model's). Time one round first:
#   TIME_ONE_ROUND=1 scripts/experiments_federated.sh     (1 round of each algorithm at alpha 0.1)
# At the end the curves: OUT/alpha0.1.png and OUT/alpha1.png (accuracy by round and by bytes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KDLAB="${KDLAB:-$ROOT/build/kdlab}"
DATA10="${DATA10:?set DATA10 to CIFAR-10 (cifar-10-binary.tar.gz, or an image folder with DATASET10=imagefolder)}"
DATA100="${DATA100:?set DATA100 to CIFAR-100 (cifar-100-binary.tar.gz; ../shared/data/README.md says how to build it)}"
DATASET10="${DATASET10:-cifar10}"
DATASET100="${DATASET100:-cifar100}"
OUT="${OUT:-runs/federated}"
ROUNDS="${ROUNDS:-20}"
LOCAL_EPOCHS="${LOCAL_EPOCHS:-1}"
SERVER_STEPS="${SERVER_STEPS:-500}"
PUBLIC_LIMIT="${PUBLIC_LIMIT:-10000}"
THREADS="${THREADS:-1}"
EVAL_CLIENTS="${EVAL_CLIENTS:-true}"
if [ "${TIME_ONE_ROUND:-0}" = 1 ]; then ROUNDS=1; OUT="$OUT/timing"; fi
mkdir -p "$OUT"

# run NAME ARGS...: one federated run into OUT/NAME, skipped when finished, resumed when interrupted
run() {
  local name="$1"; shift
  local dir="$OUT/$name"
  if [ -f "$dir/model_last.safetensors" ] || [ -f "$dir/client0_last.safetensors" ]; then
    echo "== $name: done"
    return
  fi
  local resume=()
  [ -f "$dir/checkpoint.safetensors" ] && resume=(--resume)
  echo "== $name ${resume[*]}"
  local start=$SECONDS
  "$KDLAB" federate --dataset "$DATASET10" --data-dir "$DATA10" --clients 10 --participation 1 \
    --rounds "$ROUNDS" --local-epochs "$LOCAL_EPOCHS" --threads "$THREADS" --set "eval_clients=$EVAL_CLIENTS" \
    --out "$dir" "${resume[@]}" "$@"
  echo "== $name: $((SECONDS - start)) s"
}

public=(--public-dataset "$DATASET100" --public-dir "$DATA100" --set "public_limit=$PUBLIC_LIMIT")
for setting in "0.1 0" "0.1 1" "1 0"; do
  read -r alpha seed <<< "$setting"
  [ "${TIME_ONE_ROUND:-0}" = 1 ] && [ "$seed" != 0 -o "$alpha" != 0.1 ] && continue
  common=(--model resnet8 --partition "dirichlet:$alpha" --seed "$seed")
  run "fedavg_a${alpha}_seed${seed}" --algorithm fedavg "${common[@]}"
  run "feddf_a${alpha}_seed${seed}" --algorithm feddf "${common[@]}" "${public[@]}" --set "server_steps=$SERVER_STEPS"
  run "fd_a${alpha}_seed${seed}" --algorithm fd "${common[@]}"
done
# what weight averaging cannot do: two architectures
run "fedmd_hetero_a0.1_seed0" --algorithm fedmd --model resnet8 --model resnet14 --partition dirichlet:0.1 \
  --seed 0 "${public[@]}" --set public_sample=5000

for alpha in 0.1 1; do
  dirs=()
  for d in "$OUT"/*_a${alpha}_seed*; do [ -f "$d/metrics.jsonl" ] && dirs+=("$d"); done
  [ ${#dirs[@]} -gt 0 ] && "$KDLAB" plot --federated "${dirs[@]}" --out "$OUT/alpha${alpha}.png"
done
echo "runs and curves in $OUT"
