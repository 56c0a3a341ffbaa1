#!/usr/bin/env bash
# The cross-modal experiments of docs/RESULTS.md (issue #30), CIFAR-10, recipes/cifar10_laptop.json
# (15 epochs, resnet8 students):
#   1. an rgb teacher (the shared PyTorch-trained resnet56) -> a grayscale resnet8 student: the gray
#      baseline, KD, DKD, FitNets, supervision transfer (stage 1 without labels, then fine-tuning on
#      all labels and on 5,000), and KD from a joint rgb+edges teacher (resnet20, trained here);
#      the rgb student's baseline for reference;
#   2. the modality-focusing control: resnet20 rgb teachers trained with the chroma cue in a
#      fraction p in {0, 0.5, 1} of the images (train and test), KD into gray resnet8 students
#      (seeds 0 and 1 at p = 0 and p = 1). Luminance cannot see the cue, so the gray baseline is
#      the same run for every p.
#
#   scripts/experiments_cross_modal.sh [STAGE ...]      (no stage: all of them, in order)
#
# Stages: gray0 gray1 rgb0 kd dkd fitnet st st_ft st_ft5k gray5k t_joint joint_kd
#         t_p0 t_p05 t_p1 mfh_p0_0 mfh_p0_1 mfh_p05_0 mfh_p1_0 mfh_p1_1
# Runs go to $RUNS/xm_<name> (resumable: scripts/run_lib.sh). The MFH table and plot:
#   /usr/bin/python3 scripts/mfh_table.py $RUNS --plot docs/images/mfh.png
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cifar10_env.sh  # KDLAB, DATA, TEACHER, THREADS
PREFIX=xm_
source scripts/run_lib.sh
read -r -a EXTRA <<< "${EXTRA:-}"  # a smoke test: RUNS=/tmp/x EXTRA="--epochs 1 --train-limit 256 --test-limit 128"
CACHE=$RUNS/cache_xm
COMMON=(--recipe recipes/cifar10_laptop.json --dataset imagefolder --data-dir "$DATA" --threads "$THREADS" "${EXTRA[@]}")
RGB_T=(--teacher resnet56 --teacher-weights "$TEACHER" --teacher-input rgb)
GRAY=(--student resnet8 --student-input gray)
KD=(--method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9)
mkdir -p "$CACHE"
cue() { case $1 in p0) echo 0 ;; p05) echo 0.5 ;; p1) echo 1 ;; esac; }

stage() {
  case $1 in
    gray0|gray1) run gray_seed${1#gray} train "${COMMON[@]}" --input gray --seed ${1#gray} ;;
    rgb0) run rgb_seed0 train "${COMMON[@]}" --seed 0 ;;
    kd) run kd distill "${COMMON[@]}" "${RGB_T[@]}" "${GRAY[@]}" "${KD[@]}" --teacher-cache --cache-dir "$CACHE" ;;
    dkd) run dkd distill "${COMMON[@]}" "${RGB_T[@]}" "${GRAY[@]}" --method dkd --set alpha=1 --set beta=2 --set T=4 \
           --set warmup=2 --teacher-cache --cache-dir "$CACHE" ;;
    fitnet) run fitnet distill "${COMMON[@]}" "${RGB_T[@]}" "${GRAY[@]}" --method fitnet --set hint_layer=f2 \
           --set ce_weight=1 --set feat_weight=100 ;;
    st) run st distill "${COMMON[@]}" "${RGB_T[@]}" "${GRAY[@]}" --method supervision_transfer --set layer=f2 ;;
    st_ft) stage st; run st_ft train "${COMMON[@]}" --input gray --init-weights "$RUNS/xm_st/model_last.safetensors" ;;
    st_ft5k) stage st; run st_ft5k train "${COMMON[@]}" --input gray --set train_subset=5000 \
           --init-weights "$RUNS/xm_st/model_last.safetensors" ;;
    gray5k) run gray5k train "${COMMON[@]}" --input gray --set train_subset=5000 ;;
    t_joint) run t_joint train "${COMMON[@]}" --model resnet20 --input rgb+edges ;;
    joint_kd) stage t_joint; run joint_kd distill "${COMMON[@]}" --teacher resnet20 \
           --teacher-weights "$RUNS/xm_t_joint/model_last.safetensors" --teacher-input rgb+edges "${GRAY[@]}" \
           "${KD[@]}" --teacher-cache --cache-dir "$CACHE" ;;
    t_p0|t_p05|t_p1) run "t_${1#t_}" train "${COMMON[@]}" --model resnet20 --chroma-cue "$(cue ${1#t_})" ;;
    mfh_*) local p=${1#mfh_}; p=${p%_*}; local seed=${1##*_}
           stage "t_$p"
           run "mfh_${p}_seed$seed" distill "${COMMON[@]}" --teacher resnet20 \
             --teacher-weights "$RUNS/xm_t_$p/model_last.safetensors" --teacher-input rgb "${GRAY[@]}" "${KD[@]}" \
             --chroma-cue "$(cue "$p")" --teacher-cache --cache-dir "$CACHE" --seed "$seed" ;;
    *) echo "unknown stage $1"; exit 2 ;;
  esac
}

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(gray0 kd dkd fitnet st st_ft gray5k st_ft5k rgb0 t_joint joint_kd t_p0 t_p05 t_p1
                                     mfh_p0_0 mfh_p05_0 mfh_p1_0 gray1 mfh_p0_1 mfh_p1_1)
for s in "${stages[@]}"; do stage "$s"; done
