// Compiling and running graphs in tests: failures are reported with their status and stop the
// test case.
#pragma once

#include <catch2/catch.hpp>

#include <vector>

#include "loom/compiler.hpp"

namespace loom::testing {

// c.run(inputs), which must succeed.
inline std::vector<NDArray> run_ok(const CompiledGraph& c, const std::vector<NDArray>& inputs) {
  absl::StatusOr<std::vector<NDArray>> out = c.run(inputs);
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  return *std::move(out);
}

// Compiles g for the host CPU with poisoned buffers (an unwritten element shows as NaN or 0x5a
// bytes) and runs it; both must succeed.
inline std::vector<NDArray> compile_and_run(const Graph& g, const std::vector<NDArray>& inputs,
                                            CompileOptions options = {}) {
  options.poison_buffers = true;
  absl::StatusOr<CompiledGraph> compiled = Compiler(Target::host_cpu()).compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  return run_ok(*compiled, inputs);
}

}  // namespace loom::testing
