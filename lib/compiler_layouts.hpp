// Choosing the layouts of a graph's tensors for Compiler::compile (private to lib/).
#pragma once

#include "loom/compiler.hpp"
#include "loom/graph/layouts.hpp"

namespace loom {

// The graph with the layouts options.layouts asks for: a fixed layout wherever a template takes
// it, or the assignment of least measured time (anchors' times in each choice, tuned with
// `compiler` at options.tune, plus the conversions' times). `report` receives one line per
// anchor choice and conversion measured, and the decision.
absl::StatusOr<Graph> choose_layouts(const Compiler& compiler, const Graph& g,
                                     const CompileOptions& options, std::string* report);

}  // namespace loom
