// Compiler::compile for a CUDA target (private to lib/).
#pragma once

#include "absl/status/status.h"
#include "loom/compiler.hpp"
#include "runtime/compiled_graph_impl.hpp"

namespace loom {

// Whether kernels for target can be timed here: a device of its arch at its ordinal.
bool can_measure(const Target& target);

// Fills impl's launches, kernels and GPU program for a static graph (its tensors in the layouts
// the layout assignment chose, row-major by default): each fused group
// of the partition is one kernel of one module (a CUDA template with its prologues and epilogue
// fused in, the injective grid-stride kernel, or the default schedule one output element per
// thread); a group whose fusion a template cannot take is compiled one operator per kernel.
// Templates' candidates are timed on the device when the tune level asks and one is present.
// The module goes through NVRTC, or comes from the kernel cache.
absl::Status compile_for_cuda(const Target& target, const Graph& graph,
                              const CompileOptions& options, CompiledGraphImpl& impl);

}  // namespace loom
