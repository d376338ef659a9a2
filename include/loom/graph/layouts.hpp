// Layout assignment (ALT's layout propagation): which layout each tensor of a graph is stored
// in. A choice names, for some anchor nodes, the layouts their templates read their inputs in
// and write their output in; apply() stores each elementwise operator's output in the layout
// of its input (so a layout flows through bias, activations and residual additions), and each
// pooling's where that layout fits its output (OpDef::follows_input_layout), inserts a
// layout_transform only where a reader needs another layout than its producer gives (once per
// tensor and layout), and keeps graph outputs and every other operator row-major.
//
//   loom::layouts::Assignment a;
//   a[conv.id()] = {{loom::channels_blocked(16)}, loom::channels_blocked(16)};
//   absl::StatusOr<loom::Graph> laid = loom::layouts::apply(g, a);
//
// Compiler::compile does this itself (CompileOptions::layouts): with a fixed layout for every
// anchor that takes it, or jointly tuned.
#pragma once

#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/graph/graph.hpp"

namespace loom::layouts {

// An anchor's layouts: inputs[k] for input k (row-major past the end), and its output's.
struct AnchorLayouts {
  std::vector<std::vector<LayoutStep>> inputs;
  std::vector<LayoutStep> output;
  bool operator==(const AnchorLayouts& o) const {
    return inputs == o.inputs && output == o.output;
  }
  std::string to_string() const;
};

// By node id of the graph it applies to.
using Assignment = std::map<int, AnchorLayouts>;

// g with the assignment's layouts; node ids change, names do not (conversions are new nodes of
// their own). An error when a layout does not fit its
// tensor (rank, static extents).
absl::StatusOr<Graph> apply(const Graph& g, const Assignment& a);

// The choices node n's templates on target offer (each input and output layout they take, all
// combinations; all row-major first). Empty when none takes another layout.
std::vector<AnchorLayouts> options(const Graph& g, int n, const Target& target);

// The layout_transform nodes of g: the conversions a compiled graph runs.
int count_conversions(const Graph& g);

}  // namespace loom::layouts
