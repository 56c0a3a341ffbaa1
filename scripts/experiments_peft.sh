#!/usr/bin/env bash
# The PEFT transfer experiment of docs/RESULTS.md (issue #29): CIFAR-10 backbones fine-tuned on
# CIFAR-100's 20 coarse classes with few labels (train_subset=1000: about 50 images per class,
# drawn at random with a fixed seed), each arm with CE only and with CE + KD from a teacher
# trained on the target task.
#
#   scripts/experiments_peft.sh [STAGE ...]        (no stage: all, in order)
#
# Backbones: the shared CIFAR-10 resnet56 (BACKBONE) and the project's CIFAR-10 ViT
# (teachers/cifar10_vit_small_cifar.safetensors). The new 20-class head is not in the CIFAR-10
# weights (init_weights loads the rest, non-strict), so every arm trains it:
#   probe   the head alone (train_only=head)              full    everything
#   lora4   LoRA r=4 on every conv/linear + the head      lora8   LoRA r=8, the same
#   adapter residual conv adapters (ViT: Houlsby bottleneck adapters) + the head
# The teacher: the resnet56 backbone fine-tuned in full on all 50,000 coarse-labelled images
# (stage teacher). KD arms: T=4, CE 0.1, KD 0.9 (mdistiller's KD).
# Stages: teacher, then <backbone>_<arm>_<ce|kd>_seed<S> for backbone r56|vit, arm as above,
# S in 0 1 (stage names: r56_lora8_kd_seed0, ...). Runs go to $RUNS/peft_<name> (resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
KDLAB=${KDLAB:-build/kdlab}
DATA=${DATA:-/root/data/cifar-100-binary.tar.gz}   # ../shared/data/README.md builds it
BACKBONE=${BACKBONE:-../shared/teachers/cifar10_resnet56.safetensors}
VIT=${VIT:-teachers/cifar10_vit_small_cifar.safetensors}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-30}
PREFIX=peft_
source scripts/run_lib.sh
read -r -a EXTRA <<< "${EXTRA:-}"  # a smoke test: RUNS=/tmp/x EXTRA="--epochs 1 --test-limit 200"
COMMON=(--dataset cifar100 --data-dir "$DATA" --set coarse_labels=true --threads "$THREADS" --epochs "$EPOCHS"
        --batch-size 64 --lr 0.01 --set weight_decay=5e-4 "${EXTRA[@]}")
FEW=(--set train_subset=1000)
TEACHER=$RUNS/peft_teacher/model_best.safetensors

arm_args() {  # arm_args BACKBONE ARM
  local model=$1 arm=$2
  case $arm in
    probe) echo "--train-only head" ;;
    full) echo "" ;;
    lora4) echo "--peft lora:r=4,alpha=8,targets=* --train-only head" ;;
    lora8) echo "--peft lora:r=8,alpha=16,targets=* --train-only head" ;;
    adapter) echo "--peft adapter:targets=* --train-only head" ;;  # residual conv adapters; Houlsby on the ViT
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
}

stage() {
  case $1 in
    teacher) run teacher train "${COMMON[@]}" --model resnet56 --init-weights "$BACKBONE" --seed 0 ;;
    r56_*|vit_*)
      local bb=${1%%_*} rest=${1#*_}; local arm=${rest%%_*}; rest=${rest#*_}; local loss=${rest%%_*}
      local seed=${1##*seed}
      local model=resnet56 init=$BACKBONE
      [[ $bb == vit ]] && model=vit_small_cifar init=$VIT
      read -r -a A <<< "$(arm_args $model $arm)"
      if [[ $loss == ce ]]; then
        run "$1" train "${COMMON[@]}" "${FEW[@]}" --model $model --init-weights "$init" "${A[@]}" --seed "$seed"
      else
        stage teacher
        run "$1" distill "${COMMON[@]}" "${FEW[@]}" --student $model --init-weights "$init" "${A[@]}" --seed "$seed" \
          --teacher resnet56 --teacher-weights "$TEACHER" --method kd --set T=4 --set ce_weight=0.1 --set kd_weight=0.9
      fi ;;
    *) echo "unknown stage $1"; exit 2 ;;
  esac
}

stages=("$@")
if [[ ${#stages[@]} -eq 0 ]]; then
  stages=(teacher)
  for bb in r56 vit; do for arm in probe full lora4 lora8 adapter; do for loss in ce kd; do
    stages+=("${bb}_${arm}_${loss}_seed0"); done; done; done
  for bb in r56 vit; do for arm in full lora8; do for loss in ce kd; do stages+=("${bb}_${arm}_${loss}_seed1"); done; done; done
fi
for s in "${stages[@]}"; do stage "$s"; done
