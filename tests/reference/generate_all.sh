#!/usr/bin/env bash
# Regenerate every golden fixture in tests/fixtures/ with Debian's python3-torch
# (apt-get install python3-torch python3-numpy). The C++ tests only read the fixtures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for script in gen_*.py; do
  echo "== $script"
  /usr/bin/python3 "$script"
done
