#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in a build tree made by scripts/build.sh: the CUDA back end's
# tests ([cuda]: NVRTC compiles every sampled template config, and each kernel and whole graph
# runs against the CPU reference) and bench_gpu (loom's f32 matmul against cuBLAS), their
# results written to OUT_DIR. The exit status is nonzero when a test or the benchmark fails.
#
#   scripts/gpu_check.sh OUT_DIR [BUILD_DIR]
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [BUILD_DIR]}
build=${2:-build}
mkdir -p "$out"
"$build/test/loom_tests" "[cuda]" --durations yes 2>&1 | tee "$out/cuda_tests.txt"
tests=${PIPESTATUS[0]}
"$build/bench/bench_gpu" --tune fast --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt"
bench=${PIPESTATUS[0]}
echo "cuda tests: exit $tests; bench_gpu: exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
