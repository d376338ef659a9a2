#!/usr/bin/env bash
# Builds the GPU test suite and the GPU benchmark as a self-contained bundle for a machine that has
# the CUDA driver and toolkit but none of loom's Debian development packages. The build leaves
# LLVM out (LOOM_WITH_LLVM=OFF, in build-gpu/): GPU-only loom compiles CUDA targets, folds
# constants with the reference evaluator and checks GPU results against it.
#
#   scripts/gpu_bundle.sh [BUNDLE_DIR]     (default: gpu-bundle, ignored by git)
#
# The bundle holds bin/ (loom_tests with the [cuda] tests, bench_gpu, loom_run), lib/ (the shared
# libraries they need beyond glibc and libstdc++), fake_cuda/ (the stand-in driver) and
# gpu_check.sh with gpu_torch_peers.py. On the GPU machine: BUNDLE_DIR/gpu_check.sh OUT_DIR
# BUNDLE_DIR [PART].
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-gpu-bundle}
scripts/install-deps.sh
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DLOOM_WITH_LLVM=OFF -DLOOM_BUILD_EXAMPLES=OFF \
  -DLOOM_WERROR=ON >/dev/null
cmake --build build-gpu -j2 --target loom_tests bench_gpu loom_run fake_cuda

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/fake_cuda"
cp build-gpu/test/loom_tests build-gpu/bench/bench_gpu build-gpu/tools/loom_run "$bundle/bin/"
cp -P build-gpu/test/fake_cuda/libcuda.so* "$bundle/fake_cuda/"
strip "$bundle"/bin/* "$bundle"/fake_cuda/libcuda.so.1
cp scripts/gpu_check.sh bench/gpu_torch_peers.py "$bundle/"

# The libraries ldd resolves, except the C runtime, libstdc++ and libgcc_s (newer on the GPU
# machine's image than here, and backward compatible), and the CUDA libraries found there.
system='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda|libnvrtc)\.'
for program in "$bundle"/bin/*; do
  ldd "$program" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $system ]] || cp -L "$path" "$bundle/lib/$name"
done

# Every library must now resolve inside the bundle or to the C/C++ runtime.
missing=0
for program in "$bundle"/bin/*; do
  while read -r name _ path _; do
    if [[ $name =~ $system ]]; then continue; fi
    if [[ $path != "$(cd "$bundle/lib" && pwd)/"* ]]; then
      echo "gpu_bundle: $program needs $name from $path, outside the bundle" >&2
      missing=1
    fi
  done < <(LD_LIBRARY_PATH="$(cd "$bundle/lib" && pwd)" ldd "$program" | awk '$2 == "=>"')
done
[ "$missing" -eq 0 ]
echo "gpu_bundle: $bundle, $(du -sh "$bundle" | cut -f1): $(ls "$bundle/bin" | tr '\n' ' ')"
