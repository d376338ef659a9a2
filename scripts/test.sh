#!/usr/bin/env bash
# Builds loom (warnings as errors) and runs every test with CTest, then the sanitizer builds and
# the bounded fuzzers (scripts/test_sanitizers.sh; LOOM_SKIP_SANITIZERS=1 skips them locally).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DLOOM_WERROR=ON
(cd build && ctest --output-on-failure -j2)
if [[ "${LOOM_SKIP_SANITIZERS:-0}" != 1 ]]; then
  scripts/test_sanitizers.sh
fi
