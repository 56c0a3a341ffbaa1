# run_lib.sh: the resumable run step the experiment scripts share (sourced from the repository
# root by experiments_cifar10.sh, experiments_cifar10_families.sh and experiments_cifar100.sh).
#
#   run NAME kdlab-subcommand args...
#
# trains into $RUNS/$PREFIX$NAME (RUNS defaults to runs/, PREFIX to c10_): skipped when the
# folder has model_last.safetensors, resumed when it has a checkpoint, started afresh otherwise.
# The log goes to $RUNS/$PREFIX$NAME.log; the epoch lines are echoed. KDLAB is the binary.
RUNS=${RUNS:-runs}
PREFIX=${PREFIX:-c10_}

run() {
  local name=$1; shift
  local out=$RUNS/$PREFIX$name
  if [[ -f $out/model_last.safetensors ]]; then echo "== $name: done already"; return; fi
  local resume=()
  [[ -f $out/checkpoint.safetensors ]] && resume=(--resume)
  echo "== $name: $KDLAB $* --out $out ${resume[*]}"
  mkdir -p "$out"
  "$KDLAB" "$@" --out "$out" "${resume[@]}" 2>&1 | tee -a "$out.log" | grep -E "^(epoch [0-9]+/[0-9]+:|done|teacher)" || true
}
