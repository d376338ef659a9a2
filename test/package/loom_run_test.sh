#!/bin/sh
# loom_run end to end: an ONNX node test's model run on its inputs must match ONNX's expected
# output (then the .npy it saved must match it again); a small MLP is tuned and drawn (DOT with
# a cluster per kernel, an SVG tuning report with the chosen configs); bad input of every kind
# gives a message and a nonzero exit status, never a crash.
#   loom_run_test.sh LOOM_RUN MODELS_DIR WORK_DIR    (MODELS_DIR from onnx_make_models)
set -u
run=$1 models=$2 work=$3
node=/usr/share/libonnx-testdata/data/node/test_matmul_2d
rm -rf "$work" && mkdir -p "$work" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect STATUS PATTERN COMMAND...: runs it, checks its exit status and that its output matches.
expect() {
  want=$1 pattern=$2
  shift 2
  "$@" >"$work/out.txt" 2>&1
  got=$?
  cat "$work/out.txt"
  [ "$got" -eq "$want" ] || fail "exit status $got, not $want: $*"
  grep -q -- "$pattern" "$work/out.txt" || fail "no '$pattern' in the output of: $*"
}

[ -f "$node/model.onnx" ] || fail "libonnx-testdata is not installed ($node)"
data=$node/test_data_set_0
expect 0 "outputs match the 1 expected" "$run" "$node/model.onnx" --input "$data/input_0.pb" \
  --input "$data/input_1.pb" --expect "$data/output_0.pb" --tune none --runs 2 --save-outputs "$work/saved"
expect 0 "outputs match" "$run" "$node/model.onnx" --input "$data/input_0.pb" \
  --input "$data/input_1.pb" --expect "$work/saved/output_0.npy" --tune none --runs 1
expect 1 "output 0 is f32\[3, 3\], expected f32\[3, 4\]" "$run" "$node/model.onnx" \
  --input "$data/input_0.pb" --input "$data/input_1.pb" --expect "$data/input_0.pb" --tune none \
  --runs 1

# A convolution in each layout policy matches ONNX's expected output.
conv=/usr/share/libonnx-testdata/data/node/test_conv_with_strides_padding
for layouts in joint nchw16c nhwc row_major; do
  expect 0 "outputs match the 1 expected" "$run" "$conv/model.onnx" \
    --input "$conv/test_data_set_0/input_0.pb" --input "$conv/test_data_set_0/input_1.pb" \
    --expect "$conv/test_data_set_0/output_0.pb" --tune none --runs 1 --layouts "$layouts"
done
expect 2 "--layouts takes row_major, joint, nhwc or nchw<B>c" "$run" "$models/mlp.onnx" --layouts nchw
expect 2 "--layouts takes an integer" "$run" "$models/mlp.onnx" --layouts nchwxc

# Tuned and drawn: every kernel's time and cache entry, DOT and SVG pictures.
expect 0 "cache entries used: [1-9]" "$run" "$models/mlp.onnx" --tune fast --runs 2 \
  --dot "$work/pictures" --tune-report "$work/tuning.svg"
grep -Eq '^ +0 +[0-9.]+ +[^ ]+ +[0-9a-f]{32} ' "$work/out.txt" || fail "no kernel line with a cache key"
grep -Eq '^memory: [0-9]+\.[0-9] KiB constants, [0-9.]+ KiB intermediates$' "$work/out.txt" ||
  fail "no memory line"
grep -q '^memory: 0.0 KiB constants' "$work/out.txt" && fail "the MLP's weights are not counted"
[ "$(grep -Ec '^ +[0-9]+ +[0-9.]+ +[^ ]+ +[0-9a-f]{32} ' "$work/out.txt")" -eq "$(grep -c 'subgraph cluster_' "$work/pictures/compiled.dot")" ] ||
  fail "compiled.dot does not have a cluster per kernel"
grep -q '^digraph loom {' "$work/pictures/graph.dot" || fail "graph.dot is not DOT"
grep -q 'label="x\\ninput\\nf32\[4, 32\]\\nrow-major"' "$work/pictures/graph.dot" || fail "graph.dot lacks input x"
grep -q 'subgraph cluster_0 {' "$work/pictures/compiled.dot" || fail "compiled.dot has no kernel cluster"
! grep -q 'subgraph cluster' "$work/pictures/graph.dot" || fail "graph.dot has clusters"
grep -q '<circle class="chosen"' "$work/tuning.svg" || fail "the tuning report marks no chosen config"
grep -q '</svg>' "$work/tuning.svg" || fail "the tuning report is not a whole SVG"

# An .npy written byte by byte the way NumPy writes one (format 1.0: magic, version, header
# length 118, the header dict padded with spaces to a 64-byte boundary), all zeros.
{
  printf '\223NUMPY\001\000\166\000'
  printf '%-117s\n' "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 32), }"
  head -c 512 /dev/zero
} >"$work/zeros.npy"
expect 0 "output 0: f32\[4, 10\]" "$run" "$models/mlp.onnx" --input "$work/zeros.npy" --tune none \
  --runs 1 --save-outputs "$work/from-zeros"
# Random inputs give other outputs: --expect reads the saved file back and finds the difference.
expect 1 "differs at element" "$run" "$models/mlp.onnx" --expect "$work/from-zeros/output_0.npy" \
  --tune none --runs 1

# Bad input: a clear message and a nonzero status.
printf 'not an onnx model' >"$work/corrupt.onnx"
expect 1 "cannot open" "$run" "$work/missing.onnx"
expect 1 "not a valid ONNX" "$run" "$work/corrupt.onnx"
expect 2 "usage:" "$run"
expect 0 "usage:" "$run" --help
expect 2 "unknown flag --bogus" "$run" "$models/mlp.onnx" --bogus 1
expect 2 "--tune takes none, fast or full" "$run" "$models/mlp.onnx" --tune fastest
expect 2 "--runs takes an integer" "$run" "$models/mlp.onnx" --runs many
expect 2 "--target takes cpu, cuda or cuda:SM" "$run" "$models/mlp.onnx" --target tpu
# No GPU here: the model compiles for sm_90 (or the build has no CUDA back end), then cannot run.
expect 1 "no CUDA" "$run" "$models/mlp.onnx" --target cuda:90 --tune none
expect 1 "cannot open $work/none.npy" "$run" "$models/mlp.onnx" --input "$work/none.npy"
cp "$work/corrupt.onnx" "$work/corrupt.npy"
expect 1 "not a .npy file" "$run" "$models/mlp.onnx" --input "$work/corrupt.npy"
expect 1 "input 0 (x)" "$run" "$models/mlp.onnx" --input "$work/saved/output_0.npy" --tune none
echo "loom_run: all checks passed"
