// Partition of a graph into fused groups, the first step of post-scheduling fusion: each anchor
// (a non-injective operator) with the injective operators before it that only it reads (its
// prologue) and the injective operators after it whose index mapping from the anchor's output is
// a bijection (its epilogue); the remaining injective operators in groups of their own. Every
// group becomes one kernel.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "loom/graph/graph.hpp"
#include "loom/ir/expr.hpp"

namespace loom {

struct FusedGroup {
  int anchor = -1;           // the anchor node; -1 for a group of injective operators only
  std::vector<int> nodes;    // the operator nodes the kernel computes, in graph order
  int output = -1;           // the node whose value the kernel writes; the others stay in registers
  std::vector<int> inputs;   // values read from outside the group, in order of first use
  // Members computed before the anchor (its prologue) and after it (its epilogue).
  std::vector<int> prologue() const;
  std::vector<int> epilogue() const;
  // "anchor conv2d 'c1' + epilogue [add 'b1', relu 'r1'] -> 'r1'", for dumps and reports.
  std::string to_string(const Graph& g) const;
};

struct PartitionOptions {
  // Off: one group per operator node.
  bool fuse = true;
  // Whether an anchor may absorb the injective producers of its inputs; null: every anchor may.
  std::function<bool(int anchor)> anchor_takes_prologue;
};

// The groups computing every operator node that some output depends on, in an order where each
// group's inputs are computed by earlier groups.
std::vector<FusedGroup> partition(const Graph& g, const PartitionOptions& options = {});

// How an injective operator's output index reads one input, when each input element lands in
// exactly one output element: through a permutation of axes (elementwise ops: the identity;
// transpose; dims of extent 1 may appear or vanish), or a row-major reshape.
struct IndexLink {
  bool reshape = false;
  // Not reshape: for each output axis, the input dim it reads, or -1 (an output dim of extent 1).
  std::vector<int> input_dim_of_axis;
  // Each output element at its input element's index (axes of extent 1 aside).
  bool is_identity() const;
  // Each input element at its own row-major position of the output (reshapes, identities).
  bool preserves_order() const;
};

// The link through which node `consumer` reads input `producer`, or nullopt when some input
// element feeds several output elements or none (broadcast, pad, slice, gather, ...).
std::optional<IndexLink> bijective_link(const Graph& g, int consumer, int producer);

// The output index that input index `in` (of shape in_shape) reaches through link; nullopt when
// a vector index would have to cross a reshape's regrouping.
std::optional<std::vector<ir::Expr>> forward_index(const IndexLink& link, const std::vector<ir::Expr>& in,
                                    const std::vector<ir::Expr>& in_shape,
                                    const std::vector<ir::Expr>& out_shape);

}  // namespace loom
