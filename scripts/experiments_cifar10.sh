#!/usr/bin/env bash
# The CIFAR-10 distillation experiments of docs/RESULTS.md (issue #6): resnet56 teacher (the
# shared PyTorch-trained weights) -> resnet8 student, recipes/cifar10_laptop.json (15 epochs).
#
#   scripts/experiments_cifar10.sh [STAGE ...]     (no stage: all of them, in order)
#
# Stages: baseline1 kd0 kd1 dkd0 dkd1 wkdcost wkdl0 wkdl1 assistant dgkd0 dgkd1 kd0_nocache
#         timing noise_ce noise_acdu
# Every run goes to runs/c10_<name>; a run whose model_last.safetensors exists is skipped and an
# interrupted one resumes, so the script can be stopped and started again. Needs the shared
# data (../shared/data, ../shared/teachers) or the same files under DATA / TEACHER.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cifar10_env.sh  # KDLAB, DATA, TEACHER, THREADS
source scripts/run_lib.sh      # run NAME ARGS...: one resumable run into $RUNS/c10_NAME
CACHE=runs/cache
COMMON=(--recipe recipes/cifar10_laptop.json --dataset imagefolder --data-dir "$DATA" --threads "$THREADS")
DIST=(--teacher resnet56 --teacher-weights "$TEACHER")
mkdir -p runs/cache

stage() {
  case $1 in
    baseline0) run baseline_seed0 train "${COMMON[@]}" --seed 0 ;;
    baseline1) run baseline_seed1 train "${COMMON[@]}" --seed 1 ;;
    kd0|kd1) run kd_seed${1#kd} distill "${COMMON[@]}" "${DIST[@]}" --method kd --set T=4 --set ce_weight=0.1 \
               --set kd_weight=0.9 --teacher-cache --cache-dir $CACHE --seed ${1#kd} ;;
    kd0_nocache) run kd_seed0_nocache distill "${COMMON[@]}" "${DIST[@]}" --method kd --set T=4 --set ce_weight=0.1 \
               --set kd_weight=0.9 --seed 0 ;;
    dkd0|dkd1) run dkd_seed${1#dkd} distill "${COMMON[@]}" "${DIST[@]}" --method dkd --set alpha=1 --set beta=2 \
               --set T=4 --set warmup=2 --teacher-cache --cache-dir $CACHE --seed ${1#dkd} ;;
    wkdcost) [[ -f runs/cache/c10_resnet56_cka.npy ]] || "$KDLAB" wkd-cost --teacher resnet56 --teacher-weights "$TEACHER" \
               --dataset imagefolder --data-dir "$DATA" --source features --threads "$THREADS" \
               --out runs/cache/c10_resnet56_cka.npy ;;
    wkdl0|wkdl1) run wkdl_seed${1#wkdl} distill "${COMMON[@]}" "${DIST[@]}" --method wkd_l --set tau=4 --set gamma=5 \
               --set decay_epoch=10 --set cost_matrix=runs/cache/c10_resnet56_cka.npy --teacher-cache \
               --cache-dir $CACHE --seed ${1#wkdl} ;;
    assistant) run assistant_resnet20 distill "${COMMON[@]}" "${DIST[@]}" --student resnet20 --method kd --set T=4 \
               --set ce_weight=0.1 --set kd_weight=0.9 --teacher-cache --cache-dir $CACHE --seed 0 ;;
    dgkd0|dgkd1) run dgkd_seed${1#dgkd} distill "${COMMON[@]}" "${DIST[@]}" --method dgkd --set T=4 --set lambda=0.9 \
               --set drop_num=1 --assistant resnet20:runs/c10_assistant_resnet20/model_last.safetensors \
               --teacher-cache --cache-dir $CACHE --seed ${1#dgkd} ;;
    timing)  # seconds per epoch of KD with and without the cache: 2 epochs each on a quiet machine
      for c in cache nocache; do
        rm -rf runs/c10_timing_$c
        flag=(--teacher-cache --cache-dir $CACHE); [[ $c == nocache ]] && flag=()
        "$KDLAB" distill "${COMMON[@]}" "${DIST[@]}" --method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9 \
          --epochs 2 "${flag[@]}" --out runs/c10_timing_$c 2>&1 | grep -E "^(epoch [0-9]+/[0-9]+:|done)"
      done ;;
    # ACD-U against plain CE, 50% symmetric noise, on a fixed random 10,000-image subset (ACD-U
    # costs several CE epochs per epoch); network 2 is a resnet20 trained from scratch on the
    # same noisy labels (no pretrained second network: the shared teacher saw the clean labels)
    noise_ce) run noise50_ce_seed0 train "${COMMON[@]}" --set train_subset=10000 --set label_noise=sym:0.5 --seed 0 ;;
    noise_acdu) run noise50_acdu_seed0 distill "${COMMON[@]}" --teacher resnet20 --method acd_u --label-noise sym:0.5 \
               --set train_subset=10000 --set warmup=3 --set select_start=5 --set select_every=3 \
               --set forget_epochs=1 --set rampup=4 --seed 0 ;;
    *) echo "unknown stage $1"; exit 2 ;;
  esac
}

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(baseline0 baseline1 kd0 kd1 dkd0 dkd1 wkdcost wkdl0 wkdl1 assistant dgkd0 dgkd1 timing kd0_nocache noise_ce noise_acdu)
for s in "${stages[@]}"; do stage "$s"; done
