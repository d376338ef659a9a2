#!/usr/bin/env bash
# Builds loom (warnings as errors) and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DLOOM_WERROR=ON
cd build && ctest --output-on-failure -j2
