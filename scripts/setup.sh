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
# libonnx-dev and libprotobuf-dev (its headers need protobuf's): `kdlab export` writes ONNX files with
# ONNX's own protobuf classes; python3-onnx:
# the export tests run ONNX's checker; nodejs and npm: the tests run the exported models in ONNX
# Runtime, the npm package onnxruntime-node (CPU binaries inside the package), installed below
# into .deps/ort with --ignore-scripts (its install script would download GPU binaries).
PACKAGES=(build-essential cmake ninja-build pkg-config git bc
          libopenblas-dev libopenblas-openmp-dev libdnnl-dev ocl-icd-opencl-dev libstb-dev doctest-dev libfmt-dev
          nlohmann-json3-dev libcli11-dev zlib1g-dev libcurl4-openssl-dev libcairo2-dev fonts-dejavu-core
          dataset-fashion-mnist
          jupyter-nbconvert python3-ipykernel python3-matplotlib python3-numpy python3-nbformat
          libonnx-dev libprotobuf-dev python3-onnx)
# node and npm only when there are none (a machine may have them from elsewhere, e.g. NodeSource)
command -v node > /dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm > /dev/null 2>&1 || PACKAGES+=(npm)

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

# ONNX Runtime for the export tests (test-only; a failure leaves the tests that need it skipped)
ORT_DIR="$KDLAB_ROOT/.deps/ort"
if [ ! -d "$ORT_DIR/node_modules/onnxruntime-node" ]; then
  echo "kdlab setup: installing onnxruntime-node into $ORT_DIR"
  mkdir -p "$ORT_DIR"
  (cd "$ORT_DIR" && npm install --ignore-scripts --no-audit --no-fund --prefix . onnxruntime-node > npm.log 2>&1) ||
    echo "kdlab setup: npm could not install onnxruntime-node (see $ORT_DIR/npm.log); the ONNX Runtime tests will be skipped"
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # KDLAB_CMAKE_ARGS: extra options for a fresh build folder (scripts/test.sh --sanitize).
  cmake -S "$KDLAB_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${KDLAB_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
