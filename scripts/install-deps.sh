#!/usr/bin/env bash
# Installs the Debian 12 packages loom needs that are missing, and any packages named as
# arguments (scripts/test_sanitizers.sh adds clang). Idempotent and quiet when nothing is
# missing. Uses sudo when not run as root.
set -euo pipefail

packages=(
  build-essential cmake
  llvm-19-dev libabsl-dev nlohmann-json3-dev
  libonnx-dev libprotobuf-dev  # ONNX import
  libonnx-testdata             # the ONNX node tests (tools/onnx_conformance)
  catch2 libbenchmark-dev
  libdnnl-dev libopenblas-dev  # benchmark peers (bench/bench_cpu_peers)
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "loom: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
