#!/usr/bin/env bash
# scripts/demo.sh: set up (packages, build), then run the main job.
# For now the main job trains a two-layer network on a synthetic problem with the engine and
# prints the loss falling; the distillation issues replace it with the distillation demo.
set -euo pipefail
KDLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$KDLAB_ROOT/scripts/setup.sh"
"${KDLAB_BUILD_DIR:-$KDLAB_ROOT/build}/engine_example"
