#!/usr/bin/env bash
# The CIFAR-100 laptop benchmark of docs/RESULTS.md (issue #34): the kdlab-trained resnet56
# teacher (teachers/cifar100_resnet56.safetensors) -> resnet20 students, recipes/cifar100_laptop.json.
#
#   scripts/experiments_cifar100.sh [STAGE ...]     (no stage: all of them, in order)
#
# Stages: baseline0 baseline1 kd0 kd1 dkd0 dkd1 fitnet0 at0 rkd0 catkd0 wkdcost wkdl0 timing
#         (and fitnet1 at1 rkd1 catkd1 wkdl1 for second seeds)
# Each method's official constants for resnet56 -> resnet20 (../shared/METHODS.md, mdistiller's
# configs; recipes/cifar100/*_resnet56_resnet20.json). Epoch-counted constants of the 240-epoch
# schedule are scaled to the recipe's length E: DKD's warm-up 20 -> round(20 E / 240) and WKD-L's
# decay start 150 -> round(150 E / 240). WKD-L has no official constants for this pair; it takes
# those of resnet32x4 -> resnet8x4 (gamma 600, tau 8) with the cost matrix from the teacher's
# features (kdlab wkd-cost, as the official generate_* scripts).
# Every run goes to runs/c100_<name>; a run whose model_last.safetensors exists is skipped and an
# interrupted one resumes, so the script can be stopped and started again. The teacher cache is
# used where the method allows it (logits and the pooled feature: KD, DKD, RKD, WKD-L).
set -euo pipefail
cd "$(dirname "$0")/.."
KDLAB=${KDLAB:-build/kdlab}
DATA=${DATA:-/root/data/cifar-100-binary.tar.gz}           # scripts/../shared/data/README.md builds it
TEACHER=${TEACHER:-teachers/cifar100_resnet56.safetensors}
THREADS=${THREADS:-2}
PREFIX=c100_
source scripts/run_lib.sh  # run NAME ARGS...: one resumable run into $RUNS/c100_NAME
read -r -a EXTRA <<< "${EXTRA:-}"  # a smoke test: RUNS=/tmp/x EXTRA="--epochs 2 --train-limit 256 --test-limit 128"
RECIPE=recipes/cifar100_laptop.json
E=$(python3 -c "import json; print(json.load(open('$RECIPE'))['epochs'])")
for a in "${EXTRA[@]}"; do [[ ${prev:-} == --epochs ]] && E=$a; prev=$a; done
WARMUP=$(( (20 * E + 120) / 240 )); (( WARMUP >= 1 )) || WARMUP=1
DECAY=$(( (150 * E + 120) / 240 ))
CACHE=$RUNS/cache_c100
COMMON=(--recipe $RECIPE --dataset cifar100 --data-dir "$DATA" --threads "$THREADS" "${EXTRA[@]}")
DIST=(--teacher resnet56 --teacher-weights "$TEACHER")
CACHED=(--teacher-cache --cache-dir "$CACHE")
mkdir -p "$CACHE"

distill() {  # distill NAME SEED args...
  local name=$1 seed=$2; shift 2
  run "${name}_seed$seed" distill "${COMMON[@]}" "${DIST[@]}" --seed "$seed" "$@"
}

stage() {
  local seed=${1: -1}
  case $1 in
    baseline[01]) run baseline_seed$seed train "${COMMON[@]}" --seed "$seed" ;;
    kd[01]) distill kd "$seed" --method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9 "${CACHED[@]}" ;;
    dkd[01]) distill dkd "$seed" --method dkd --set alpha=1 --set beta=2 --set T=4 --set warmup=$WARMUP \
               --set ce_weight=1 "${CACHED[@]}" ;;
    fitnet[01]) distill fitnet "$seed" --method fitnet --set hint_layer=f2 --set ce_weight=1 --set feat_weight=100 ;;
    at[01]) distill at "$seed" --method at --set layers=f1,f2,f3 --set p=2 --set ce_weight=1 --set feat_weight=1000 ;;
    rkd[01]) distill rkd "$seed" --method rkd --set tap=pooled --set ce_weight=1 --set distance_weight=25 \
               --set angle_weight=50 "${CACHED[@]}" ;;
    catkd[01]) distill catkd "$seed" --method catkd --set beta=0.7 --set r=2 --set normalize=false --set ce_weight=1 ;;
    wkdcost) [[ -f $CACHE/resnet56_cka.npy ]] || "$KDLAB" wkd-cost "${DIST[@]}" --dataset cifar100 --data-dir "$DATA" \
               --source features --threads "$THREADS" --out "$CACHE/resnet56_cka.npy" ;;
    wkdl[01]) stage wkdcost
              distill wkdl "$seed" --method wkd_l --set gamma=600 --set tau=8 --set decay_epoch=$DECAY --set eps=0.05 \
               --set iters=10 --set cost_matrix="$CACHE/resnet56_cka.npy" "${CACHED[@]}" ;;
    timing)  # seconds per epoch of the baseline (1 epoch) on a quiet machine, for choosing E
      rm -rf "$RUNS/c100_timing"
      "$KDLAB" train "${COMMON[@]}" --epochs 1 --out "$RUNS/c100_timing" 2>&1 | grep -E "^(epoch [0-9]+/[0-9]+:|done)" ;;
    *) echo "unknown stage $1"; exit 2 ;;
  esac
}

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(baseline0 kd0 dkd0 baseline1 kd1 dkd1 fitnet0 at0 rkd0 catkd0 wkdl0)
for s in "${stages[@]}"; do stage "$s"; done
