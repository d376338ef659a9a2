#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA back end's tests ([cuda]: NVRTC compiles every sampled
# template config, and each kernel and whole graph runs against the reference evaluator) and
# bench_gpu (loom's f32 matmul against cuBLAS), their results written to OUT_DIR. DIR is a build
# tree (scripts/build.sh; default build) or a bundle made by scripts/gpu_bundle.sh, which runs
# where only the CUDA driver and toolkit are installed. The exit status is nonzero when a test or
# the benchmark fails.
#
#   scripts/gpu_check.sh OUT_DIR [DIR]
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [BUILD_OR_BUNDLE_DIR]}
dir=${2:-build}
mkdir -p "$out"
if [ -x "$dir/bin/loom_tests" ]; then
  tests_bin=$dir/bin/loom_tests bench_bin=$dir/bin/bench_gpu
  export LD_LIBRARY_PATH="$(cd "$dir/lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  tests_bin=$dir/test/loom_tests bench_bin=$dir/bench/bench_gpu
fi

# NVRTC, cuBLAS and the toolkit's headers, where the system's loader and loom's defaults miss them
# (a toolkit outside /usr/local/cuda, or the CUDA libraries of Python wheels).
find_first() { find /usr/local /usr/lib /opt -name "$1" 2>/dev/null | sort | head -n 1; }
for lib in 'libnvrtc.so.1[0-9]*' 'libcublas.so.1[0-9]*'; do
  if ! ldconfig -p | grep -q "${lib%%\**}"; then
    found=$(find_first "$lib")
    [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found"):${LD_LIBRARY_PATH:-}"
  fi
done
if [ -z "${LOOM_CUDA_INCLUDE_DIR:-}" ] && [ ! -e /usr/local/cuda/include/cuda_fp16.h ]; then
  found=$(find_first cuda_fp16.h)
  [ -n "$found" ] && export LOOM_CUDA_INCLUDE_DIR=$(dirname "$found")
fi
{
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "LOOM_CUDA_INCLUDE_DIR=${LOOM_CUDA_INCLUDE_DIR:-}"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>&1
} | tee "$out/environment.txt"

"$tests_bin" "[cuda]" --durations yes 2>&1 | tee "$out/cuda_tests.txt"
tests=${PIPESTATUS[0]}
"$bench_bin" --tune fast --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt"
bench=${PIPESTATUS[0]}
echo "cuda tests: exit $tests; bench_gpu: exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
