#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA back end's tests ([cuda]: NVRTC compiles every sampled
# template config, and each kernel and whole graph runs against the reference evaluator), then
# bench_gpu (loom's matmul against cuBLAS in f32, f16 and bf16; the ResNet-50 conv layers and
# ResNet-50 and BERT-base end to end in f16) and, where PyTorch is installed,
# bench/gpu_torch_peers.py (the same convs in cuDNN, the models in PyTorch eager and
# torch.compile, and the ratios), their results written to OUT_DIR. DIR is a build tree
# (scripts/build.sh; default build) or a bundle made by scripts/gpu_bundle.sh, which runs where
# only the CUDA driver and toolkit are installed. PART runs one part when device time is short:
# tests, gemm, models (bench_gpu's parts 2 and 3, then PyTorch's) or all (the default); goals
# runs, in this order, what the GPU issue's goals are judged by, in about 7 minutes on an H200:
# the tests, the f16 matmuls against cuBLAS (with the BERT-base epilogues), then the convolutions
# at batch 1 and the two models with their kFast tuning times (bench_gpu --quick), and the
# PyTorch peers at batch 1 without torch.compile (whose compiles take minutes). The exit status is
# nonzero when a test or a benchmark fails.
#
#   scripts/gpu_check.sh OUT_DIR [DIR] [tests|gemm|models|goals|all]
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [BUILD_OR_BUNDLE_DIR] [tests|gemm|models|goals|all]}
dir=${2:-build}
part=${3:-all}
here=$(cd "$(dirname "$0")" && pwd)
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

tests=0 bench=0 peers=0
# Test cases run as parallel processes (one each, $LOOM_GPU_JOBS at a time, default the core
# count), each within $LOOM_GPU_TEST_TIMEOUT seconds (default 600; 180 for goals, whose call
# must leave time for the benchmarks: a case took 20 s at most on an H200); $LOOM_GPU_TESTS, a
# Catch test spec, picks the cases (default [cuda]). Every case's log is kept in OUT_DIR/tests/,
# and cuda_tests.txt lists PASS, FAIL or TIMEOUT with the seconds each took. Output is
# line-buffered (stdbuf), so what a killed program printed is kept.
line_buffered() { if command -v stdbuf >/dev/null; then stdbuf -oL -eL "$@"; else "$@"; fi; }
run_case() {  # run_case "INDEX<tab>NAME": one test case, its log in tests/INDEX.txt
  local index=${1%%$'\t'*} name=${1#*$'\t'} start=$SECONDS status spec
  spec=$(printf '%s' "$name" | sed 's/[][\\,*]/\\&/g')  # Catch's test spec escapes
  line_buffered timeout "${LOOM_GPU_TEST_TIMEOUT:-$default_timeout}" "$tests_bin" "$spec" --durations yes \
    >"$out/tests/$index.txt" 2>&1
  status=$?
  case $status in 0) status=PASS ;; 124 | 137) status=TIMEOUT ;; *) status="FAIL($status)" ;; esac
  printf '%-9s %4ds  %s  [tests/%s.txt]\n' "$status" $((SECONDS - start)) "$name" "$index"
}
default_timeout=600
[ "$part" = goals ] && default_timeout=180
# Each bench_gpu part within $LOOM_GPU_BENCH_TIMEOUT seconds (default 1800; 300 for goals, so that
# a kernel that hangs leaves the models their turn): killed, it exits 124.
bench_timeout=1800
[ "$part" = goals ] && bench_timeout=300
# A candidate that faults while tuned loses the process's CUDA context, and bench_gpu fails
# naming it ("failed on the device"); one that hangs fails it too ("did not finish within", after
# CompileOptions::tune_candidate_timeout_s). The part then runs again with the warpgroup
# templates' newest paths kept out of tuning (CompileOptions::template_limits), its log in
# NAME_limited.txt: first clusters and persistent blocks (TMA copies kept, their simplest form),
# then, where a candidate still faults or hangs, TMA copies too.
limits_of() {  # limits_of PARAM=V...: each for both warpgroup templates
  local t p list=
  for t in cuda_wgmma_gemm cuda_wgmma_conv2d; do
    for p in "$@"; do list+=${list:+,}$t:$p; done
  done
  printf '%s' "$list"
}
fallback_limits=("$(limits_of cluster=1 persistent=0)" "$(limits_of tma=0 cluster=1 persistent=0)")
run_bench() {  # run_bench NAME ARGS...: bench_gpu ARGS, its output in OUT_DIR/NAME.txt
  local name=$1 status limits log
  shift
  line_buffered timeout "${LOOM_GPU_BENCH_TIMEOUT:-$bench_timeout}" "$bench_bin" "$@" 2>&1 |
    tee "$out/$name.txt"
  status=${PIPESTATUS[0]}
  log=$out/$name.txt
  for limits in "${fallback_limits[@]}"; do
    [ "$status" -ne 0 ] && grep -qE "failed on the device|did not finish within" "$log" || break
    echo "a candidate faulted or hung: $name again with --limit $limits" |
      tee -a "$out/${name}_limited.txt"
    line_buffered timeout "${LOOM_GPU_BENCH_TIMEOUT:-$bench_timeout}" "$bench_bin" "$@" \
      --limit "$limits" 2>&1 | tee "$out/${name}_attempt.txt" | tee -a "$out/${name}_limited.txt"
    status=${PIPESTATUS[0]}
    log=$out/${name}_attempt.txt
  done
  rm -f "$out/${name}_attempt.txt"
  return "$status"
}
export -f run_case line_buffered
export default_timeout
if [ "$part" = all ] || [ "$part" = tests ] || [ "$part" = goals ]; then
  mkdir -p "$out/tests"
  export tests_bin out
  "$tests_bin" "${LOOM_GPU_TESTS:-[cuda]}" --list-test-names-only | grep -v '^$' | nl -w1 -s$'\t' |
    xargs -d '\n' -n 1 -P "${LOOM_GPU_JOBS:-$(nproc)}" bash -c 'run_case "$1"' _ |
    tee "$out/cuda_tests.txt"
  ! grep -qv '^PASS' "$out/cuda_tests.txt" && [ -s "$out/cuda_tests.txt" ]
  tests=$?
fi
if [ "$part" = all ] || [ "$part" = gemm ] || [ "$part" = goals ]; then
  dtype=all
  [ "$part" = goals ] && dtype=f16
  run_bench bench_gpu_gemm --tune fast --only gemm --dtype $dtype --json "$out/bench_gpu_gemm.json"
  bench=$?
fi
if [ "$part" = all ] || [ "$part" = models ] || [ "$part" = goals ]; then
  quick=() peers_quick=()
  [ "$part" = goals ] && quick=(--quick) peers_quick=(--quick --no-compile)
  run_bench bench_gpu_models --tune fast --only models ${quick[@]+"${quick[@]}"} \
    --json "$out/bench_gpu_models.json" || bench=1
  # The script sits beside this one in a bundle, under bench/ in a checkout.
  peers_py=$here/gpu_torch_peers.py
  [ -f "$peers_py" ] || peers_py=$here/../bench/gpu_torch_peers.py
  loom_json=("$out/bench_gpu_models.json")
  [ -f "$out/bench_gpu_gemm.json" ] && loom_json+=("$out/bench_gpu_gemm.json")
  if python3 -c "import torch" 2>/dev/null; then
    python3 "$peers_py" --loom "${loom_json[@]}" --json "$out/torch_peers.json" \
      ${peers_quick[@]+"${peers_quick[@]}"} 2>&1 |
      tee "$out/torch_peers.txt"
    peers=${PIPESTATUS[0]}
  else
    echo "no PyTorch here: the PyTorch and cuDNN peers are not timed" | tee "$out/torch_peers.txt"
  fi
fi
echo "part $part: cuda tests exit $tests; bench_gpu exit $bench; PyTorch peers exit $peers"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$peers" -eq 0 ]
