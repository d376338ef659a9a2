// Pictures of a graph in Graphviz's DOT language: each node with its op, dtype, shape and
// layout, edges from producers to consumers, and optional clusters (the kernels of a compiled
// graph, see loom/runtime/pictures.hpp). render_svg() draws DOT text with Graphviz when present.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loom/graph/graph.hpp"

namespace loom {

// A box drawn around some nodes (by name), with a label: one fused kernel, for example.
struct DotCluster {
  std::string label;
  std::vector<std::string> nodes;
};

struct DotOptions {
  std::string title;
  std::vector<DotCluster> clusters;  // a node named in several is drawn in the first
};

// A digraph named "loom": one node per graph node (ids n0, n1, ... in graph order) labelled
// with its name, op (or input/constant), type and layout ("row-major", or its layout steps);
// graph outputs are drawn with a double border.
std::string to_dot(const Graph& graph, const DotOptions& options = {});

// Writes the SVG drawing of dot_text to svg_path with Graphviz's `dot` found on PATH.
// Unavailable when `dot` is not installed; Internal when it fails.
absl::Status render_svg(const std::string& dot_text, const std::string& svg_path);

}  // namespace loom
