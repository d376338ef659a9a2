// Compiler: turns a Graph into a CompiledGraph for a Target.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "loom/core/target.hpp"
#include "loom/graph/graph.hpp"
#include "loom/runtime/compiled_graph.hpp"
#include "loom/tune/space.hpp"

namespace loom {

struct CompileOptions {
  TuneLevel tune = TuneLevel::kNone;
  // Fill every computed buffer with NaN (floats) or 0x5a bytes before each run, so a kernel
  // that skips an element is caught. For tests; costs a pass over memory.
  bool poison_buffers = false;
  // Configs by template name, used instead of tuning for every node that template schedules
  // (tests sweep a space this way; an engine replays recorded choices). A config that breaks
  // one of the space's rules is an InvalidArgument error.
  std::map<std::string, tune::Config> template_configs;
};

class Compiler {
 public:
  explicit Compiler(Target target = Target::host_cpu()) : target_(std::move(target)) {}

  // Errors recorded while building the graph come back here, as do unsupported targets.
  absl::StatusOr<CompiledGraph> compile(const Graph& graph, const CompileOptions& options = {}) const;

  const Target& target() const { return target_; }

 private:
  Target target_;
};

}  // namespace loom
