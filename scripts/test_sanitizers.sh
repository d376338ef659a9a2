#!/usr/bin/env bash
# Sanitizer builds and bounded fuzzing, as CI runs them (scripts/test.sh calls this after the main
# tests). Each build compiles with clang only the library and the tests it runs:
#   build-asan  AddressSanitizer + UndefinedBehaviorSanitizer + libFuzzer coverage: the bad-input,
#               guard-page, cache, load and core operator tests, then each fuzz target for
#               $LOOM_FUZZ_SECONDS (default 20) on its corpus (test/fuzz/corpus/<target>)
#   build-tsan  ThreadSanitizer: the kernel cache, thread pool and load tests
# Usage: scripts/test_sanitizers.sh [all|asan|fuzz|tsan]   (fuzz reuses build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
fuzz_seconds=${LOOM_FUZZ_SECONDS:-20}

# clang and its sanitizer runtimes (libFuzzer among them) besides loom's own packages.
scripts/install-deps.sh clang-14 libclang-rt-14-dev

start=$SECONDS
phase() { echo "== $1 ($((SECONDS - start)) s so far)"; }

configure() {  # dir, extra cmake arguments
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang-14 \
    -DCMAKE_CXX_COMPILER=clang++-14 -DLOOM_WERROR=ON -DLOOM_BUILD_EXAMPLES=OFF \
    -DLOOM_BUILD_BENCH=OFF "$@" >/dev/null
}

# Leaks are reported (LSan) and fail the tests; every UBSan report is fatal.
# allocator_may_return_null: a failed huge allocation returns null, as without ASan, so the
# tests of run() errors for outputs too large to allocate see what users see.
# intercept_tls_get_addr=0: LSan's bookkeeping of dynamic TLS blocks (its __tls_get_addr
# interceptor) recorded a block at a garbage address ("DTLS 9 at 0x000000002439-0x00200000353b")
# in a test that compiles for CUDA (NVRTC, dlopen'd, has TLS), and the leak check then crashed in
# its tracer ("Tracer caught signal 11"). It depended on the memory layout alone: the test failed
# when run from working directories 16 to 31 characters long and passed from others (no ASan
# report either way). Without the interception LSan scans static TLS only.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:strict_string_checks=1:intercept_tls_get_addr=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/test/tsan.supp}

if [[ $what == all || $what == asan || $what == fuzz ]]; then
  phase "build-asan: configure and build (clang, address,undefined, fuzzer coverage)"
  configure build-asan -DLOOM_SANITIZE=address,undefined -DLOOM_FUZZ=ON
  cmake --build build-asan -j2 --target loom_tests fuzz_onnx_import fuzz_cache_entry \
    fuzz_graph_builder
fi
if [[ $what == all || $what == asan ]]; then
  phase "build-asan: tests"
  (cd build-asan && ctest -j2 --output-on-failure)
fi
if [[ $what == all || $what == fuzz ]]; then
  for target in onnx_import cache_entry graph_builder; do
    phase "fuzz_$target: $fuzz_seconds s"
    work=build-asan/fuzz/$target
    rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
    # New inputs go to the scratch corpus; the committed seeds are read only.
    log=$work/log.txt
    if ! build-asan/test/fuzz/fuzz_$target -max_total_time="$fuzz_seconds" -timeout=60 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
        "$work/corpus" "test/fuzz/corpus/$target" >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz_$target: FAILED (crash input in $work/artifacts)" >&2
      exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz_$target: ${execs:-?} executions in $fuzz_seconds s, no crash"
  done
fi
if [[ $what == all || $what == tsan ]]; then
  phase "build-tsan: configure and build (clang, thread)"
  configure build-tsan -DLOOM_SANITIZE=thread
  cmake --build build-tsan -j2 --target loom_tests
  phase "build-tsan: tests"
  (cd build-tsan && ctest -j2 --output-on-failure)
fi
phase "sanitizers and fuzzing done"
