#!/usr/bin/env bash
# The main demo: builds loom and runs examples/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
./build/examples/quickstart
