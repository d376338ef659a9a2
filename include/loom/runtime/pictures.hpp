// Pictures of a compiled graph: its nodes grouped by the kernel that computes them (Graphviz
// DOT), and a tuning report, an SVG plot of every tuned kernel's candidate times.
#pragma once

#include <string>
#include <vector>

#include "loom/graph/dot.hpp"
#include "loom/runtime/compiled_graph.hpp"

namespace loom {

// compiled.graph() as DOT with one cluster per kernel, labelled with the kernel's name, its
// schedule and its cache key. A graph compiled per binding of symbolic dims has no kernels of
// its own: draw compiled.specialize(dims) instead.
std::string to_dot(const CompiledGraph& compiled, const std::string& title = "");

// A self-contained SVG document: one row per kernel that has candidate times, each candidate a
// dot placed by its time relative to the kernel's fastest (log scale, shared by all rows), the
// chosen config in red; hovering a dot shows its config and time. Kernels without candidates
// are counted in a note.
std::string tuning_report_svg(const std::vector<KernelInfo>& kernels,
                              const std::string& title = "");

}  // namespace loom
