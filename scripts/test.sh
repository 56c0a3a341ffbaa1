#!/usr/bin/env bash
# scripts/test.sh: set up (packages, build) and run every test through ctest.
# Exits non-zero on any failure.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$KDLAB_ROOT/scripts/setup.sh"
cd "${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}"
ctest --output-on-failure -j "$(nproc)"
