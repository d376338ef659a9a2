// Graph passes: rewrites of a Graph into an equivalent one that compiles to less work. Each pass
// returns a new graph with the same inputs (in order) and outputs; the original is untouched.
// Compiler::compile runs optimize() unless CompileOptions::graph_passes is off; with
// LOOM_DUMP_IR set, the graph after each pass is written to <dir>/graph-passes/.
#pragma once

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/graph/graph.hpp"

namespace loom::passes {

// Nodes whose inputs are all constants are computed once (compiled and run for `target`) and
// become constants.
absl::StatusOr<Graph> fold_constants(const Graph& g, const Target& target = Target::host_cpu());
// Operators that return their input unchanged go: a reshape or transpose that keeps the shape
// and element order, add of a zero constant, mul by a constant one, a layout_transform to the
// layout its input already has, where the result's type (layout included) is the input's.
absl::StatusOr<Graph> remove_identities(const Graph& g);
// Nodes computing the same operator with the same attributes on the same inputs (and constants
// sharing the same data) are merged.
absl::StatusOr<Graph> eliminate_common_subexpressions(const Graph& g);
// Batch norm after a convolution, (conv2d(x, W) * a) + b with per-output-channel constants a and
// b (what ONNX import makes of BatchNormalization), becomes conv2d(x, W * a) + b.
absl::StatusOr<Graph> fold_batch_norm_into_conv(const Graph& g);

// Matmuls of one x by constant matrices [K, N_i] (attention's query, key and value
// projections) become one matmul by the matrices side by side, each former product a slice of
// its columns; where each product's only reader adds a constant bias along the last dim, the
// biases are merged into one add too.
absl::StatusOr<Graph> merge_sibling_matmuls(const Graph& g);

// matmul(softmax(matmul(q, kt) * c), v) becomes one attention(q, kt, v) node (scale c) where the
// target has a template computing it in one kernel (CUDA, sm_80 and later, f16/bf16, head dims
// multiples of 16); elsewhere g is returned as it is. Compiler::compile runs it after optimize().
absl::StatusOr<Graph> fuse_attention(const Graph& g, const Target& target);

// All of the above, in an order where each can expose work for the next.
absl::StatusOr<Graph> optimize(const Graph& g, const Target& target = Target::host_cpu());

}  // namespace loom::passes
