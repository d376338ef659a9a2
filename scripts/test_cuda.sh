#!/usr/bin/env bash
# Builds loom and runs the CUDA back end's tests (tag [cuda]). Without a GPU they compile every
# kernel with NVRTC and say that they skipped running it; on a GPU machine they also run them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DLOOM_WERROR=ON
build/test/loom_tests "[cuda]" --durations yes
