#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: build the libFuzzer targets of fuzz/ (clang, with
# AddressSanitizer + UndefinedBehaviorSanitizer) and run each for SECONDS (default 1800), one
# after the other. TARGETs default to all of them: safetensors npy cifar idx image tar recipe
# checkpoint. Prints the executions and findings of each and exits non-zero if any target found
# a crash, a hang (-timeout), an out-of-memory (-rss_limit_mb / -malloc_limit_mb) or a leak.
#
# Layout (all under the build folder, $KDLAB_FUZZ_BUILD_DIR or build-fuzz/):
#   fuzz-work/corpus/<target>/     the growing corpus (seeded from fuzz/corpus/<target>/ and the
#                                  test fixtures; kept between runs, so later runs start further)
#   fuzz-work/artifacts/<target>/  crash-*, timeout-*, oom-*, leak-*: the inputs that failed;
#                                  reproduce one with build-fuzz/fuzz/fuzz_<target> FILE
#   fuzz-work/logs/<target>.log    libFuzzer's output
#   fuzz-work/summary.tsv          one line per target run: executions, findings
# Every fixed finding becomes a regression test (tests/test_fuzz_regressions.cpp, inputs in
# tests/fixtures/fuzz/); docs/RELIABILITY.md records the runs.
#
# Environment: KDLAB_FUZZ_FLAGS adds libFuzzer flags (e.g. "-max_len=65536"); NICE=1 runs the
# fuzzers under `nice -n 19`.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KDLAB_FUZZ_BUILD_DIR:-$KDLAB_ROOT/build-fuzz}"
ALL_TARGETS=(safetensors npy cifar idx image tar recipe checkpoint)

SECONDS_EACH="${1:-1800}"
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
fi
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2; exit 2; }
done
NICE_CMD=()
[ "${NICE:-0}" = "1" ] && NICE_CMD=(nice -n 19)

# ---- clang with libFuzzer and the sanitizer runtimes (Debian: clang + libclang-rt-14-dev)
if ! command -v clang++ >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  echo "fuzz.sh: installing clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev
fi

# ---- build
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$KDLAB_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DKDLAB_FUZZ=ON -DKDLAB_BUILD_TESTS=OFF
fi
"${NICE_CMD[@]}" cmake --build "$BUILD_DIR" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${TARGETS[@]}")

# ---- run
WORK="$BUILD_DIR/fuzz-work"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/kdlab-fuzz.XXXXXX")"
[ -d /dev/shm ] && { rmdir "$SCRATCH"; SCRATCH="$(mktemp -d /dev/shm/kdlab-fuzz.XXXXXX)"; }
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$WORK/logs"
[ -f "$WORK/summary.tsv" ] || printf 'date\ttarget\tseconds\texecutions\texec_per_s\tcorpus\tfindings\n' > "$WORK/summary.tsv"

# Valid files the tests use, as extra seeds.
extra_seeds() {
  case "$1" in
    safetensors) echo "$KDLAB_ROOT/tests/fixtures/safetensors" ;;
    npy) echo "$KDLAB_ROOT/tests/fixtures/npy" ;;
    recipe) echo "$KDLAB_ROOT/recipes" ;;
  esac
}

total_findings=0
declare -a REPORT
for t in "${TARGETS[@]}"; do
  corpus="$WORK/corpus/$t"
  artifacts="$WORK/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  before=$(find "$artifacts" -type f | wc -l)
  echo "== fuzz_$t for ${SECONDS_EACH}s (log: $WORK/logs/$t.log)"
  set +e
  # OMP_NUM_THREADS=1: one thread, so that a finding reproduces; detect_leaks: a parser that
  # leaks on a refused input is a finding too.
  OMP_NUM_THREADS=1 KDLAB_FUZZ_TMP="$SCRATCH" \
  ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0:abort_on_error=0" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    "${NICE_CMD[@]}" "$BUILD_DIR/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix="$artifacts/" ${KDLAB_FUZZ_FLAGS:-} \
      "$corpus" "$KDLAB_ROOT/fuzz/corpus/$t" $(extra_seeds "$t") > "$WORK/logs/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -a 'stat::number_of_executed_units' "$WORK/logs/$t.log" | tail -1 | awk '{print $2}')
  per_s=$(grep -a 'stat::average_exec_per_sec' "$WORK/logs/$t.log" | tail -1 | awk '{print $2}')
  after=$(find "$artifacts" -type f | wc -l)
  found=$((after - before))
  [ $rc -ne 0 ] && [ $found -eq 0 ] && found=1  # a failure that left no input (e.g. a crash at start)
  total_findings=$((total_findings + found))
  size=$(find "$corpus" -type f | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$t" "$SECONDS_EACH" "${execs:-?}" \
    "${per_s:-?}" "$size" "$found" >> "$WORK/summary.tsv"
  line=$(printf '%-12s %12s executions %8s/s  corpus %5s  findings %s' "$t" "${execs:-?}" "${per_s:-?}" "$size" "$found")
  REPORT+=("$line")
  echo "   $line"
  if [ $found -ne 0 ]; then
    grep -a -m1 -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error|uncaught exception|terminate called' \
      "$WORK/logs/$t.log" | sed 's/^/   /' || true
    ls -t "$artifacts" | head -3 | sed "s|^|   $artifacts/|"
  fi
done

echo
echo "fuzz.sh summary (${SECONDS_EACH}s per target; all runs: $WORK/summary.tsv)"
printf '  %s\n' "${REPORT[@]}"
if [ $total_findings -ne 0 ]; then
  echo "fuzz.sh: $total_findings finding(s): reproduce with $BUILD_DIR/fuzz/fuzz_<target> <artifact>" >&2
  exit 1
fi
