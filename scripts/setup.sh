#!/usr/bin/env bash
# scripts/setup.sh: install the Debian packages kdlab needs (only the missing ones), then
# configure and build into build/ (Release). Sourced by demo.sh and test.sh; safe to re-run:
# a second run installs nothing and rebuilds incrementally.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}"

# libopenblas-openmp-dev: OpenBLAS's OpenMP build, which shares kdlab's OpenMP threads instead of
# running a second pool beside them (CMakeLists.txt links it; the system default stays pthread).
# ocl-icd-opencl-dev: Debian's oneDNN CMake config requires the OpenCL headers (libdnnl-dev only
# recommends them, and this script installs without recommends).
# libcurl4-openssl-dev: `kdlab data get` downloads the official data-set archives through libcurl.
# libcairo2-dev and fonts-dejavu-core: the charts (analysis/plot.cpp) are drawn with cairo, whose
# text goes through fontconfig to a font that must be installed (DejaVu Sans).
# jupyter-nbconvert and the Python kernel, NumPy, matplotlib: the notebooks (notebooks/), which
# scripts/test.sh executes.
PACKAGES=(build-essential cmake ninja-build pkg-config git bc
          libopenblas-dev libopenblas-openmp-dev libdnnl-dev ocl-icd-opencl-dev libstb-dev doctest-dev libfmt-dev
          nlohmann-json3-dev libcli11-dev zlib1g-dev libcurl4-openssl-dev libcairo2-dev fonts-dejavu-core
          dataset-fashion-mnist
          jupyter-nbconvert python3-ipykernel python3-matplotlib python3-numpy python3-nbformat)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kdlab setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # KDLAB_CMAKE_ARGS: extra options for a fresh build folder (scripts/test.sh --sanitize).
  cmake -S "$KDLAB_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${KDLAB_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
