#!/usr/bin/env bash
# Whole suite: set the host up, configure + build, run every CTest test
# (unit + integration). Exits with ctest's status. Run as root from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cmake --preset default
cmake --build --preset default -j2
rc=0
ctest --test-dir build --output-on-failure || rc=$?
exit "$rc"
