#!/usr/bin/env bash
# scripts/test.sh [--sanitize]: set up (packages, build) and run every test through ctest.
# Exits non-zero on any failure.
#
#   --sanitize   build the whole suite with AddressSanitizer + UndefinedBehaviorSanitizer
#                (-DKDLAB_SANITIZE=ON) in build-sanitize/ (or $KDLAB_BUILD_DIR) and run it
#                there; any sanitizer report fails the test that triggered it.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANITIZE=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1 ;;
    *) echo "usage: scripts/test.sh [--sanitize]" >&2; exit 2 ;;
  esac
done
if [ $SANITIZE -eq 1 ]; then
  export KDLAB_BUILD_DIR="${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build-sanitize}"
  export KDLAB_CMAKE_ARGS="-DKDLAB_SANITIZE=ON"
  # halt_on_error: the first report fails the test; leaks count as failures too.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  # A build folder configured earlier without the sanitizers is switched to them.
  if [ -f "$KDLAB_BUILD_DIR/build.ninja" ]; then cmake "$KDLAB_BUILD_DIR" $KDLAB_CMAKE_ARGS > /dev/null; fi
fi
"$KDLAB_ROOT/scripts/setup.sh"
cd "${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}"
ctest --output-on-failure -j "$(nproc)"

# The notebooks (notebooks/*.ipynb), executed headless into a scratch copy when Jupyter is
# installed (scripts/setup.sh installs it); a cell that raises fails the script. They run the
# programs of this build (KDLAB_BUILD_DIR). Not with --sanitize: their training cells would take
# minutes under the sanitizers.
if command -v jupyter-nbconvert > /dev/null && [ $SANITIZE -eq 0 ]; then
  NB_OUT="$(mktemp -d "${TMPDIR:-/tmp}/kdlab_notebooks.XXXXXX")"
  # The notebooks that train the same small teacher share it through this folder (each trains it
  # when run alone).
  export KDLAB_NOTEBOOK_CACHE="$NB_OUT/cache"
  mkdir -p "$KDLAB_NOTEBOOK_CACHE"
  for nb in "$KDLAB_ROOT"/notebooks/*.ipynb; do
    [ -e "$nb" ] || continue
    name="$(basename "$nb" .ipynb)"
    start=$SECONDS
    if ! KDLAB_BUILD_DIR="$(pwd)" PYDEVD_DISABLE_FILE_VALIDATION=1 jupyter-nbconvert --to notebook --execute \
         --ExecutePreprocessor.timeout=3600 --output-dir "$NB_OUT" "$nb" > "$NB_OUT/$name.log" 2>&1; then
      cat "$NB_OUT/$name.log"
      echo "notebook $name.ipynb FAILED: a cell raised (its traceback is above)" >&2
      exit 1
    fi
    echo "notebook $name.ipynb passed ($((SECONDS - start)) s)"
  done
fi
